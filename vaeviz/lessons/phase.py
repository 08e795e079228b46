"""Lesson: β phase transitions (Rezende & Viola 2018, "Taming VAEs", sec. 2 and Fig. 2).

A β-VAE minimises D + β·R. On a mixture of 8 Gaussian modes with a 2-D latent, telling the modes apart costs
about log 8 nats of rate; as β grows that rate stops paying for itself and the code gives the modes up — not
smoothly, but in a jump: the number of modes the code separates (`vaeviz.analysis.modes`) drops between
neighbouring β values while the rate falls to zero. A β sweep (≥ 8 log-spaced values) on the same data,
network and seed shows rate and distortion against β, the tilings at a few β, and the detected transitions.
"""

from __future__ import annotations

import numpy as np

from vaeviz import plots
from vaeviz.analysis import tiling
from vaeviz.analysis.modes import separated_modes
from vaeviz.app_state import sweep_points
from vaeviz.lessons.common import base
from vaeviz.lessons.lesson import Check, Figure, Lesson, LessonRuns, Variation, Verdict

MIXTURE = {"data.name": "gaussian_mixture", "model.hidden": [64, 64], "model.latent_dim": 2, "train.seed": 0,
           "objective.name": "beta_vae", "objective.decoder": "gaussian", "objective.sigma": 0.05}


def betas(full: bool) -> np.ndarray:
    return np.logspace(0, 2, 16 if full else 10)  # 1 … 100


def role(beta: float) -> str:
    return f"β = {beta:.3g}"


def configs(full: bool) -> dict:
    steps = 10_000 if full else 3000
    return {role(b): base({**MIXTURE, "objective.beta": float(b)}, steps) for b in betas(full)}


def sweep(runs: LessonRuns) -> list[tuple[float, str]]:
    """(β, role) of the lesson's runs, by β."""
    return sorted((rec.config.objective.beta, r) for r, rec in runs.records.items() if rec is not None)


def modes(runs: LessonRuns) -> list[tuple[float, int]]:
    """(β, modes separated) of every finished run, by β."""
    out = []
    for beta, r in sweep(runs):
        setup, _ = runs.model(r) if runs.done(r) else (None, None)
        if setup is not None:
            out.append((beta, separated_modes(setup.model, setup.data.x_eval, setup.data.y_eval)))
    return out


def transitions(counts: list[tuple[float, int]]) -> list[tuple[float, float, int, int]]:
    """(β before, β after, modes before, modes after) wherever the count drops between neighbouring β."""
    return [(b0, b1, m0, m1) for (b0, m0), (b1, m1) in zip(counts, counts[1:]) if m1 < m0]


def curves(runs: LessonRuns):
    points = sweep_points(runs.store, list(runs.started().values()))
    return plots.beta_curves(points) if len(points) else None


def mode_bars(runs: LessonRuns):
    counts = modes(runs)
    if not counts:
        return None
    return plots.bar_chart({role(b): m for b, m in counts}, "Modes the code separates", "modes separated")


def tiling_at(which: str):
    """A figure builder: the probe set's posteriors at the smallest β, just after the first transition, or the
    largest β."""

    def build(runs: LessonRuns):
        done = [(b, r) for b, r in sweep(runs) if runs.done(r)]
        if not done:
            return None
        found = transitions(modes(runs))
        pick = {"low": done[0][0], "high": done[-1][0], "after": found[0][1] if found else None}[which]
        if pick is None:
            return None
        rec = runs.records[role(pick)]
        snap = runs.store.load_snapshot(rec.id, runs.store.snapshot_steps(rec.id)[-1])
        n = min(400, len(snap["mu"]))
        outlines = tiling.ellipses(snap["mu"][:n], snap["logvar"][:n])
        names = runs.model(role(pick))[0].data.class_names
        return plots.tiling(outlines, snap["labels"][:n], names, title=role(pick))

    return build


def detects_transitions(runs: LessonRuns) -> Verdict | None:
    if not runs.done():
        return None
    counts = modes(runs)
    found = transitions(counts)
    jumps = "; ".join(f"{m0} → {m1} modes between β = {b0:.3g} and β = {b1:.3g}" for b0, b1, m0, m1 in found)
    sudden = [t for t in found if t[2] - t[3] >= 2]  # more than one mode lost within one step of β
    text = (f"{len(found)} phase transition{'s' * (len(found) != 1)} detected over {len(counts)} β values from "
            f"{counts[0][0]:.3g} to {counts[-1][0]:.3g}: {jumps or 'the count never drops'}.")
    return Verdict(bool(sudden), text)


def rate_falls(runs: LessonRuns) -> Verdict | None:
    if not runs.done():
        return None
    rates = [(b, runs.last(r, "rate")) for b, r in sweep(runs)]
    rises = [(b0, b1) for (b0, r0), (b1, r1) in zip(rates, rates[1:]) if r1 > r0 * 1.05 + 0.01]
    last_b, last_r = rates[-1]
    holds = not rises and last_r < 0.05
    return Verdict(holds, f"the rate goes from {rates[0][1]:.3g} nats at β = {rates[0][0]:.3g} to {last_r:.3g} at "
                          f"β = {last_b:.3g}, " + ("never rising" if not rises else
                                                    f"rising between β = {rises[0][0]:.3g} and {rises[0][1]:.3g}")
                   + (" (posterior collapse at the largest β)." if last_r < 0.05 else "."))


LESSON = Lesson(
    name="beta-phase-transitions",
    title="β phase transitions: the code gives up modes in jumps",
    paper="Rezende & Viola 2018, Taming VAEs",
    figure="Fig. 2 (rate and distortion of a β-VAE against β on a Gaussian mixture)",
    look_for="Read the rate against β: while the code keeps every mode apart it falls slowly, then, within one step of "
             "β, it drops to zero and the distortion jumps: the code gives the modes up at once (a phase transition, "
             "detected below from the reconstructions). The tilings change from one patch per mode to one blob over "
             "the prior: past that β, telling the modes apart costs more rate than the distortion it saves.",
    configs=configs,
    figures=(
        Figure("Rate, distortion and −ELBO against β", curves, "One point per run at its last evaluation on the "
               "held-out split; D is −log p(x|z) of the Gaussian decoder with σ = 0.05, in nats."),
        Figure("Modes the code separates", mode_bars, "Modes whose mean reconstructions stay further apart than half "
               "the smallest distance between the data's own mode centres (held-out points)."),
        Figure("Tiling at the smallest β", tiling_at("low"), "1σ posterior ellipses of 400 held-out points."),
        Figure("Tiling just after the first transition", tiling_at("after")),
        Figure("Tiling at the largest β", tiling_at("high")),
    ),
    checks=(
        Check("as β grows the β-VAE gives up modes in jumps: phase transitions", detects_transitions),
        Check("the rate falls as β grows, to posterior collapse", rate_falls),
    ),
    variations=(Variation("the same on a 3×3 grid of modes", {"data.layout": "grid", "data.k": 9}),
                Variation("the same with σ = 0.1", {"objective.sigma": 0.1})),
)
