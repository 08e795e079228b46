"""Lesson: the Gaussian VAE primer, reparameterisation and full-covariance posteriors (Kingma & Welling 2019, "An
Introduction to Variational Autoencoders", Fig. 2.3 and Sec. 2.5; Kingma & Welling 2014, eq. 10).

The encoder outputs a Gaussian q(z|x) = N(μ, Σ). A sample is drawn as z = μ + A ε with ε ~ N(0, I) and AAᵀ = Σ
(Fig. 2.3: the noise leaves the path from the encoder to z, so the ELBO's gradient reaches μ and A). The factorised
family has A = diag σ (eq. 2.30–2.32), an axis-aligned ellipse; the full-covariance family has A = L, a lower
triangular Cholesky factor with positive diagonal (eq. 2.43–2.47), an ellipse at any angle. The rate of either is
the closed form KL(N(μ, LLᵀ) ‖ N(0, I)) = ½ (tr LLᵀ + μᵀμ − d − 2 Σ log L_ii) (`vaeviz.distributions`), which an
isotropic prior cannot tell from the same ellipse turned: nothing pins the full family's orientation, while a
factorised posterior makes the decoder align its own axes with the latent ones.

The full family contains the factorised one, so at its optimum its ELBO is at least as high. Here: the toy ring of
8 Gaussians (2-D data, 2-D latent, Gaussian decoder with σ = 0.05), three seeds of each family, and the held-out
ELBO compared across seeds.
"""

from __future__ import annotations

import numpy as np

from vaeviz import plots
from vaeviz.analysis import tiling
from vaeviz.lessons.common import base
from vaeviz.lessons.lesson import Check, Figure, Lesson, LessonRuns, Variation, Verdict

TOY = {"data.name": "gaussian_mixture", "model.hidden": [64, 64], "model.latent_dim": 2, "objective.name": "vae",
       "objective.decoder": "gaussian", "objective.sigma": 0.05}
FAMILIES = {"diagonal": "diag", "full": "full"}
ROTATED = 0.2  # mean |ρ| above which the ellipses are visibly turned (ρ = 0: axis-aligned)
SHOWN = 300  # held-out posteriors on the tilings
PICKED = 5  # posteriors of the reparameterisation figures, one per mode
DRAWS = 16  # samples z = μ + A ε of each


def seeds(full: bool) -> range:
    return range(5 if full else 3)


def role(family: str, seed: int) -> str:
    return f"{family} · seed {seed}"


def configs(full: bool, steps: int | None = None) -> dict:
    """{role: config}: every family × seed; `steps` overrides the number of steps (tests run the lesson shorter)."""
    n = steps or (50_000 if full else 20_000)
    return {role(fam, s): base({**TOY, "model.covariance": cov, "train.seed": s}, n)
            for fam, cov in FAMILIES.items() for s in seeds(full)}


def _roles(runs: LessonRuns, family: str) -> list[str]:
    return [r for r in runs.records if r.startswith(f"{family} · ")]


def posteriors(runs: LessonRuns, name: str):
    """(held-out posteriors {mu, logvar | scale_tril}, their covariances (N, 2, 2), data) of a run, or None."""
    setup, _ = runs.model(name)
    if setup is None:
        return None
    arrays = tiling.split_posteriors(setup.model, setup.data.x_eval)
    return arrays, tiling.covariances(arrays["mu"], arrays.get("logvar"), arrays.get("scale_tril")), setup.data


def _subset(arrays: dict, idx) -> dict:
    """The posterior arrays (mu, and logvar or scale_tril) of the examples `idx`."""
    return {k: arrays[k][idx] for k in ("mu", "logvar", "scale_tril") if k in arrays}


def correlation(cov: np.ndarray) -> np.ndarray:
    """ρ = Σ₁₂ / √(Σ₁₁ Σ₂₂) of each posterior: (N, 2, 2) -> (N,)."""
    return cov[:, 0, 1] / np.sqrt(cov[:, 0, 0] * cov[:, 1, 1])


def _reparameterisation(family: str):
    def build(runs: LessonRuns):
        got = posteriors(runs, role(family, 0))
        if got is None:
            return None
        arrays, _, data = got
        picked = [int(np.flatnonzero(data.y_eval == k)[0]) for k in range(PICKED) if (data.y_eval == k).any()]
        sub = _subset(arrays, picked)
        z = tiling.posterior_samples(sub["mu"], sub.get("logvar"), sub.get("scale_tril"), n=DRAWS)  # (P, n, 2)
        return plots.reparameterisation(tiling.ellipses(sub["mu"], sub.get("logvar"), sub.get("scale_tril")),
                                        sub["mu"], z, data.y_eval[picked], data.class_names,
                                        title=f"z = μ + A ε, {family} Σ (seed 0)")
    return build


def tilings(runs: LessonRuns):
    panels = []
    for family in FAMILIES:
        got = posteriors(runs, role(family, 0))
        if got is None:
            continue
        arrays, _, data = got
        sub = _subset(arrays, slice(SHOWN))
        outlines = tiling.ellipses(sub["mu"], sub.get("logvar"), sub.get("scale_tril"))  # (P, T, 2)
        panels.append({"title": f"{family} Σ (seed 0)", "outlines": outlines, "labels": data.y_eval[:SHOWN],
                       "class_names": data.class_names, "axes": ("z₁", "z₂")})
    if not panels:
        return None
    return plots.tiling_panels(panels, title="Held-out posteriors: diagonal against full covariance")


