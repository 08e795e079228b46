"""Lesson: calibrated decoders (Rybkin, Daniilidis & Levine 2021, "Simple and Effective VAE Training with
Calibrated Decoders", σ-VAE, eq. 6 and Fig. 1).

A Gaussian decoder of variance σ² is a β-VAE with β = 2σ² (its −log p(x|z) is ‖x − g(z)‖²/(2σ²) + const),
so a fixed σ fixes the trade-off: σ = 1 on [0, 1] pixels is a huge β and the posterior collapses; a tiny σ is
a tiny β. The σ-VAE learns σ; with one shared σ its optimum is σ*² = MSE (eq. 6), tracking the reconstruction
error. Five runs on the same data, network and seed: Bernoulli, Gaussian σ = 1, Gaussian σ = 0.05, σ-VAE
with the closed form σ*, and σ-VAE with a per-pixel σ_θ(z) after a closed-form warm-up.
"""

from __future__ import annotations

from vaeviz import plots
from vaeviz.analysis.likelihood import train_mse
from vaeviz.lessons.common import DIGITS, base, pct, prior_samples
from vaeviz.lessons.lesson import Check, Figure, Lesson, LessonRuns, Variation, Verdict

ROLES = {
    "Bernoulli": {"objective.name": "vae", "objective.decoder": "bernoulli"},
    "σ = 1": {"objective.name": "vae", "objective.decoder": "gaussian", "objective.sigma": 1.0},
    "σ = 0.05": {"objective.name": "vae", "objective.decoder": "gaussian", "objective.sigma": 0.05},
    "σ-VAE σ*": {"objective.name": "sigma_vae", "objective.variance": "global_closed_form"},
    "σ-VAE σ_θ(z)": {"objective.name": "sigma_vae", "objective.variance": "network", "objective.warmup_steps": 500,
                     "objective.sigma_min": 0.01},
}
SIGMA_STAR = "σ-VAE σ*"


def configs(full: bool) -> dict:
    steps = 20_000 if full else 3000
    return {role: base({**DIGITS, **knobs}, steps) for role, knobs in ROLES.items()}


def rates(runs: LessonRuns):
    values = {role: runs.last(role, "rate") for role in ROLES}
    if not any(v is not None for v in values.values()):
        return None
    units = {role: f"{runs.last(role, 'active_units'):.0f} active" for role in ROLES
             if runs.last(role, "active_units") is not None}
    return plots.bar_chart({k: v for k, v in values.items() if v is not None}, "Rate at the last evaluation",
                           "rate R (nats)", note=units)


def sigma_curve(runs: LessonRuns):
    df = runs.metrics(SIGMA_STAR, "train")
    return None if df.empty else plots.sigma_evolution(df)


def samples(runs: LessonRuns):
    galleries, shape = prior_samples(runs, ROLES)
    return plots.sample_gallery(galleries, shape) if galleries else None


def sigma_tracks_mse(runs: LessonRuns) -> Verdict | None:
    """σ² of the σ-VAE (last logged: the closed form of the last training batch) against the MSE of the whole
    training split at the last checkpoint, which eq. 6 makes its optimum; the held-out MSE is reported beside."""
    setup, step = runs.model(SIGMA_STAR)
    if not runs.done(SIGMA_STAR) or setup is None:
        return None
    s2, held_out = runs.last(SIGMA_STAR, "sigma2", "train"), runs.last(SIGMA_STAR, "mse", "eval")
    mse = train_mse(setup.model, setup.data.x_train)
    holds = abs(s2 - mse) <= 0.10 * mse
    return Verdict(holds, f"σ² ended at {s2:.4g}, {pct(s2, mse)} from the training split's MSE {mse:.4g} at step "
                          f"{step} (equivalent β = 2σ² = {2 * s2:.3g}); the held-out MSE is {held_out:.4g}, "
                          f"{'above' if held_out > mse else 'below'} it by what the model overfits.")


def collapse_at_sigma_one(runs: LessonRuns) -> Verdict | None:
    """σ = 1 is β = 2 in MSE units: the rate collapses against the σ-VAE's."""
    if not runs.done("σ = 1", SIGMA_STAR):
        return None
    r1, rs = runs.last("σ = 1", "rate"), runs.last(SIGMA_STAR, "rate")
    active = runs.last("σ = 1", "active_units")
    holds = r1 < 0.1 * rs
    return Verdict(holds, f"with σ = 1 the rate is {r1:.3g} nats ({active:.0f} active latent units) against "
                          f"{rs:.3g} nats for the σ-VAE: the code is {'all but ' if holds else 'not '}ignored.")


def sigma_orders_rate(runs: LessonRuns) -> Verdict | None:
    """A fixed σ is a β: the rate falls as σ grows, with the σ-VAE's learned σ* in between."""
    roles = ("σ = 0.05", SIGMA_STAR, "σ = 1")
    if not runs.done(*roles):
        return None
    r = [runs.last(role, "rate") for role in roles]
    s2 = runs.last(SIGMA_STAR, "sigma2", "train")
    holds = r[0] > r[1] > r[2]
    return Verdict(holds, f"rate {r[0]:.3g} nats at σ = 0.05, {r[1]:.3g} at the learned σ* = {s2 ** 0.5:.3g}, "
                          f"{r[2]:.3g} at σ = 1: the rate {'falls' if holds else 'does not fall'} as σ grows.")


LESSON = Lesson(
    name="calibrated-decoders",
    title="Calibrated decoders: σ² is β in disguise (σ-VAE)",
    paper="Rybkin, Daniilidis & Levine 2021, Simple and Effective VAE Training with Calibrated Decoders",
    figure="eq. 6 and Fig. 1 (the σ-VAE against fixed-σ Gaussian VAEs)",
    look_for="Look at the rate of each decoder: σ = 1 collapses the posterior (rate near 0, blurry identical samples), "
             "σ = 0.05 buys a large rate, and the σ-VAE settles between them by learning σ² = MSE. In the σ² curve the "
             "learned σ² follows the batch MSE step by step and β = 2σ² falls as reconstructions improve.",
    configs=configs,
    figures=(
        Figure("Rate of each decoder", rates, "Rate (KL(q(z|x)‖p(z)), nats) on the held-out split; the text on each "
               "bar counts the active latent units (posterior-mean variance > 0.01)."),
        Figure("σ² of the σ-VAE against step", sigma_curve, "σ² with one shared σ set to its closed form σ*² (eq. 6): "
               "it equals the batch MSE, and β = 2σ² is the β-VAE it is equivalent to."),
        Figure("Samples g(z), z ~ N(0, I), the same z for every run", samples, "Ten draws from the prior decoded by "
               "each run at its last checkpoint."),
    ),
    checks=(
        Check("the optimal shared σ² is the mean squared error of the data it is fitted on (eq. 6): σ² tracks the MSE",
              sigma_tracks_mse),
        Check("a Gaussian decoder with σ = 1 weighs the rate so heavily that the posterior collapses",
              collapse_at_sigma_one),
        Check("choosing σ is choosing β = 2σ²: a smaller σ buys a larger rate", sigma_orders_rate),
    ),
    variations=(Variation("the same with a 2-D latent", {"model.latent_dim": 2}),
                Variation("the same with another seed", {"train.seed": 1})),
)
