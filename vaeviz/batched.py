"""Batched comparisons: K runs that share data and network shape, trained as one stacked model.

The K encoders (and decoders) are stacked parameter-wise (`torch.func.stack_module_state`) and
called once through `vmap(functional_call)`, so every layer is one batched matmul over K (plain
MLPs are stacked as (K, in, out) weights and run through `baddbmm`). The rest stays per run:
each run keeps its own minibatch generator, its own noise stream (a generator in the state a solo
run's default RNG would have), its own objective and state, sink, evaluations and checkpoints.
Runs whose objectives share a `group_key` (VAE and β-VAE, by decoder) compute their losses in one
`group_loss` call on the stacked tensors, each with its own β_t and σ; the others one by one.
When every run fits `vaeviz.analytic` (MLP nets; VAE, β-VAE, closed-form σ-VAE or GECO), the stacked
step is its hand-derived backward pass over the (K, in, out) layers instead of autograd.
Adam is elementwise, so one fused Adam over the stacked tensors takes the same step each run
would take alone; a run trained inside a batch therefore follows its solo trajectory up to
matmul rounding. A run that diverges or is cancelled drops
out of the summed loss while the others go on.

Checkpoints come at shared boundaries (by steps or by time, as in `vaeviz.train`), each run saving
its own resume state with its own noise stream. `resume=True` restarts every run from the latest
step all of them saved and rebuilds the stacked weights and Adam state from theirs, so a batch
resumed whole writes the streams it would have written uninterrupted.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.func import functional_call, stack_module_state, vmap

from vaeviz import analytic
from vaeviz import train as trainer  # its `clock`, which tests may replace
from vaeviz.config import ConfigError, RunConfig
from vaeviz.distributions import Posterior
from vaeviz.nets import DecoderOut, GaussianHead, MLPDecoder, MLPEncoder
from vaeviz.objectives.base import Losses, Objective, Pass
from vaeviz.optim import FastAdam
from vaeviz.runtime import flushed_denormals, set_cpu_threads
from vaeviz.train import (
    FLUSH_SECONDS,
    Cancelled,
    Diverged,
    TrainResult,
    _Loop,
    build,
    checkpoint_due,
    discard_resume_state,
    load_checkpoint,
    make_optimizer,
    resume_states,
)

SHARED = ("data", "model", "train.steps", "train.batch_size", "train.lr", "train.device", "train.eval_every",
          "train.checkpoint_every")


def check_batchable(cfgs: list[RunConfig]) -> None:
    """K ≥ 1 runs can train batched when they share data, network and schedule."""
    if not cfgs:
        raise ConfigError("a batched comparison needs at least one run")
    first = cfgs[0].to_dict()
    for cfg in cfgs[1:]:
        d = cfg.to_dict()
        for key in SHARED:
            section, _, leaf = key.partition(".")
            a, b = (first[section], d[section]) if not leaf else (first[section][leaf], d[section][leaf])
            if a != b:
                raise ConfigError(f"runs in one batch must share '{key}': {a!r} != {b!r}")


class Stacked:
    """K modules of one architecture with stacked parameters (leaves of shape (K, ...))."""

    def __init__(self, modules: list[torch.nn.Module], flatten: Callable):
        self.params, self.buffers = stack_module_state(modules)
        self.base = copy.deepcopy(modules[0]).to("meta")
        self.flatten = flatten

    def __call__(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        def one(params, buffers, x):
            return self.flatten(functional_call(self.base, (params, buffers), (x,)))

        return vmap(one)(self.params, self.buffers, inputs)

    def member(self, name: str, stacked: torch.Tensor, k: int) -> torch.Tensor:
        """Run k's slice of a stacked tensor (a parameter or its Adam moment), in the module's layout."""
        return stacked[k]


class StackedMLP:
    """K MLP encoders or decoders (`vaeviz.nets.MLPEncoder`/`MLPDecoder`) as one chain of batched
    matmuls: each linear layer's weights are one (K, in, out) leaf and its bias one (K, 1, out) leaf,
    so a layer is a single `baddbmm` and its backward needs no transposed copies."""

    def __init__(self, modules: list[torch.nn.Module], flatten: Callable):
        self.first, self.flatten = modules[0], flatten
        linears = [n for n, m in self.first.named_modules() if isinstance(m, torch.nn.Linear)]
        self.params = {}
        for name in linears:
            layers = [m.get_submodule(name) for m in modules]
            self.params[f"{name}.weight"] = torch.stack([m.weight.detach().T for m in layers]).requires_grad_()
            self.params[f"{name}.bias"] = torch.stack([m.bias.detach()[None] for m in layers]).requires_grad_()
        self.body = [name for name in linears if name.startswith("body.")]

    def _linear(self, name: str, h: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.params[f"{name}.bias"], h, self.params[f"{name}.weight"])  # (K, B, out)

    def __call__(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = inputs.flatten(2)  # (K, B, in)
        for name in self.body:
            h = torch.relu(self._linear(name, h))
        if hasattr(self.first, "head"):  # an encoder: the Gaussian head splits (K, B, L + E)
            return self.flatten(self.first.head.posterior(self._linear("head.out", h)))
        log_sigma = self._linear("log_sigma", h) if self.first.log_sigma is not None else None
        return self.flatten(DecoderOut(self._linear("out", h), log_sigma))

    def member(self, name: str, stacked: torch.Tensor, k: int) -> torch.Tensor:
        return stacked[k].T if name.endswith("weight") else stacked[k, 0]

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of the body's layers and the mean head, in order (`vaeviz.analytic`)."""
        names = [*self.body, "head.out" if hasattr(self.first, "head") else "out"]
        return [(self.params[f"{n}.weight"], self.params[f"{n}.bias"]) for n in names]

    @staticmethod
    def fits(modules: list[torch.nn.Module]) -> bool:
        """Plain MLP encoders/decoders (no spectral norm), as `vaeviz.nets` builds them."""
        plain = (torch.nn.Linear, torch.nn.ReLU, torch.nn.Sequential, MLPEncoder, MLPDecoder, GaussianHead)
        return (all(type(m) in plain for mod in modules for m in mod.modules())
                and isinstance(modules[0], (MLPEncoder, MLPDecoder)))


