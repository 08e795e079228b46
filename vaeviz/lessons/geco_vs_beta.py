"""Lesson: GECO against a β-VAE sweep (Rezende & Viola 2018, "Taming VAEs", sec. 3, Algorithm 1, and a
Fig. 4-style comparison of GECO with β-VAEs on the same data, network and seed).

GECO minimises the rate R subject to a reconstruction constraint C = ‖x − g(z)‖²/d − κ² ≤ 0 (Table 1, RE),
through the Lagrangian R + λ·C_ma with C_ma ← α·C_ma + (1 − α)·C̄_batch and λ ← λ·exp(ν·C_ma) after every step
(Algorithm 1): λ rises while the constraint is violated and falls once it holds, so λ's peak marks the step the
constraint is first met. A Gaussian decoder of fixed σ makes the β-VAE's loss β·R + d·MSE/(2σ²) + const (σ-VAE
eq. 4), so on one axis of MSE per dimension a β sweep traces the rate a β-VAE needs for each reconstruction error
(the frontier) and GECO, which picks its own λ, lands somewhere on that axis: the paper's claim is that it reaches
its constraint with a rate comparable to, or below, that of the β-VAE with the same reconstruction error.

Distortions in nats are not comparable here (the β-VAE's is the NLL at σ = 0.1, GECO's at its calibrated σ*), so
the comparison is in (rate, MSE), both of the held-out split at the last evaluation (359 digits, one posterior
sample each). Runs: β ∈ {0.25, 0.5, 1 (the VAE), 2, 4} at σ = 0.1, and GECO with κ = 0.11 (κ² = 0.0121, about
the VAE's training MSE), λ₀ = d/(2κ²) (GECO starts as the Gaussian VAE of σ = κ, `GECO.suggested`), ν = 0.02.
Lesson 5 (`vaeviz.lessons.holes`) reuses exactly these runs.

Measured (seed 0; training 28 s for the six runs on this 2-core CPU, nearly idle; full size 176 s): λ peaks where
C_ma first reaches 0 (step 935) and falls after it; GECO's held-out rate is 7% below the β-VAE frontier at its MSE
(4% with seed 1; 1% above at full size), so the claim holds. A finding: Algorithm 1's λ is stationary only at
C_ma = 0, yet after 3,000 steps GECO's training MSE is 42% below κ² (24% after 20,000): λ overshoots while the
constraint is violated and then relaxes at the rate ν·|C_ma| ≈ 10⁻⁴ per step, so GECO over-delivers reconstruction
and pays for it in rate; the check saying so differs from the paper at both sizes. A larger ν (GECO.suggested's
10⁻³/κ² = 0.083) relaxes faster but overshoots further (λ peaked at 2.6·10⁴ and the MSE ended below every β-VAE's).
"""

from __future__ import annotations

import numpy as np

from vaeviz import plots
from vaeviz.lessons.common import DIGITS, base, pct
from vaeviz.lessons.lesson import Check, Figure, Lesson, LessonRuns, Variation, Verdict

# One intra-op thread: the trainer's automatic choice gives every core to a batch of K runs whose FLOPs pass
# `runtime.PARALLEL_FLOPS` (these six digits runs do), and on this loaded 2-core machine the six runs took
# 301 s that way against 22 s on one thread (measured; the numbers trained are the same).
SHARED = {**DIGITS, "train.threads": 1}
SIGMA = 0.1  # the β-VAEs' fixed decoder σ
BETAS = (0.25, 0.5, 1.0, 2.0, 4.0)
KAPPA, NU, DIM = 0.11, 0.02, 64  # GECO's tolerance (RMSE per pixel) and λ's step; digits are 8×8
GECO = "GECO"
VAE = "VAE (β = 1)"
TOLERANCE = 0.10  # "comparable": GECO's rate at most this fraction above the frontier's at its MSE


def beta_role(beta: float) -> str:
    return VAE if beta == 1 else f"β = {beta:g}"


def beta_knobs(beta: float) -> dict:
    gaussian = {"objective.decoder": "gaussian", "objective.sigma": SIGMA}
    if beta == 1:
        return {**gaussian, "objective.name": "vae"}
    return {**gaussian, "objective.name": "beta_vae", "objective.beta": beta}