def elbos(runs: LessonRuns):
    values = {r: runs.last(r, "elbo") for r in runs.records}
    if not any(v is not None for v in values.values()):
        return None
    notes = {r: f"R = {runs.last(r, 'rate'):.2f}" for r in runs.records if runs.last(r, "rate") is not None}
    return plots.bar_chart({r: v for r, v in values.items() if v is not None}, "Held-out ELBO of every run",
                           "ELBO (nats per example)", note=notes)


def full_rotates(runs: LessonRuns) -> Verdict | None:
    """The full family's held-out posteriors are turned (mean |ρ| > ROTATED in every seed); the diagonal ones have
    ρ = 0 by construction."""
    if not runs.done():
        return None
    rho = {r: np.abs(correlation(posteriors(runs, r)[1])) for r in runs.records}  # |ρ| (N,) per run
    means = [float(rho[r].mean()) for r in _roles(runs, "full")]
    diag = max(float(rho[r].max()) for r in _roles(runs, "diagonal"))
    holds = min(means) > ROTATED
    return Verdict(holds, f"mean |ρ| of the full-covariance posteriors of {len(next(iter(rho.values())))} held-out "
                          f"points, one value per seed: {', '.join(f'{m:.2f}' for m in means)}, "
                          f"{'all above' if holds else 'not all above'} {ROTATED} (0 = axis-aligned); the largest |ρ| "
                          f"of any diagonal posterior is {diag:.2g}.")


def full_not_worse(runs: LessonRuns) -> Verdict | None:
    """Mean held-out ELBO over seeds: the full family's is not below the diagonal one's by more than twice the
    standard error of the difference (from the seed-to-seed spread of each family)."""
    if not runs.done():
        return None
    e = {fam: np.array([runs.last(r, "elbo") for r in _roles(runs, fam)]) for fam in FAMILIES}
    d, f = e["diagonal"], e["full"]
    se = float(np.sqrt(d.var(ddof=1) / len(d) + f.var(ddof=1) / len(f)))
    gap = float(f.mean() - d.mean())
    holds = gap >= -2 * se
    per = "; ".join(f"{fam}: {', '.join(f'{v:.3f}' for v in vals)}" for fam, vals in e.items())
    return Verdict(holds, f"held-out ELBO per seed ({per}); full − diagonal = {gap:+.3f} nats, standard error "
                          f"{se:.3f} from {len(d)} + {len(f)} seeds: the full family is "
                          f"{'not worse beyond the seed-to-seed noise' if holds else 'worse by more than twice it'}"
                          f"{'' if gap >= 0 else ', though its mean is lower'}.")


LESSON = Lesson(
    name="gaussian-primer",
    title="The Gaussian VAE primer: reparameterisation, diagonal and full-covariance posteriors",
    paper="Kingma & Welling 2019, An Introduction to Variational Autoencoders (and 2014, Auto-Encoding Variational "
          "Bayes, eq. 10)",
    figure="Fig. 2.3 (the reparameterisation trick) and Sec. 2.5 (factorised and full-covariance Gaussian posteriors)",
    look_for="In the z = μ + A ε figures each cross is a posterior mean μ, the dots are samples z and the grey lines "
             "are A ε: the noise ε is an input, so a gradient at z flows back along the line to μ and A. The diagonal "
             "posteriors are ellipses along the axes; the full-covariance ones (A = Cholesky factor L) are turned: on "
             "the ring each can point along its own mode's radius, which a diagonal one can do only for the modes on "
             "an axis. Both pay the same closed-form KL for an ellipse and its turned copy, so nothing but the decoder "
             "decides the angle. The bars compare the held-out ELBO of three seeds of each family.",
    configs=configs,
    figures=(
        Figure("Reparameterisation, diagonal covariance", _reparameterisation("diagonal"),
               f"One held-out point from each of the first {PICKED} modes: 1σ ellipse, mean μ (cross), {DRAWS} samples "
               "z = μ + σ ⊙ ε, each joined to μ."),
        Figure("Reparameterisation, full covariance", _reparameterisation("full"),
               "The same points under the full-covariance run: z = μ + L ε with L the encoder's Cholesky factor."),
        Figure("Tilings: diagonal against full covariance", tilings,
               f"1σ ellipses of the first {SHOWN} held-out posteriors of seed 0, coloured by mixture mode."),
        Figure("Held-out ELBO of every run", elbos,
               "ELBO on the held-out split (1,000 points, one posterior sample each) at the last step; the text on "
               "each bar is its rate R (nats)."),
    ),
    checks=(
        Check("a full-covariance posterior N(μ, LLᵀ) is not tied to the axes: its ellipses turn (correlation ρ ≠ 0), "
              "a factorised one's cannot", full_rotates),
        Check("the full-covariance family contains the factorised one, so its ELBO is at least as high (up to the "
              "noise of training)", full_not_worse),
    ),
    variations=(Variation("the same on the two moons", {"data.name": "moons"}),
                Variation("a blurrier decoder, σ = 0.1", {"objective.sigma": 0.1})),
)
