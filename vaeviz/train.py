"""The training loop: data resident on the device, random-index minibatches, gradients from the
hand-derived pass of `vaeviz.analytic` where it applies (see `analytic.supports`) and from autograd elsewhere,
Adam (one fused call per step, `vaeviz.optim`), with the runtime choices of `vaeviz.runtime`
(threads, denormals, compile).

Steps are numbered 1..steps (step t is the t-th optimiser update). Train-split metrics of step
t come from that step's batch and are kept on the device, synced to the sink only at a flush
(at least once a second, and before every evaluation and checkpoint), where they are also
checked for NaN/inf. Evaluation on the held-out split runs at step 0, every `eval_every` steps
and at the end, under its own RNG so it never changes the training stream, and stores a
snapshot of the probe set's posterior. The same config and seed give the same metric stream.

Checkpoints (with a `workdir`) come every `checkpoint_every` steps and at the end (the weights, kept
per step for the explorer, and the resume state), and in between whenever `checkpoint_seconds` have
passed since the last one (the resume state only), so a crash loses at most that much training.
The resume state holds everything the stream depends on (weights, objective state, Adam, the
minibatch generator and the noise RNG), and saving it changes nothing, so a resumed run writes the
same stream as an uninterrupted one whenever its checkpoints happened. The previous resume state is
kept beside the latest (`RESUME_FILES`), so a batch killed while saving its runs one after another
still finds a step all of them saved.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from vaeviz import analytic
from vaeviz.config import RunConfig
from vaeviz.data import Dataset, load_dataset
from vaeviz.evaluation import evaluate, probe_snapshot
from vaeviz.nets import VAEModel, build_model
from vaeviz.objectives import Objective, build_objective
from vaeviz.objectives.base import Losses
from vaeviz.optim import FastAdam
from vaeviz.preflight import preflight
from vaeviz.runtime import flushed_denormals, maybe_compile, pick_device, set_cpu_threads
from vaeviz.samplers import fitted_samplers

FLUSH_SECONDS = 0.5
MAX_BUFFER = 2000
RESUME_FILES = ("checkpoint.pt", "checkpoint.prev.pt")  # the latest resume state and the one before it
clock = time.monotonic  # what time-based checkpoints are timed with (tests replace it)
log = logging.getLogger("vaeviz")


class Cancelled(Exception):
    """The run was asked to stop; a checkpoint was written first."""


class Diverged(Exception):
    """A logged term became NaN or infinite."""

    def __init__(self, step: int, term: str, value: float):
        super().__init__(f"diverged at step {step}: {term} = {value} (try a smaller train.lr)")
        self.step, self.term, self.value = step, term, value


class MetricSink(Protocol):
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


@dataclass
class Setup:
    """Everything a run trains or evaluates with."""

    data: Dataset
    model: VAEModel
    objective: Objective
    device: torch.device


def build(cfg: RunConfig, device: torch.device | None = None) -> Setup:
    """Load the data and build objective and model, seeded by `train.seed`."""
    device = device or pick_device(cfg.train.device)
    data = load_dataset(cfg.data)
    torch.manual_seed(cfg.train.seed)
    objective = build_objective(cfg.objective, data.dim)
    objective.set_dataset_size(len(data.x_train))
    model = build_model(cfg.model, data.shape, objective.net_spec())
    dtype = getattr(torch, cfg.train.dtype)
    return Setup(data, model.to(device, dtype), objective.to(device, dtype), device)


def make_optimizer(setup: Setup, lr: float) -> FastAdam:
    params = list(setup.model.parameters()) + list(setup.objective.parameters())
    return FastAdam(params, lr)


class _Buffer:
    """Per-step metric tensors kept on the device until a flush."""

    def __init__(self):
        self.names: list[str] | None = None
        self.steps: list[int] = []
        self.values: list[torch.Tensor] = []

    def add(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        if self.names is None:
            self.names = list(terms)
        self.add_row(step, self.names, torch.stack([terms[n].float().reshape(()) for n in self.names]))

    def add_row(self, step: int, names: list[str], row: torch.Tensor) -> None:
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


def train(
    cfg: RunConfig,
    sink: MetricSink,
    *,
    workdir: Path | str | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
    progress: Callable[[int, int, dict], None] | None = None,
) -> TrainResult:
    """Train `cfg`, streaming metrics to `sink`; checkpoints go to `workdir` when given."""
    preflight(cfg)  # what would fail after training started (data size, device, seeds) fails before step 1
    setup = build(cfg)
    set_cpu_threads(setup.device, cfg.train.threads, setup.model, cfg.train.batch_size)
    opt = make_optimizer(setup, cfg.train.lr)
    gen = torch.Generator(device=setup.device).manual_seed(cfg.train.seed)
    workdir = Path(workdir) if workdir is not None else None
    start = 0
    saved = resume_states(workdir) if resume and workdir is not None else {}
    if saved:
        start = load_checkpoint(saved[max(saved)], setup, opt, gen)
        sink.truncate(start)
    loop = _Loop(cfg, setup, opt, gen, sink, workdir, should_stop or (lambda: False), progress)
    with flushed_denormals():
        return loop.run(start)


class _Loop:
    """The state of one training run between flushes."""

    def __init__(self, cfg, setup, opt, gen, sink, workdir, should_stop, progress):
        self.cfg, self.s, self.opt, self.gen, self.sink = cfg, setup, opt, gen, sink
        self.workdir, self.should_stop, self.progress = workdir, should_stop, progress
        dtype = getattr(torch, cfg.train.dtype)
        self.x = torch.as_tensor(setup.data.x_train, device=setup.device, dtype=dtype)  # (N, *shape)
        self.x_eval = torch.as_tensor(setup.data.x_eval, device=setup.device, dtype=dtype)
        self.buffer, self.last = _Buffer(), {}
        self.noise: torch.Generator | None = None  # None: the default RNG (solo); a batch member's own stream
        self.saved_at = clock()  # when the last checkpoint was saved
        self.compiled = maybe_compile(setup.model, cfg.train.compile, setup.device)
        self.backprop = self._pick_backprop()

    def _pick_backprop(self) -> Callable[[torch.Tensor, int], Losses]:
        """What computes a batch's losses and gradients: compiled nets, the hand-derived backward
        pass (`vaeviz.analytic`) where it applies, or autograd."""
        if self.compiled is not None:
            return self._compiled_step
        if self.cfg.train.backward == "auto" and analytic.supports(self.s.model, self.s.objective):
            return analytic.AnalyticStep(self.s.model, self.s.objective)
        return self._forward_backward

    def step(self, t: int) -> None:
        idx = torch.randint(0, self.x.shape[0], (self.cfg.train.batch_size,), generator=self.gen, device=self.x.device)
        x = self.x.index_select(0, idx)
        losses = self.backprop(x, t)
        self.opt.update()
        self.s.objective.after_step(losses, t)
        self.buffer.add(t, losses.terms)

    def _forward_backward(self, x: torch.Tensor, t: int) -> Losses:
        losses = self.s.objective(self.s.model, x, t)
        self.opt.clear_grads()
        losses.loss.backward()
        return losses

    def _compiled_step(self, x: torch.Tensor, t: int) -> Losses:
        """Forward and backward through the compiled networks; a first step that fails is redone
        as with compile off (objective state restored first) and the run goes on that way."""
        state = None if self.compiled.ready else copy.deepcopy(self.s.objective.state_dict())
        try:
            with self.compiled.installed():
                losses = self._forward_backward(x, t)
        except Exception as exc:  # noqa: BLE001 - any compiler failure; a real error recurs eagerly
            if state is None:
                raise
            log.warning("torch.compile failed (%s: %s); training eagerly", type(exc).__name__, exc)
            self.s.objective.load_state_dict(state)
            self.compiled = None
            self.backprop = self._pick_backprop()  # what the run would use with compile off
            return self.backprop(x, t)
        self.compiled.ready = True
        return losses

    def run(self, start: int) -> TrainResult:
        tc = self.cfg.train
        if start == 0:
            self.evaluate(0)
        last_flush = begin = time.perf_counter()
        self.saved_at = clock()
        paused = 0.0  # time spent evaluating and checkpointing
        for t in range(start + 1, tc.steps + 1):
            self.step(t)
            evaluate = t % tc.eval_every == 0 or t == tc.steps
            save = checkpoint_due(tc, t, None if self.workdir is None else self.saved_at)
            due = len(self.buffer.steps) >= MAX_BUFFER or time.perf_counter() - last_flush > FLUSH_SECONDS
            if evaluate or save or due:
                self.flush(t)
                last_flush = time.perf_counter()
            if evaluate:
                self.evaluate(t)
            if save:
                self.checkpoint(t, weights=save == "steps")
            if evaluate or save:
                paused += time.perf_counter() - last_flush
        return TrainResult(tc.steps, self.last, str(self.s.device), time.perf_counter() - begin - paused)

    def flush(self, t: int) -> None:
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
        metrics = evaluate(self.s.model, self.s.objective, self.x_eval, seed=self.cfg.train.seed * 1_000_003 + t)
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
        self.saved_at = clock()
        if t == self.cfg.train.steps:  # the ex-post samplers of the final model are saved with the run
            fitted_samplers(self.s.model, self.s.data.x_train, self.workdir, t, seed=self.cfg.train.seed)


def checkpoint_due(tc, t: int, saved_at: float | None, seconds: float | None = None) -> str | None:
    """Whether step t ends with a checkpoint: "steps" at every `checkpoint_every`-th step and the last one,
    "time" once `seconds` (default `checkpoint_seconds`, 0: never) have passed since the last save at
    `saved_at` (None: no time-based checkpoints), else None."""
    if t % tc.checkpoint_every == 0 or t == tc.steps:
        return "steps"
    seconds = tc.checkpoint_seconds if seconds is None else seconds
    if saved_at is not None and seconds > 0 and clock() - saved_at >= seconds:
        return "time"
    return None


def save_checkpoint(workdir: Path, step: int, setup: Setup, opt, gen: torch.Generator,
                    noise: torch.Generator | None = None, *, weights: bool = True) -> None:
    """The full state for resume (checkpoint.pt; the one it replaces becomes checkpoint.prev.pt) and, with
    `weights`, the weights at this step (checkpoints/step_*.pt). `noise`: a batch member's noise stream."""
    state = {"model": setup.model.state_dict(), "objective": setup.objective.state_dict(), "step": step}
    (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    if weights:
        _atomic_save(state, workdir / "checkpoints" / f"step_{step:08d}.pt")
    full = {**state, "opt": opt.state_dict(), "gen": gen.get_state(), **_noise_state(setup.device, noise)}
    latest, previous = (workdir / name for name in RESUME_FILES)
    tmp = latest.with_suffix(".tmp")
    torch.save(full, tmp)
    if latest.exists():
        os.replace(latest, previous)
    os.replace(tmp, latest)


def _noise_state(device: torch.device, noise: torch.Generator | None) -> dict[str, torch.Tensor]:
    """The noise stream's state as a solo run's default RNGs: "rng" (CPU) and, on CUDA, "device_rng".
    A batch member's own stream (`noise`) takes the place of its device's default RNG."""
    state = {"rng": noise.get_state() if noise is not None and device.type == "cpu" else torch.get_rng_state()}
    if device.type == "cuda":
        state["device_rng"] = noise.get_state() if noise is not None else torch.cuda.get_rng_state(device)
    return state


def _restore_noise(state: dict, device: torch.device, noise: torch.Generator | None) -> None:
    """The inverse of `_noise_state`, into the default RNGs or into a batch member's `noise`."""
    if noise is not None:
        key = "rng" if device.type == "cpu" else "device_rng"
        if key in state:
            noise.set_state(state[key].cpu())
        return
    torch.set_rng_state(state["rng"].cpu())
    if device.type == "cuda" and "device_rng" in state:
        torch.cuda.set_rng_state(state["device_rng"].cpu(), device)


def resume_states(workdir: Path | str) -> dict[int, Path]:
    """A run folder's saved resume states by step: the latest and the one before it (either may be missing)."""
    out = {}
    for path in (Path(workdir) / name for name in reversed(RESUME_FILES)):  # the latest wins a tie
        try:
            out[int(torch.load(path, mmap=True, weights_only=True, map_location="cpu")["step"])] = path
        except FileNotFoundError:
            continue
    return out


def has_resume_state(workdir: Path | str) -> bool:
    return any((Path(workdir) / name).exists() for name in RESUME_FILES)


def discard_resume_state(workdir: Path | str) -> None:
    """Forget an earlier attempt's resume states (a fresh start)."""
    for name in RESUME_FILES:
        (Path(workdir) / name).unlink(missing_ok=True)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, setup: Setup, opt=None, gen: torch.Generator | None = None,
                    noise: torch.Generator | None = None) -> int:
    """Restore a checkpoint (weights only, or the full training state); returns its step."""
    state = torch.load(path, map_location=setup.device, weights_only=True)
    setup.model.load_state_dict(state["model"])
    setup.objective.load_state_dict(state["objective"])
    if opt is not None and "opt" in state:
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"].cpu())
        _restore_noise(state, setup.device, noise)
    return int(state["step"])


def checkpoint_steps(workdir: Path) -> list[int]:
    """Steps with saved weights, ascending."""
    return sorted(int(p.stem.split("_")[1]) for p in (Path(workdir) / "checkpoints").glob("step_*.pt"))


def load_run(cfg: RunConfig, workdir: Path | str, step: int | None = None, device: str = "cpu") -> tuple[Setup, int]:
    """Rebuild a run's data, model and objective from its artifact folder at `step` (default: the last)."""
    setup = build(cfg, torch.device(device))
    steps = checkpoint_steps(Path(workdir))
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {workdir}")
    chosen = max([s for s in steps if step is None or s <= step] or steps[:1])
    load_checkpoint(Path(workdir) / "checkpoints" / f"step_{chosen:08d}.pt", setup)
    setup.model.eval()
    return setup, chosen