def _stack(modules: list[torch.nn.Module], flatten: Callable) -> Stacked | StackedMLP:
    """Batched matmuls for plain MLPs, `vmap` over the module for anything else (conv nets)."""
    return StackedMLP(modules, flatten) if StackedMLP.fits(modules) else Stacked(modules, flatten)


def _posterior_tensors(q: Posterior) -> tuple[torch.Tensor, ...]:
    return tuple(t for t in (q.mu, q.logvar, q.scale_tril) if t is not None)


def _decoder_tensors(out: DecoderOut) -> tuple[torch.Tensor, ...]:
    return (out.logits,) if out.log_sigma is None else (out.logits, out.log_sigma)


def _posterior(kind: str, parts: tuple[torch.Tensor, ...]) -> Posterior:
    """The posterior held by `parts` (mu, then logvar or scale_tril), for any leading dims."""
    if kind == "diag":
        return Posterior(parts[0], logvar=parts[1])
    if kind == "full":
        return Posterior(parts[0], scale_tril=parts[1])
    return Posterior(parts[0])


def _solo_noise(device: torch.device) -> torch.Generator | None:
    """A generator in the state the device's default RNG has now: the stream a solo run of the
    member just built would draw its reparameterisation noise from (None where not supported)."""
    if device.type == "cuda":
        source = torch.cuda.default_generators[device.index or torch.cuda.current_device()]
    elif device.type == "cpu":
        source = torch.default_generator
    else:
        return None
    gen = torch.Generator(device=device)
    gen.set_state(source.get_state())
    return gen


