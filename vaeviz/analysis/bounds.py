"""The bounds a run touched: the clamps and floors of its objective's state (GECO's λ_min and λ_max, σ-VAE's
σ_min) that its logged training metrics reached, each with the first step it did.

Which terms are bounded, by which knob and how closely is the objective's own metadata (`Objective.bounds`);
this module only reads a run's metrics against it, for the pages and `vaeviz show` alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from vaeviz.config import RunConfig
from vaeviz.objectives import REGISTRY
from vaeviz.objectives.base import Bound


@dataclass(frozen=True)
class BoundHit:
    """A bound a run reached: the bound, its value on the logged term, and the first step the term sat there."""

    bound: Bound
    value: float
    step: int

    def describe(self) -> str:
        """One line, e.g. "lambda reached lambda_max = 1e+08 at step 120"."""
        power = "" if self.bound.power == 1 else f"^{self.bound.power}"
        return f"{self.bound.term} reached {self.bound.knob}{power} = {self.value:g} at step {self.step}"


def first_at_bound(series: pd.Series, value: float, side: str, rtol: float) -> int | None:
    """The first index (step) of `series` at the bound `value` within `rtol`: at or above (1 − rtol)·value for
    side "max", at or below (1 + rtol)·value for side "min"; None if never."""
    at = series >= value * (1 - rtol) if side == "max" else series <= value * (1 + rtol)
    hits = series.index[at.to_numpy()]
    return int(hits[0]) if len(hits) else None


def _term(df: pd.DataFrame, term: str) -> pd.Series:
    """The training values of one logged term, indexed by step in order."""
    rows = df[(df["split"] == "train") & (df["name"] == term)].sort_values("step")
    return pd.Series(rows["value"].to_numpy(float), index=rows["step"].to_numpy())


def touched_bounds(cfg: RunConfig, df: pd.DataFrame) -> list[BoundHit]:
    """The bounds of the run configured by `cfg` that its metrics `df` (rows step, split, name, value) reached,
    in the order its objective lists them."""
    params = cfg.objective.params
    hits = []
    for bound in REGISTRY[cfg.objective.name].bounds(params):
        value = bound.value(params)
        step = first_at_bound(_term(df, bound.term), value, bound.side, bound.rtol)
        if step is not None:
            hits.append(BoundHit(bound, value, step))
    return hits
