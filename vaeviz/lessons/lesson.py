"""What a lesson is: data, not code of its own page (ARCHITECTURE.md, "Lessons").

A `Lesson` names a seed paper's key figure or table and holds
- its runs: `configs(full)` maps a role ("VAE", "β = 4", ...) to a `RunConfig` (`full`: the paper's settings);
- its figures: `Figure(title, build)` where `build(runs)` calls the plot builders of `vaeviz.plots` on the
  lesson's runs and returns a plotly figure, or None while nothing is there to draw yet;
- its checks: `Check(claim, judge)` where `judge(runs)` returns a `Verdict` (does the paper's claim hold
  here, and a sentence with the numbers that say so), or None while the runs it needs are unfinished;
- its text: the paper, the figure, what to look for, and "try this" variations (overrides on every run).

`LessonRuns` is the view the figures and checks get: the lesson's run records by role and their metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from vaeviz.config import RunConfig
from vaeviz.runs import RunRecord, RunStore

FINISHED = ("done",)


@dataclass(frozen=True)
class Verdict:
    holds: bool  # the paper's claim holds on these runs
    sentence: str  # what was measured, with its numbers


@dataclass(frozen=True)
class Figure:
    title: str
    build: Callable[[LessonRuns], object]  # -> plotly Figure | None
    caption: str = ""


@dataclass(frozen=True)
class Check:
    claim: str  # the paper's claim, in one sentence
    judge: Callable[[LessonRuns], Verdict | None]  # None until the runs it needs are finished


@dataclass(frozen=True)
class Variation:
    label: str  # the button's text, e.g. "the same with β = 4"
    overrides: dict  # dotted overrides applied to every run of the lesson


@dataclass(frozen=True)
class Lesson:
    name: str
    title: str
    paper: str  # authors, year, title
    figure: str  # which figure or table it reproduces
    look_for: str  # what to look for, for the page and the report
    configs: Callable[[bool], dict[str, RunConfig]]  # full -> {role: config}
    figures: tuple[Figure, ...]
    checks: tuple[Check, ...]
    variations: tuple[Variation, ...] = ()
    needs: tuple[str, ...] = ()  # datasets that must be on disk (e.g. "mnist"), for a clear message

    def runs_for(self, full: bool = False, variation: Variation | None = None) -> dict[str, RunConfig]:
        """{role: config} of the lesson, with a variation's overrides applied to every run."""
        cfgs = self.configs(full)
        if variation is None:
            return cfgs
        return {role: cfg.with_overrides(variation.overrides) for role, cfg in cfgs.items()}


@dataclass
class LessonRuns:
    """The lesson's runs by role (a role without a run yet maps to None) and their metrics."""

    store: RunStore
    records: dict[str, RunRecord | None]
    _cache: dict = field(default_factory=dict, repr=False)

    def done(self, *roles: str) -> bool:
        """Every one of `roles` (all roles when none is named) has finished training."""
        return all((r := self.records.get(role)) is not None and r.status in FINISHED
                   for role in roles or tuple(self.records))

    def started(self) -> dict[str, RunRecord]:
        return {role: rec for role, rec in self.records.items() if rec is not None}

    def metrics(self, role: str, split: str | None = None) -> pd.DataFrame:
        """The run's metric rows (step, split, name, value); empty before it has any."""
        rec = self.records.get(role)
        if rec is None:
            return pd.DataFrame(columns=["step", "split", "name", "value"])
        key = (rec.id, split, rec.step, rec.status)
        if key not in self._cache:
            self._cache[key] = self.store.metrics(rec.id, split=split)
        return self._cache[key]

    def last(self, role: str, name: str, split: str = "eval") -> float | None:
        """The last logged value of metric `name` in `split`, or None."""
        df = self.metrics(role, split)
        df = df[df.name == name]
        return None if df.empty else float(df.value.iloc[-1])

    def model(self, role: str):
        """(Setup, step) of the run's weights at its last checkpoint, or (None, None) before it has one."""
        from vaeviz.app_state import checkpoint_for
        from vaeviz.build import load_run

        rec = self.records.get(role)
        step = None if rec is None else checkpoint_for(self.store, rec.id, None)
        if step is None:
            return None, None
        key = ("model", rec.id, step)
        if key not in self._cache:
            self._cache[key] = load_run(rec.config, self.store.artifact_dir(rec.id), step, device="cpu")[0]
        return self._cache[key], step

    def paths(self, roles=None, names=("rate", "distortion"), split: str | None = None) -> dict[str, pd.DataFrame]:
        """{role: metric rows of `names`} for the roles that have started, for the information-plane builders."""
        out = {}
        for role in roles or self.records:
            df = self.metrics(role, split)
            if not df.empty:
                out[role] = df[df.name.isin(names)]
        return out