class BatchedTrainer:
    """Train K compatible runs as one stacked model; each run streams to its own sink."""

    def __init__(self, cfgs: list[RunConfig], sinks: list, workdirs: list[Path | None] | None = None,
                 should_stop: list[Callable[[], bool]] | None = None, resume: bool = False):
        check_batchable(cfgs)
        workdirs = workdirs or [None] * len(cfgs)
        should_stop = should_stop or [lambda: False] * len(cfgs)
        self.loops, self.noise = [], []
        for cfg, sink, wd, stop in zip(cfgs, sinks, workdirs, should_stop):
            setup = build(cfg)
            if setup.objective.needs_model or setup.objective.net_spec().spectral_norm:
                raise ConfigError(f"objective '{cfg.objective.name}' with these knobs cannot train batched")
            self.noise.append(_solo_noise(setup.device))
            gen = torch.Generator(device=setup.device).manual_seed(cfg.train.seed)
            wd = Path(wd) if wd is not None else None
            self.loops.append(_Loop(cfg, setup, make_optimizer(setup, cfg.train.lr), gen, sink, wd, stop, None))
            self.loops[-1].noise = self.noise[-1]
        self.start = self._resume() if resume else 0  # before stacking: the stacks copy the runs' weights
        specs = {lp.s.objective.net_spec() for lp in self.loops}
        if len(specs) > 1:
            raise ConfigError("runs in one batch must need the same network (e.g. no RAE beside a VAE)")
        tc, first = cfgs[0].train, self.loops[0].s  # the threads for K times a member's work:
        set_cpu_threads(first.device, tc.threads, first.model, len(cfgs) * tc.batch_size)
        self.group_keys = [lp.s.objective.group_key() for lp in self.loops]  # fixed by each run's config
        self.kind = self._posterior_kind()
        self.enc = _stack([lp.s.model.encoder for lp in self.loops], _posterior_tensors)
        self.dec = _stack([lp.s.model.decoder for lp in self.loops], _decoder_tensors)
        self.opt = self._optimizer(cfgs[0].train.lr)
        if self.start:
            self._stack_adam_state()
        self.analytic = self._uses_analytic()  # then the stacked (weight, bias) chains it backpropagates through:
        self.chains = (self.enc.layers(), self.dec.layers()) if self.analytic else None
        self.stateful = {k for k, lp in enumerate(self.loops)  # runs with an `after_step` (GECO's λ)
                         if type(lp.s.objective).after_step is not Objective.after_step}
        self.outcomes: list[TrainResult | Exception | None] = [None] * len(cfgs)

    def _resume(self) -> int:
        """Restore every run's resume state at the latest step all of them saved; that step (0: none)."""
        if any(lp.workdir is None for lp in self.loops):
            return 0
        saved = [resume_states(lp.workdir) for lp in self.loops]
        common = set.intersection(*(set(s) for s in saved))
        start = max(common, default=0)
        for lp, noise, states in zip(self.loops, self.noise, saved):
            if start:
                load_checkpoint(states[start], lp.s, lp.opt, lp.gen, noise)
            else:  # a fresh start: step 0's rows are written again
                discard_resume_state(lp.workdir)
            lp.sink.truncate(start)
        return start

    def _stack_adam_state(self) -> None:
        """The stacked optimiser's state from the runs' own (the inverse of `sync_member`)."""
        with torch.no_grad():
            for k, lp in enumerate(self.loops):
                for own, leaf, where in self._pairs(k):
                    saved = lp.opt.state.get(own)
                    if not saved:
                        continue
                    state = self.opt.state.setdefault(leaf, {})
                    for name, value in saved.items():
                        if where is None or value.dim() == 0:  # an objective's own parameter, Adam's step
                            state[name] = value.clone()
                            continue
                        if name not in state:
                            state[name] = torch.zeros_like(leaf)
                        _part(state[name], where).copy_(value)

    def _posterior_kind(self) -> str:
        spec, cfg = self.loops[0].s.objective.net_spec(), self.loops[0].cfg
        return cfg.model.covariance if spec.stochastic else "deterministic"

    def _optimizer(self, lr: float) -> FastAdam:
        params = list(self.enc.params.values()) + list(self.dec.params.values())
        params += [p for lp in self.loops for p in lp.s.objective.parameters()]
        return FastAdam(params, lr)

    @property
    def live(self) -> list[int]:
        return [k for k, o in enumerate(self.outcomes) if o is None]

    def _uses_analytic(self) -> bool:
        """Every run fits `vaeviz.analytic` (and asks for it), and both nets are stacked MLPs."""
        return (all(lp.cfg.train.backward == "auto" and analytic.supports(lp.s.model, lp.s.objective)
                    for lp in self.loops) and isinstance(self.enc, StackedMLP) and isinstance(self.dec, StackedMLP))

    def step(self, t: int) -> None:
        """One optimiser step of every live run."""
        x = torch.stack([lp.x.index_select(0, torch.randint(0, lp.x.shape[0], (lp.cfg.train.batch_size,),
                                                            generator=lp.gen, device=lp.x.device))
                         for lp in self.loops])  # (K, B, *shape)
        if self.analytic:
            return self._analytic_step(x, t)
        q_parts = self.enc(x)  # each (K, B, ...)
        z = self._sample(_posterior(self.kind, q_parts))  # (K, B, L)
        out = self.dec(z)  # each (K, B, D)
        x = x.flatten(2)  # (K, B, D)
        groups = self._groups()
        if any(len(ks) == 1 for ks in groups):  # one unbind per tensor, not a select (and its backward) per run
            cols = (x.unbind(0), [part.unbind(0) for part in q_parts], z.unbind(0), [o.unbind(0) for o in out])
        losses, per_run, rows = [], {}, {}
        for ks in groups:
            if len(ks) == 1:
                k = ks[0]
                per_run[k] = self._own_loss(k, cols, t)
                losses.append(per_run[k].loss[None])
                continue
            loss, table, names = self._group_loss(ks, x, q_parts, z, out, t)
            losses.append(loss)
            rows.update({k: (names, row) for k, row in zip(ks, table.unbind(0))})
        self.opt.clear_grads()
        torch.cat(losses).sum().backward()
        self.opt.update()
        for k, run_losses in per_run.items():
            self.loops[k].s.objective.after_step(run_losses, t)
            self.loops[k].buffer.add(t, run_losses.terms)
        for k, (names, row) in rows.items():
            self.loops[k].buffer.add_row(t, names, row)

    def _analytic_step(self, x: torch.Tensor, t: int) -> None:
        """The step with the hand-derived backward pass over the stacked layers (`vaeviz.analytic`)."""
        head = self.loops[0].s.model.encoder.head
        rows = analytic.backprop(*self.chains, head.posterior, x.flatten(2), self._noise,
                                 lambda p: self._loss_and_grads(p, t))
        self.opt.update()
        for k, (names, row) in rows.items():
            if k in self.stateful:
                self.loops[k].s.objective.after_step(Losses(row[0], dict(zip(names, row.unbind()))), t)
            self.loops[k].buffer.add_row(t, names, row)

    def _loss_and_grads(self, p: Pass, t: int) -> tuple[dict, tuple[torch.Tensor, ...]]:
        """Each group's terms and output gradients; rows of runs that have ended get zero gradients."""
        groups, rows = self._groups(), {}
        whole = len(groups) == 1 and len(groups[0]) == len(self.loops)
        grads = None if whole else tuple(torch.zeros_like(v) for v in (p.out.logits, p.q.mu, p.q.logvar))
        for ks in groups:
            objectives = [self.loops[k].s.objective for k in ks]
            _, table, names, part = type(objectives[0]).group_loss_and_grads(objectives, self._rows(ks, p), t)
            rows.update({k: (names, row) for k, row in zip(ks, table.unbind(0))})
            if whole:
                grads = part
            else:
                where = _where(ks, p.x.device)
                for full, g in zip(grads, part):
                    full[where] = g
        return rows, grads

    def _rows(self, ks: list[int], p: Pass) -> Pass:
        """The rows `ks` of a stacked pass (the pass itself when they are all of them)."""
        if ks == list(range(len(self.loops))):
            return p
        rows = _where(ks, p.x.device)
        q = Posterior(*(None if v is None else v[rows] for v in (p.q.mu, p.q.logvar, p.q.scale_tril)))
        return Pass(p.x[rows], q, p.z[rows], DecoderOut(*(None if v is None else v[rows] for v in
                                                         (p.out.logits, p.out.log_sigma))))

    def _groups(self) -> list[list[int]]:
        """The live runs, grouped by their objectives' `group_key` (None: a group of its own)."""
        groups: dict = {}
        for k in self.live:
            key = self.group_keys[k]
            groups.setdefault(("own", k) if key is None else key, []).append(k)
        return list(groups.values())

    def _own_loss(self, k: int, cols: tuple, t: int) -> Losses:
        """Run k's loss from its slices (x, posterior parts, z, decoder outputs) of the stacked tensors."""
        xs, q_cols, zs, out_cols = cols
        q = _posterior(self.kind, tuple(c[k] for c in q_cols))
        p = Pass(xs[k], q, zs[k], DecoderOut(out_cols[0][k], out_cols[1][k] if len(out_cols) > 1 else None))
        return self.loops[k].s.objective.loss(p, t, None)

    def _group_loss(self, ks: list[int], x, q_parts, z, out, t: int):
        """The group's losses in one call on its rows of the stacked tensors."""
        p = Pass(x, _posterior(self.kind, q_parts), z, DecoderOut(out[0], out[1] if len(out) > 1 else None))
        objectives = [self.loops[k].s.objective for k in ks]
        return type(objectives[0]).group_loss(objectives, self._rows(ks, p), t)

    def _sample(self, q: Posterior) -> torch.Tensor:
        """z for every member at once, member k's noise drawn from its own solo stream: (K, B, L)."""
        if q.deterministic:
            return q.rsample()
        return q.rsample(eps=self._noise(q.mu))

    def _noise(self, mu: torch.Tensor) -> torch.Tensor:
        """Standard-normal noise like μ (K, B, L), member k's rows from its own solo stream."""
        return torch.stack([torch.randn(mu.shape[1:], generator=g, device=mu.device, dtype=mu.dtype)
                            for g in self.noise])

    def _pairs(self, k: int) -> list[tuple[torch.Tensor, torch.Tensor, tuple | None]]:
        """(run k's own parameter, the optimised tensor holding it, (stack, name, k) to slice it, or None
        for an objective's own parameter, which is optimised as it is)."""
        model, pairs = self.loops[k].s.model, []
        for module, stack in ((model.encoder, self.enc), (model.decoder, self.dec)):
            pairs += [(p, stack.params[name], (stack, name, k)) for name, p in module.named_parameters()]
        return pairs + [(p, p, None) for p in self.loops[k].s.objective.parameters()]

    def sync_member(self, k: int) -> None:
        """Copy run k's slice of the stacked weights and Adam state into its own model and optimiser,
        so that its evaluations and checkpoints are exactly those of a solo run."""
        lp = self.loops[k]
        lp.opt.state.clear()
        with torch.no_grad():
            for own, leaf, where in self._pairs(k):
                own.copy_(_part(leaf, where))
                state = self.opt.state.get(leaf)
                if state:
                    lp.opt.state[own] = {n: _part(v, where).clone(memory_format=torch.contiguous_format)
                                         for n, v in state.items()}

    def run(self) -> list[TrainResult | Exception]:
        """Train every run to the end (or its own divergence/cancellation)."""
        with flushed_denormals():
            return self._run()

    def _run(self) -> list[TrainResult | Exception]:
        tc = self.loops[0].cfg.train
        if self.start == 0:
            for k in self.live:
                self._guard(k, lambda lp: lp.evaluate(0))
        timed = any(lp.workdir is not None for lp in self.loops)
        every_s = min(lp.cfg.train.checkpoint_seconds for lp in self.loops)
        last = begin = time.perf_counter()
        saved_at = trainer.clock()
        paused = 0.0  # time spent evaluating and checkpointing, left out of `seconds` as in a solo run
        for t in range(self.start + 1, tc.steps + 1):
            self.step(t)
            ev = t % tc.eval_every == 0 or t == tc.steps
            ck = checkpoint_due(tc, t, saved_at if timed else None, every_s)
            if ev or ck or time.perf_counter() - last > FLUSH_SECONDS:
                paused += self._boundary(t, ev, ck)
                last = time.perf_counter()
                saved_at = trainer.clock() if ck else saved_at
            if not self.live:
                break
        seconds = time.perf_counter() - begin - paused
        for k in self.live:
            self.outcomes[k] = TrainResult(tc.steps, self.loops[k].last, str(self.loops[k].s.device), seconds)
        return list(self.outcomes)

    def _boundary(self, t: int, evaluate: bool, save: str | None) -> float:
        """Flush every live run, then evaluate and checkpoint them where due (`save`: "steps" or "time",
        as `checkpoint_due` says): the seconds those took."""
        for k in self.live:
            if evaluate or save or self.loops[k].should_stop():
                self.sync_member(k)  # a cancelled run checkpoints its own current weights
            self._guard(k, lambda lp: lp.flush(t))
        begin = time.perf_counter()
        for k in self.live:
            if evaluate:
                self._guard(k, lambda lp: lp.evaluate(t))
            if save:
                self._guard(k, lambda lp: lp.checkpoint(t, weights=save == "steps"))
        return time.perf_counter() - begin

    def _guard(self, k: int, action: Callable) -> None:
        """Run `action` on run k unless it has ended; a divergence or cancellation ends that run only."""
        if self.outcomes[k] is None:
            try:
                action(self.loops[k])
            except (Diverged, Cancelled) as exc:
                self.outcomes[k] = exc


def _where(ks: list[int], device: torch.device) -> slice | torch.Tensor:
    """Rows `ks` of the run axis: a slice (a view, no copy) when they are consecutive, else an index."""
    if ks == list(range(ks[0], ks[-1] + 1)):
        return slice(ks[0], ks[-1] + 1)
    return torch.tensor(ks, device=device)


def _part(t: torch.Tensor, where: tuple | None) -> torch.Tensor:
    """One run's slice of a stacked tensor; scalars (Adam's step) and unstacked tensors as they are."""
    if where is None or t.dim() == 0:
        return t
    stack, name, k = where
    return stack.member(name, t, k)


def train_batched(cfgs: list[RunConfig], sinks: list, workdirs=None, should_stop=None, resume: bool = False) -> list:
    """Train K compatible runs as one batched model; returns each run's TrainResult or exception."""
    return BatchedTrainer(cfgs, sinks, workdirs, should_stop, resume).run()