GECO_KNOBS = {"objective.name": "geco", "objective.kappa": KAPPA, "objective.nu": NU,
              "objective.lambda_init": float(round(DIM / (2 * KAPPA**2)))}
SWEEP = tuple(beta_role(b) for b in BETAS)


def configs(full: bool) -> dict:
    """3,000 steps; full size 20,000 (the paper's own settings, conv-DRAW on CelebA and MNIST, are out of reach)."""
    steps = 20_000 if full else 3000
    runs = {beta_role(b): base({**SHARED, **beta_knobs(b)}, steps) for b in BETAS}
    return {**runs, GECO: base({**SHARED, **GECO_KNOBS}, steps)}


def pareto(points) -> list[tuple[float, float]]:
    """The (mse, value) points no other point beats on both (lower MSE and lower value), by MSE."""
    front: list[tuple[float, float]] = []
    for mse, value in sorted(points):
        if not front or value < front[-1][1]:
            front.append((mse, value))
    return front


def frontier_at(points, mse: float) -> float | None:
    """The Pareto frontier of (mse, value) points at `mse`, linear in log MSE between its neighbours; None outside
    the frontier's MSE range (no extrapolation)."""
    front = pareto(points)
    logs, values = np.log([m for m, _ in front]), [v for _, v in front]
    x = float(np.log(mse))
    if len(front) < 2 or not logs[0] <= x <= logs[-1]:
        return None
    return float(np.interp(x, logs, values))


def final_points(runs: LessonRuns, name: str = "rate") -> list[tuple[float, float]]:
    """(held-out MSE, held-out `name`) at the last evaluation of every finished β-VAE run."""
    return [(runs.last(r, "mse"), runs.last(r, name)) for r in SWEEP if runs.done(r)]


def geco_train(runs: LessonRuns):
    """GECO's training metrics, one row per step."""
    return plots.wide(runs.metrics(GECO, "train"))


def dynamics(runs: LessonRuns):
    df = runs.metrics(GECO, "train")
    return None if df.empty else plots.geco_dynamics(df)


def plane(runs: LessonRuns):
    paths = runs.paths(names=("rate", "mse"), split="eval")
    if not paths:
        return None
    front = [(rate, mse) for mse, rate in pareto(final_points(runs))]
    marks = {}
    if runs.done(GECO):
        mse = runs.last(GECO, "mse")
        rate = frontier_at(final_points(runs), mse)
        marks = {} if rate is None else {"frontier at GECO's MSE": (rate, mse)}
    trained = np.concatenate([df[(df.name == "mse") & (df.step > 0)].value.to_numpy() for df in paths.values()])
    view = (0.85 * trained.min(), 1.15 * trained.max()) if len(trained) else None  # the untrained start above it
    return plots.rate_mse_plane(paths, frontier=front, kappa2=KAPPA**2, marks=marks, mse_range=view,
                                title="Every run on the information plane in (rate, held-out MSE)")


def constraint_met(runs: LessonRuns) -> Verdict | None:
    """C_ma ≤ 0 at a step it names, and λ, which peaks there, lower at the end."""
    if not runs.done(GECO):
        return None
    w = geco_train(runs)
    first, lam = plots.first_constraint_step(w), w["lambda"].dropna()
    if first is None:
        return Verdict(False, f"C_ma stayed above 0 for all {int(w.index[-1])} steps (κ² = {KAPPA**2:.4g}, "
                              f"last C_ma {w['c_ma'].iloc[-1]:.3g}): λ only rose, to {lam.iloc[-1]:.4g}.")
    at, end = float(lam.loc[first]), float(lam.iloc[-1])
    holds = end < at
    return Verdict(holds, f"C_ma first fell to ≤ 0 at step {first} of {int(w.index[-1])} (κ² = {KAPPA**2:.4g}); "
                          f"λ rose from {lam.iloc[0]:.4g} to {at:.4g} there (its peak {lam.max():.4g} at step "
                          f"{int(lam.idxmax())}) and {'fell' if holds else 'did not fall'} to {end:.4g} "
                          f"({pct(end, at)} {'lower' if holds else 'higher'}) by the end.")


