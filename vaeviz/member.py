"""One run inside the trainer: its data on the device, optimiser, minibatch and noise generators,
metric buffer, sink, evaluations and checkpoints. The trainer (`vaeviz.train`) steps K ≥ 1 of
them together; everything here is per run.

Train-split metrics of step t come from that step's batch and are kept on the device
(`MetricBuffer`), synced to the sink only at a flush, where they are also checked for NaN/inf.
Evaluation on the held-out split runs under its own RNG, so it never changes the training stream,
and stores a snapshot of the probe set's posterior.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from vaeviz.build import Setup
from vaeviz.checkpoint import save_checkpoint
from vaeviz.config import RunConfig
from vaeviz.control import Cancelled, Diverged
from vaeviz.heldout import evaluate, probe_snapshot
from vaeviz.optim import FastAdam
from vaeviz.samplers import fitted_samplers
from vaeviz.stacking import noise_stream


class MetricSink(Protocol):
    """Where a run's metrics go: the run store (`vaeviz.runs.StoreSink`) or memory (`MemorySink`)."""

    def write(self, rows: list[tuple[int, str, str, float]]) -> None: ...
    def snapshot(self, step: int, arrays: dict[str, np.ndarray]) -> None: ...
    def progress(self, step: int, total: int) -> None: ...
    def truncate(self, after_step: int) -> None: ...


@dataclass
class MemorySink:
    """A sink that keeps everything in memory (tests, notebooks)."""

    rows: list[tuple[int, str, str, float]] = field(default_factory=list)
    snapshots: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)

    def write(self, rows):
        self.rows.extend(rows)

    def snapshot(self, step, arrays):
        self.snapshots[step] = arrays

    def progress(self, step, total):
        pass

    def truncate(self, after_step):
        self.rows = [r for r in self.rows if r[0] <= after_step]
        self.snapshots = {s: a for s, a in self.snapshots.items() if s <= after_step}

    def series(self, name: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one metric."""
        pts = [(s, v) for s, sp, n, v in self.rows if n == name and sp == split]
        return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


@dataclass
class TrainResult:
    steps: int
    final: dict[str, float]
    device: str
    seconds: float = 0.0  # wall time of the optimiser steps and flushes (no evaluation or checkpoints)


class MetricBuffer:
    """Per-step metric rows kept on the device until a flush."""

    def __init__(self):
        self.names: list[str] | None = None
        self.steps: list[int] = []
        self.values: list[torch.Tensor] = []

    def add(self, step: int, names: list[str], row: torch.Tensor) -> None:
        """The terms `names` of one step as one (T,) tensor."""
        if self.names is None:
            self.names = list(names)
        self.steps.append(step)
        self.values.append(row)

    def drain(self) -> list[tuple[int, str, str, float]]:
        """Sync to the host, raise Diverged at the first non-finite value, return rows."""
        if not self.values:
            return []
        table = torch.stack(self.values).cpu().numpy()  # (steps, terms)
        steps, self.steps, self.values = self.steps, [], []
        bad = ~np.isfinite(table)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise Diverged(steps[i], self.names[j], float(table[i, j]))
        return [(s, "train", n, float(v)) for s, row in zip(steps, table) for n, v in zip(self.names, row)]


class Member:
    """One run of a training batch (a solo run is a batch of one)."""

    def __init__(self, cfg: RunConfig, setup: Setup, sink: MetricSink, workdir: Path | None = None,
                 should_stop: Callable[[], bool] | None = None, progress: Callable | None = None):
        self.cfg, self.s, self.sink, self.workdir = cfg, setup, sink, workdir
        self.should_stop, self.progress = should_stop or (lambda: False), progress
        self.opt = FastAdam(list(setup.model.parameters()) + list(setup.objective.parameters()), cfg.train.lr)
        self.gen = torch.Generator(device=setup.device).manual_seed(cfg.train.seed)  # minibatch indices
        self.noise = noise_stream(setup.device)  # ε of the reparameterisation, as a solo run draws it
        dtype = getattr(torch, cfg.train.dtype)
        self.x = torch.as_tensor(setup.data.x_train, device=setup.device, dtype=dtype)  # (N, *shape)
        self.x_eval = torch.as_tensor(setup.data.x_eval, device=setup.device, dtype=dtype)
        labels = setup.data.y_train
        self.y = None if labels is None else torch.as_tensor(labels, device=setup.device)  # (N,) int64
        self.buffer, self.last = MetricBuffer(), {}

    def batch(self, labels: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This step's minibatch, drawn with replacement: x (B, *shape) and, with `labels` (an objective of
        the batch reads them, `Objective.needs_labels`), their labels (B,), else None."""
        idx = torch.randint(0, self.x.shape[0], (self.cfg.train.batch_size,), generator=self.gen,
                            device=self.x.device)
        return self.x.index_select(0, idx), self.y.index_select(0, idx) if labels else None

    def flush(self, t: int) -> None:
        """Write the buffered rows; checkpoint and raise Cancelled when asked to stop."""
        rows = self.buffer.drain()
        self.sink.write(rows)
        self.last.update({n: v for s, _, n, v in rows if s == t})
        self.sink.progress(t, self.cfg.train.steps)
        if self.progress is not None:
            self.progress(t, self.cfg.train.steps, self.last)
        if self.should_stop():
            self.checkpoint(t)
            raise Cancelled(f"cancelled at step {t}")

    def evaluate(self, t: int) -> None:
        """Held-out metrics of step t (the objective calibrated on the training split first) and the probe snapshot."""
        metrics = evaluate(self.s.model, self.s.objective, self.x_eval, self.x,
                           seed=self.cfg.train.seed * 1_000_003 + t)
        arrays = probe_snapshot(self.s.model, self.s.objective, self.s.data, self.cfg.train.probe_size)
        for name, value in metrics.items():
            if not np.isfinite(value):
                raise Diverged(t, name, value)
        self.sink.write([(t, "eval", n, float(v)) for n, v in metrics.items()])
        self.sink.snapshot(t, arrays)

    def checkpoint(self, t: int, weights: bool = True) -> None:
        """Save the resume state at step t and, with `weights`, the weights of step t for the explorer."""
        if self.workdir is None:
            return
        save_checkpoint(self.workdir, t, self.s, self.opt, self.gen, self.noise, weights=weights)
        if t == self.cfg.train.steps:  # the ex-post samplers of the final model are saved with the run
            fitted_samplers(self.s.model, self.s.data.x_train, self.workdir, t, fit_on=self.s.objective.ex_post_fit,
                            seed=self.cfg.train.seed)
