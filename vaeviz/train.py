"""The training loop: K ≥ 1 runs that share data and network shape trained together; a solo run is K = 1.

Each run (`vaeviz.member.Member`) keeps its own data, minibatch generator, noise stream, objective
and state, sink, evaluations and checkpoints; the networks of the K runs are computed together
(`vaeviz.stacking`: a solo run's own modules, or K stacked ones). One step:
  1. every run draws its minibatch (B, *shape) → x (K, B, *shape) for K > 1, with its labels (B,) → (K, B)
     when an objective of the batch reads them (`Objective.needs_labels`, e.g. GECO's cla constraint);
  2. `backward`: the gradients of every run's loss, by autograd or, where every run fits it, by the
     hand-derived pass of `vaeviz.analytic` (MLP nets, objectives with a registered output gradient);
     runs whose objectives share a `group_key` compute `Objective.loss` in one call;
  3. one fused Adam update over all trained tensors (`vaeviz.optim`);
  4. each run's terms go to its metric buffer, after its objective's `after_step` (GECO's λ).
Steps are numbered 1..steps. At a boundary — at least every `FLUSH_SECONDS`, when a buffer holds
`MAX_BUFFER` steps, every `eval_every` steps and at the end, and at checkpoints (every
`checkpoint_every` steps or `checkpoint_seconds`, whichever first) — every run flushes its metrics
(checked for NaN/inf), then evaluates and checkpoints where due. A run that diverges or is cancelled
ends alone; the others go on. Evaluation runs under its own RNG and saving changes nothing, so the
same config and seed give the same metric stream, alone or in a batch (up to matmul rounding), and
a resumed run the stream of an uninterrupted one. The runtime choices (threads, compile, backward
kind) are made once, by `vaeviz.runtime.plan`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vaeviz import analytic, runtime
from vaeviz.build import build
from vaeviz.checkpoint import discard_resume_state, load_checkpoint, resume_states
from vaeviz.config import ConfigError, RunConfig
from vaeviz.control import Cancelled, Diverged
from vaeviz.member import Member, MetricSink, TrainResult
from vaeviz.objectives.base import Losses, Objective, Pass
from vaeviz.optim import FastAdam
from vaeviz.output_grads import output_grads
from vaeviz.preflight import preflight
from vaeviz.stacking import SoloNets, StackedNets, check_batchable, rows

FLUSH_SECONDS = 0.5
MAX_BUFFER = 2000
clock = time.monotonic  # what time-based checkpoints are timed with (tests replace it)
log = logging.getLogger("vaeviz")
Results = list[tuple[list[int], Losses]]  # each group's runs and their losses


class Trainer:
    """Train K ≥ 1 compatible runs together; each run streams to its own sink."""

    def __init__(self, cfgs: list[RunConfig], sinks: list[MetricSink], workdirs: list[Path | None] | None = None,
                 should_stop: list[Callable[[], bool]] | None = None, *, resume: bool = False,
                 progress: Callable[[int, int, dict], None] | None = None):
        check_batchable(cfgs)
        workdirs, should_stop = workdirs or [None] * len(cfgs), should_stop or [None] * len(cfgs)
        self.members = [Member(cfg, build(cfg), sink, Path(wd) if wd is not None else None, stop,
                               progress if k == 0 else None)
                        for k, (cfg, sink, wd, stop) in enumerate(zip(cfgs, sinks, workdirs, should_stop))]
        self.start = self._resume() if resume else 0  # before stacking: the stacks copy the runs' weights
        self.nets = self._nets()
        self.opt = self.members[0].opt if len(cfgs) == 1 else FastAdam(self.nets.parameters(), cfgs[0].train.lr)
        if self.start:
            self.nets.from_members(self.opt, [m.opt for m in self.members])
        self.plan = runtime.plan(cfgs, [m.s for m in self.members], self.nets)
        self.keys = [m.s.objective.group_key() for m in self.members]  # fixed by each run's config
        self.labels = any(m.s.objective.needs_labels for m in self.members)  # the passes carry labels `Pass.y`
        self.stateful = {k for k, m in enumerate(self.members)  # runs with an `after_step` (GECO's λ)
                         if type(m.s.objective).after_step is not Objective.after_step}
        self.outcomes: list[TrainResult | Exception | None] = [None] * len(cfgs)
        self._grouped: dict[tuple[int, ...], tuple[Objective, Callable | None]] = {}

    @property
    def analytic(self) -> bool:
        """Whether steps take the hand-derived backward pass (`vaeviz.analytic`)."""
        return self.plan.analytic

    @property
    def live(self) -> list[int]:
        return [k for k, o in enumerate(self.outcomes) if o is None]

    def _nets(self) -> SoloNets | StackedNets:
        """A solo run's own networks, or the K runs' stacked (same network needed, no RAE regulariser)."""
        if len(self.members) == 1:
            return SoloNets(self.members[0].s.model)
        for m in self.members:
            if m.s.objective.needs_model or m.s.objective.net_spec().spectral_norm:
                raise ConfigError(f"objective '{m.cfg.objective.name}' with these knobs cannot train batched")
        if len({m.s.objective.net_spec() for m in self.members}) > 1:
            raise ConfigError("runs in one batch must need the same network (e.g. no RAE beside a VAE)")
        spec, cfg = self.members[0].s.objective.net_spec(), self.members[0].cfg
        kind = cfg.model.covariance if spec.stochastic else "deterministic"
        return StackedNets([m.s.model for m in self.members], [m.s.objective for m in self.members], kind)

    def _resume(self) -> int:
        """Restore every run's resume state at the latest step all of them saved; that step (0: none)."""
        if any(m.workdir is None for m in self.members):
            return 0
        saved = [resume_states(m.workdir) for m in self.members]
        start = max(set.intersection(*(set(s) for s in saved)), default=0)
        for m, states in zip(self.members, saved):
            if start:
                load_checkpoint(states[start], m.s, m.opt, m.gen, m.noise)
            else:  # a fresh start
                discard_resume_state(m.workdir)
            m.sink.truncate(start if start else -1)
        return start

    # ------------------------------------------------------------------ one step

    def step(self, t: int) -> None:
        """One optimiser step of every live run."""
        x, y = self._batch()
        results = self.backward(x, t, y)
        self.opt.update()
        self._log(results, t)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every run's minibatch x, (B, *shape) or (K, B, *shape), and its labels (B,) or (K, B) where the
        passes carry them (else None)."""
        if self.nets.lead == 0:
            return self.members[0].batch(self.labels)
        xs, ys = zip(*(m.batch(self.labels) for m in self.members))
        return torch.stack(xs), torch.stack(ys) if self.labels else None

    def backward(self, x: torch.Tensor, t: int, y: torch.Tensor | None = None) -> Results:
        """Each group's losses on batch x (labels y) at step t, with the gradient of their sum in every
        trained `.grad`."""
        if self.plan.analytic:
            return analytic.backprop(*self.nets.layers, self.members[0].s.model.encoder.head.posterior,
                                     x.flatten(self.nets.lead + 1), self._noise,
                                     lambda p: self._losses_and_grads(dataclasses.replace(p, y=y), t))
        if self.plan.compiled is not None:
            return self._compiled_backward(x, t, y)
        return self._autograd_backward(x, t, y)

    def _autograd_backward(self, x: torch.Tensor, t: int, y: torch.Tensor | None = None) -> Results:
        q = self.nets.encode(x)
        z = q.rsample(eps=None if q.deterministic else self._noise(q.mu))
        p = Pass(x.flatten(self.nets.lead + 1), q, z, self.nets.decode(z), y)
        model = self.members[0].s.model if self.nets.lead == 0 else None  # for RAE's regularisers
        results = [(ks, self._objective(ks)[0].loss(self._rows(ks, p), t, model)) for ks in self._groups()]
        self.opt.clear_grads()
        losses = [r.loss.reshape(-1) for _, r in results]
        (losses[0] if len(losses) == 1 else torch.cat(losses)).sum().backward()
        return results

    def _compiled_backward(self, x: torch.Tensor, t: int, y: torch.Tensor | None) -> Results:
        """Through the compiled networks (one run); a first step that fails is redone as with compile
        off (objective state restored first) and the run goes on that way."""
        objective = self.members[0].s.objective
        state = None if self.plan.compiled.ready else copy.deepcopy(objective.state_dict())
        try:
            with self.plan.compiled.installed():
                results = self._autograd_backward(x, t, y)
        except Exception as exc:  # noqa: BLE001 - any compiler failure; a real error recurs eagerly
            if state is None:
                raise
            log.warning("torch.compile failed (%s: %s); training eagerly", type(exc).__name__, exc)
            objective.load_state_dict(state)
            self.plan = self.plan.without_compile()
            return self.backward(x, t, y)
        self.plan.compiled.ready = True
        return results

    def _losses_and_grads(self, p: Pass, t: int) -> tuple[Results, tuple[torch.Tensor, ...]]:
        """For the hand-derived pass: each group's losses (`Objective.loss`) and output gradients
        (`vaeviz.output_grads`); rows of runs that have ended get zero gradients."""
        groups, results = self._groups(), []
        whole = len(groups) == 1 and len(groups[0]) == len(self.members)
        grads = None if whole else tuple(torch.zeros_like(v) for v in (p.out.logits, p.q.mu, p.q.logvar))
        for ks in groups:
            (objective, grad_fn), part = self._objective(ks), self._rows(ks, p)
            losses = objective.loss(part, t)
            results.append((ks, losses))
            g = grad_fn(objective, part, losses, t)
            if whole:
                grads = g
            else:
                where = rows(ks, p.x.device)
                for full, piece in zip(grads, g):
                    full[where] = piece
        return results, grads

    def _log(self, results: Results, t: int) -> None:
        """Each run's terms into its buffer as one row, after its objective's `after_step` where it has one."""
        for ks, losses in results:
            names = list(losses.terms)
            table = torch.stack(list(losses.terms.values()), -1).view(len(ks), len(names))  # (K, T)
            for k, row in zip(ks, table.unbind(0)):
                if k in self.stateful:
                    self.members[k].s.objective.after_step(Losses(row[0], dict(zip(names, row.unbind()))), t)
                self.members[k].buffer.add(t, names, row)

    def _noise(self, mu: torch.Tensor) -> torch.Tensor:
        """Standard-normal noise like μ, each run's from its own stream: (B, L), or (K, B, L)."""
        draw = [torch.randn(mu.shape[self.nets.lead:], generator=self.members[k].noise, device=mu.device,
                            dtype=mu.dtype) for k in range(len(self.members))]
        return draw[0] if self.nets.lead == 0 else torch.stack(draw)

    def _groups(self) -> list[list[int]]:
        """The live runs, grouped by their objectives' `group_key` (None: a group of its own)."""
        groups: dict = {}
        for k in self.live:
            key = self.keys[k]
            groups.setdefault(("own", k) if key is None else key, []).append(k)
        return list(groups.values())

    def _objective(self, ks: list[int]) -> tuple[Objective, Callable | None]:
        """The objective computing the losses of runs `ks` (a run's own, or their `group`) and its
        registered output gradient."""
        key = tuple(ks)
        if key not in self._grouped:
            objectives = [self.members[k].s.objective for k in ks]
            objective = objectives[0] if len(ks) == 1 else type(objectives[0]).group(objectives)
            self._grouped[key] = objective, output_grads(objective)
        return self._grouped[key]

    def _rows(self, ks: list[int], p: Pass) -> Pass:
        """Runs `ks`' rows of the pass (one run's tensors without the run axis); the pass itself when
        it holds just them."""
        if self.nets.lead == 0 or len(ks) == len(self.members) > 1:
            return p
        where = rows(ks, p.x.device)
        q = type(p.q)(*(None if v is None else v[where] for v in (p.q.mu, p.q.logvar, p.q.scale_tril)))
        out = type(p.out)(*(None if v is None else v[where] for v in (p.out.logits, p.out.log_sigma)))
        return Pass(p.x[where], q, p.z[where], out, None if p.y is None else p.y[where])

    # ------------------------------------------------------------------ the loop

    def run(self) -> list[TrainResult | Exception]:
        """Train every run to the end (or its own divergence/cancellation): each run's result or exception."""
        with runtime.flushed_denormals():
            return self._run()

    def _run(self) -> list[TrainResult | Exception]:
        tc = self.members[0].cfg.train
        if self.start == 0:
            for k in self.live:
                self._guard(k, lambda m: m.evaluate(0))
        timed = any(m.workdir is not None for m in self.members)
        every_s = min(m.cfg.train.checkpoint_seconds for m in self.members)
        last = begin = time.perf_counter()
        saved_at, buffered, paused = clock(), 0, 0.0  # paused: evaluating and checkpointing, not in `seconds`
        for t in range(self.start + 1, tc.steps + 1):
            self.step(t)
            buffered += 1
            evaluate = t % tc.eval_every == 0 or t == tc.steps
            save = checkpoint_due(tc, t, saved_at if timed else None, every_s)
            if evaluate or save or buffered >= MAX_BUFFER or time.perf_counter() - last > FLUSH_SECONDS:
                paused += self._boundary(t, evaluate, save)
                last, buffered = time.perf_counter(), 0
                saved_at = clock() if save else saved_at
            if not self.live:
                break
        seconds = time.perf_counter() - begin - paused
        for k in self.live:
            self.outcomes[k] = TrainResult(tc.steps, self.members[k].last, str(self.members[k].s.device), seconds)
        return list(self.outcomes)

    def _boundary(self, t: int, evaluate: bool, save: str | None) -> float:
        """Flush every live run, then evaluate and checkpoint them where due (`save`: "steps" or "time",
        as `checkpoint_due` says): the seconds those took."""
        for k in self.live:
            m = self.members[k]
            if self.nets.lead and (evaluate or save or m.should_stop()):
                self.nets.to_member(k, self.opt, m.opt)  # a cancelled run checkpoints its own current weights
            self._guard(k, lambda m: m.flush(t))
        begin = time.perf_counter()
        for k in self.live:
            if evaluate:
                self._guard(k, lambda m: m.evaluate(t))
            if save:
                self._guard(k, lambda m: m.checkpoint(t, weights=save == "steps"))
        return time.perf_counter() - begin

    def _guard(self, k: int, action: Callable[[Member], None]) -> None:
        """Run `action` on run k unless it has ended; a divergence or cancellation ends that run only."""
        if self.outcomes[k] is None:
            try:
                action(self.members[k])
            except (Diverged, Cancelled) as exc:
                self.outcomes[k] = exc


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


def train(cfg: RunConfig, sink: MetricSink, *, workdir: Path | str | None = None,
          should_stop: Callable[[], bool] | None = None, resume: bool = False,
          progress: Callable[[int, int, dict], None] | None = None) -> TrainResult:
    """Train one run, streaming metrics to `sink`; checkpoints go to `workdir` when given. Raises
    Diverged or Cancelled when the run ends so."""
    preflight(cfg)  # what would fail after training started (data size, device, seeds) fails before step 1
    (outcome,) = Trainer([cfg], [sink], [workdir], [should_stop], resume=resume, progress=progress).run()
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def train_batched(cfgs: list[RunConfig], sinks: list[MetricSink], workdirs=None, should_stop=None,
                  resume: bool = False) -> list[TrainResult | Exception]:
    """Train K compatible runs together; returns each run's TrainResult or exception."""
    return Trainer(cfgs, sinks, workdirs, should_stop, resume=resume).run()