def rate_against_frontier(runs: LessonRuns) -> Verdict | None:
    """GECO's held-out rate against the β-VAE frontier's at GECO's held-out MSE."""
    if not runs.done(GECO, *SWEEP):
        return None
    mse, rate = runs.last(GECO, "mse"), runs.last(GECO, "rate")
    front = pareto(final_points(runs))
    need = frontier_at(front, mse)
    if need is None:
        return Verdict(False, f"GECO's held-out MSE {mse:.4g} lies outside the β sweep's range "
                              f"({front[0][0]:.4g} to {front[-1][0]:.4g}): no β-VAE to compare it with.")
    holds = rate <= (1 + TOLERANCE) * need
    side = "below" if rate <= need else "above"
    return Verdict(holds, f"at a held-out MSE of {mse:.4g} (359 digits) GECO's rate is {rate:.3g} nats; the β-VAE "
                          f"frontier ({len(front)} of {len(SWEEP)} runs on it) needs {need:.3g} nats there, so GECO is "
                          f"{pct(rate, need)} {side} it (tolerance {TOLERANCE:.0%} above).")


def settles_on_constraint(runs: LessonRuns) -> Verdict | None:
    """At the end the constraint is active: C_ma within 10% of κ² of 0 (λ is stationary only at C_ma = 0)."""
    if not runs.done(GECO):
        return None
    w = geco_train(runs)
    c_ma, mse = float(w["c_ma"].iloc[-1]), float(w["mse"].iloc[-50:].mean())
    holds = abs(c_ma) <= 0.1 * KAPPA**2
    if holds:
        state = "settled at the boundary."
    elif c_ma < 0:
        state = "still relaxing from its peak: GECO reconstructs better than it was asked to, and pays in rate."
    else:
        state = "still rising: the constraint is not met."
    return Verdict(holds, f"after {int(w.index[-1])} steps C_ma = {c_ma:.3g}: the training batches' MSE (mean of the "
                          f"last 50, {mse:.4g}) sits {pct(mse, KAPPA**2)} {'below' if mse < KAPPA**2 else 'above'} "
                          f"κ² = {KAPPA**2:.4g} (tolerance 10% of κ²); λ ends at {w['lambda'].iloc[-1]:.4g}, {state}")


LESSON = Lesson(
    name="geco-vs-beta",
    title="GECO against β-VAE: a reconstruction target instead of a β",
    paper="Rezende & Viola 2018, Taming VAEs",
    figure="sec. 3 and Algorithm 1 (GECO's λ and C_ma), in a Fig. 4-style comparison with a β-VAE sweep",
    look_for="In GECO's dynamics, λ climbs while the moving average C_ma of the constraint is above 0, peaks at the "
             "step C_ma crosses 0 (green line), then falls. On the (rate, MSE) plane every β-VAE trajectory ends on "
             "the dashed frontier (larger β: less rate, more error); GECO's end point sits near that frontier at its "
             "own MSE (the star marks the frontier's rate there), though nobody chose a β for it. Note where GECO's "
             "training MSE ends against κ²: below it, λ is still relaxing.",
    configs=configs,
    figures=(
        Figure("GECO: λ, the constraint and the MSE against step", dynamics,
               "Training batches, every step. C = MSE − κ² per pixel; C_ma is its moving average (α = 0.99), the "
               "value λ follows: λ ← λ·exp(ν·C_ma)."),
        Figure("Information plane in (rate, MSE)", plane,
               "Held-out rate and MSE (359 digits, one posterior sample each) at each evaluation; the dashed line "
               "joins the β-VAEs' final points that no other β-VAE beats on both axes; the dotted line is κ², GECO's "
               "target for its training MSE. Every run starts at the untrained model (rate ≈ 0, MSE ≈ 0.18), above "
               "the view."),
    ),
    checks=(
        Check("GECO's multiplier rises until the constraint holds (C_ma ≤ 0) and then falls", constraint_met),
        Check("GECO reaches its reconstruction with a rate comparable to, or below, that of the β-VAE with the same "
              "reconstruction error", rate_against_frontier),
        Check("GECO's λ is stationary only where C_ma = 0: it settles on its constraint", settles_on_constraint),
    ),
    variations=(Variation("another seed", {"train.seed": 1}),
                Variation("a 2-D latent (κ out of reach)", {"model.latent_dim": 2})),
)
