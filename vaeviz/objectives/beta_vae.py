"""β-VAE (Higgins et al. 2017, eq. 4): D + β_t R, with KL annealing schedules for β_t.

Schedules: `constant` (β_t = β); `linear` warm-up from 0 (Bowman et al. 2016: β_t = β·min(1, t/T));
`cyclic` (Fu et al. 2019: within each period, β rises linearly over the first `ratio` of the
period, then stays at β).
"""

from __future__ import annotations

from vaeviz.objective_params import BetaVAEParams
from vaeviz.objectives.base import Chart
from vaeviz.objectives.vae import VAE


def beta_schedule(step: int, beta: float, schedule: str, warmup: int, period: int, ratio: float) -> float:
    """β_t at optimiser step `step` (0-based)."""
    if schedule == "linear":
        return beta * min(1.0, step / warmup)
    if schedule == "cyclic":
        phase = (step % period) / period
        return beta * min(1.0, phase / ratio)
    return beta


class BetaVAE(VAE):
    Params = BetaVAEParams
    state_terms = ("beta",)
    charts = (Chart(("beta",)),)

    def beta(self, step: int) -> float:
        p = self.params
        return beta_schedule(step, p.beta, p.schedule, p.warmup_steps, p.period, p.ratio)
