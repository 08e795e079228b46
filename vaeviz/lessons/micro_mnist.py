"""Lesson: Micro-MNIST, each posterior claims its patch of the prior (Rezende & Viola 2018, "Taming VAEs", Fig. 8).

Seven MNIST images, a 2-D latent (preset `micro-mnist-2d`). Under the ELBO (Bernoulli decoder) nothing stops the
likelihood term from asking for ever sharper codes: the 7 posteriors shrink to islands, the rate climbs past the
log 7 ≈ 1.95 nats that telling 7 images apart needs, and most of the prior lies in holes where q(z) ≪ p(z). GECO
(Algorithm 1) minimises the rate subject to a reconstruction constraint E‖x − g(z)‖²/d ≤ κ² (eq. 3, constraint RE):
once the constraint is met, the Lagrange multiplier λ lets the KL term grow the posteriors until the constraint
binds, so they spread out and tile the prior, each image claiming its own patch; κ sets the size of the patches. A
looser κ lets similar images share a patch (rate below log 7).

GECO's multiplier is capped at λ_max = 1000 (the equilibrium λ here is ~20–90). Without a cap, λ ← λ·exp(ν C_ma)
overshoots while the untrained decoder violates the constraint (to ~10⁷ within 500 steps at κ = 0.1) and can then
fall by at most ν κ² per step, which took ~5,000 steps to unwind; with the cap it settles within
~1,000 and the lesson fits its 3-minute budget. The cap binds only in those first steps.

Measured on the training split itself (all 7 posteriors): the aggregate q(z) = 1/7 Σ_i N(μ_i, Σ_i) (exact, not a
sample estimate), its hole fraction (prior mass where q/p < 0.1, 10,000 draws z ~ N(0, I)) and marginal
KL(q(z) ‖ p(z)) (`vaeviz.analysis.aggregate`), and each posterior's size √(σ₁σ₂) (1 for the prior).
"""

from __future__ import annotations

import math

import numpy as np

from vaeviz import plots
from vaeviz.analysis import tiling
from vaeviz.analysis.aggregate import HOLE_TAU, fit_aggregate
from vaeviz.app_state import as_images
from vaeviz.lessons.common import base
from vaeviz.lessons.lesson import Check, Figure, Lesson, LessonRuns, Variation, Verdict
from vaeviz.presets import PRESETS

MICRO = {**PRESETS["micro-mnist-2d"].overrides, "train.seed": 0}
VAE, TIGHT, LOOSE = "VAE (ELBO)", "GECO κ = 0.1", "GECO κ = 0.2"
GECO = {"objective.name": "geco", "objective.lambda_max": 1000.0}  # λ capped: see the module docstring
ROLES = {VAE: {}, TIGHT: {**GECO, "objective.kappa": 0.1}, LOOSE: {**GECO, "objective.kappa": 0.2}}
N_DRAWS = 10_000  # prior draws of the hole fraction and posterior draws of the marginal KL
STEPS = 4000  # GECO's λ settles by ~1,000 steps with the cap, after ~5,000 without it


def configs(full: bool, steps: int | None = None) -> dict:
    """{role: config} of the three runs; `steps` overrides the number of steps (tests run the lesson shorter)."""
    n = steps or (3 * STEPS if full else STEPS)
    return {role: base({**MICRO, **knobs}, n) for role, knobs in ROLES.items()}


def measure(runs: LessonRuns, role: str) -> dict | None:
    """The run's 7 training posteriors, their decoded g(μ), sizes, aggregate q(z), hole fraction and marginal KL."""
    setup, step = runs.model(role)
    if setup is None:
        return None
    x = setup.data.x_train  # (7, 1, 28, 28)
    arrays = tiling.split_posteriors(setup.model, x)
    cov = tiling.covariances(arrays["mu"], arrays.get("logvar"), arrays.get("scale_tril"))  # (7, 2, 2)
    agg = fit_aggregate(setup.model, x)
    return {**arrays, "x": x.reshape(len(x), -1), "shape": setup.data.shape, "step": step,
            "size": np.linalg.det(cov) ** 0.25, "agg": agg,
            "holes": agg.hole_fraction(HOLE_TAU, N_DRAWS), "kl": agg.marginal_kl(N_DRAWS)}


def _tiling(role: str):
    def build(runs: LessonRuns):
        m = measure(runs, role)
        if m is None:
            return None
        fig = plots.tiling(tiling.ellipses(m["mu"], m.get("logvar"), m.get("scale_tril")),
                           title=f"{role}: the 7 training posteriors at step {m['step']}")
        return plots.image_markers(fig, m["mu"], as_images(m["decoded"], m["shape"]))
    return build


def _holes(role: str):
    def build(runs: LessonRuns):
        m = measure(runs, role)
        return None if m is None else plots.holes(m["agg"].grid(3.0, 96), HOLE_TAU, m["holes"], m["kl"])
    return build


def _done(runs: LessonRuns, *roles: str) -> dict | None:
    if not runs.done(*roles):
        return None
    return {role: measure(runs, role) for role in roles}


def _size(m: dict) -> float:
    return float(np.mean(m["size"]))


