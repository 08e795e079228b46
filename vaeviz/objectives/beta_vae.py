"""β-VAE (Higgins et al. 2017, eq. 4): D + β_t R, with KL annealing schedules for β_t.

Schedules: `constant` (β_t = β); `linear` warm-up from 0 (Bowman et al. 2016: β_t = β·min(1, t/T));
`cyclic` (Fu et al. 2019: within each period, β rises linearly over the first `ratio` of the
period, then stays at β).
"""

from __future__ import annotations

from dataclasses import dataclass

from vaeviz.config import knob
from vaeviz.objectives.vae import VAE, VAEParams


@dataclass
class BetaVAEParams(VAEParams):
    beta: float = knob(4.0, lo=0.0, hi=1000.0, help="weight β of the rate")
    schedule: str = knob("constant", choices=["constant", "linear", "cyclic"], help="β_t schedule")
    warmup_steps: int = knob(1000, lo=1, help="steps of the linear warm-up from 0")
    period: int = knob(500, lo=1, help="steps per cycle of the cyclic schedule")
    ratio: float = knob(0.5, lo=0.0, hi=1.0, lo_open=True, help="fraction of a cycle spent increasing β")


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
    logs_beta = True

    def beta(self, step: int) -> float:
        p = self.params
        return beta_schedule(step, p.beta, p.schedule, p.warmup_steps, p.period, p.ratio)