def vae_islands(runs: LessonRuns) -> Verdict | None:
    """Under the ELBO the posteriors are islands: most of the prior's mass lies in holes."""
    got = _done(runs, VAE)
    if got is None:
        return None
    m, rate = got[VAE], runs.last(VAE, "rate", "train")
    holds = m["holes"] > 0.5
    return Verdict(holds, f"the VAE's 7 posteriors have a mean size √(σ₁σ₂) of {_size(m):.3f} (the prior's is 1) and "
                          f"a rate of {rate:.2f} nats (log 7 = {math.log(7):.2f}); {m['holes']:.0%} of the prior's "
                          f"mass lies in holes (q/p < {HOLE_TAU:g}, {N_DRAWS:,} prior draws): "
                          f"{'most of it' if holds else 'not most of it'}.")


def geco_tiles(runs: LessonRuns) -> Verdict | None:
    """GECO with κ = 0.1 tiles the prior (hole fraction at most half the VAE's, lower marginal KL) while its
    reconstructions meet the constraint (MSE of g(μ) ≤ κ²)."""
    got = _done(runs, VAE, TIGHT)
    if got is None:
        return None
    v, g = got[VAE], got[TIGHT]
    mse = float(np.mean((g["decoded"] - g["x"]) ** 2))
    kappa2 = ROLES[TIGHT]["objective.kappa"] ** 2
    holds = g["holes"] <= 0.5 * v["holes"] and g["kl"] < v["kl"] and mse <= kappa2
    return Verdict(holds, f"hole fraction {g['holes']:.1%} under GECO against {v['holes']:.1%} under the ELBO, "
                          f"marginal KL {g['kl']:.2f} against {v['kl']:.2f} nats, posterior size {_size(g):.3f} "
                          f"against {_size(v):.3f}; GECO's reconstructions g(μ) of the 7 images have MSE {mse:.4f} "
                          f"({'within' if mse <= kappa2 else 'above'} κ² = {kappa2:g}).")


def kappa_sets_patch(runs: LessonRuns) -> Verdict | None:
    """A looser κ buys bigger patches for a smaller rate."""
    got = _done(runs, TIGHT, LOOSE)
    if got is None:
        return None
    r = {role: runs.last(role, "rate", "train") for role in got}
    s = {role: _size(m) for role, m in got.items()}
    holds = r[LOOSE] < r[TIGHT] and s[LOOSE] > s[TIGHT]
    return Verdict(holds, f"κ = 0.2: rate {r[LOOSE]:.2f} nats, posterior size {s[LOOSE]:.3f}; κ = 0.1: rate "
                          f"{r[TIGHT]:.2f} nats, size {s[TIGHT]:.3f}. The looser constraint "
                          f"{'buys' if holds else 'does not buy'} bigger patches for fewer nats"
                          f"{' (below log 7: similar images share a patch)' if r[LOOSE] < math.log(7) else ''}.")


LESSON = Lesson(
    name="micro-mnist",
    title="Micro-MNIST: how 7 posteriors claim the prior (VAE against GECO)",
    paper="Rezende & Viola 2018, Taming VAEs",
    figure="Fig. 8 (7 MNIST images in a 2-D latent: the posteriors under the ELBO and under GECO)",
    look_for="Each ellipse is one training image's posterior q(z|x), drawn with the image it decodes to. Under the "
             "ELBO they shrink to small islands with empty prior between them (red in the hole map): a sample from "
             "the prior mostly lands where no image was encoded. GECO stops sharpening once the reconstructions are "
             "within κ and spends the rest on the KL: the ellipses swell until they touch and tile the prior's disc. "
             "Compare κ = 0.1 with κ = 0.2: the looser tolerance gives bigger patches, and similar digits may share "
             "one.",
    configs=configs,
    figures=(
        Figure("Posteriors under the ELBO", _tiling(VAE), "1σ ellipses of the 7 training posteriors, each with its "
               "decoded mean g(μ); the dashed circle is the prior's 1σ."),
        Figure("Posteriors under GECO, κ = 0.1", _tiling(TIGHT), "The same images under GECO's reconstruction "
               "constraint RMSE ≤ 0.1 per pixel."),
        Figure("Posteriors under GECO, κ = 0.2", _tiling(LOOSE), "A looser constraint, RMSE ≤ 0.2 per pixel."),
        Figure("Holes under the ELBO", _holes(VAE), f"log q(z) of the 7 posteriors and where q/p < {HOLE_TAU:g}; "
               f"hole fraction from {N_DRAWS:,} prior draws."),
        Figure("Holes under GECO, κ = 0.1", _holes(TIGHT), "The same for GECO."),
    ),
    checks=(
        Check("under the ELBO the 7 posteriors shrink to islands and leave most of the prior uncovered", vae_islands),
        Check("GECO meets the reconstruction constraint with posteriors that spread out and tile the prior: far fewer "
              "holes and a lower marginal KL than the ELBO's", geco_tiles),
        Check("the tolerance κ sets the size of each image's patch: a looser κ gives bigger posteriors and a lower "
              "rate", kappa_sets_patch),
    ),
    variations=(Variation("the same with another seed", {"train.seed": 1}),
                Variation("7 other images (data seed 1)", {"data.seed": 1})),
    needs=("mnist",),
)
