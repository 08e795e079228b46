"""How K ≥ 1 runs that share data and network shape are computed together.

`SoloNets` (K = 1) calls the run's own encoder and decoder on (B, ...) tensors. `StackedNets`
(K > 1) stacks the K encoders (and decoders) parameter-wise and calls them once on (K, B, ...)
tensors: plain MLPs as (K, in, out) weights through `baddbmm`, anything else (conv nets) through
`vmap(functional_call)`. Adam is elementwise, so one fused Adam over the stacked tensors takes
the step each run would take alone; a run trained inside a batch follows its solo trajectory up
to matmul rounding. `to_member` copies run k's slice of the stacked weights and Adam state into
its own model and optimiser (for its evaluations and checkpoints); `from_members` is the inverse
(resume). Each run keeps its own noise stream (`noise_stream`): a generator in the state a solo
run's default RNG would have.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable

import torch
from torch.func import functional_call, stack_module_state, vmap

from vaeviz.analytic import Layer, linear_chain
from vaeviz.config import ConfigError, RunConfig
from vaeviz.distributions import Posterior
from vaeviz.nets import DecoderOut, GaussianHead, MLPDecoder, MLPEncoder, VAEModel
from vaeviz.optim import FastAdam

SHARED = ("data", "model", "train.steps", "train.batch_size", "train.lr", "train.device", "train.eval_every",
          "train.checkpoint_every", "train.dtype")


def shared_values(cfg: RunConfig) -> tuple:
    """The values of `SHARED` keys of a config, as JSON text each: runs with equal ones may train batched."""
    d = cfg.to_dict()
    parts = [d[section] if not leaf else d[section][leaf] for section, _, leaf in (k.partition(".") for k in SHARED)]
    return tuple(json.dumps(p, sort_keys=True) for p in parts)


def check_batchable(cfgs: list[RunConfig]) -> None:
    """K ≥ 1 runs can train batched when they share data, network and schedule."""
    if not cfgs:
        raise ConfigError("a batched comparison needs at least one run")
    first = shared_values(cfgs[0])
    for cfg in cfgs[1:]:
        for key, a, b in zip(SHARED, first, shared_values(cfg)):
            if a != b:
                raise ConfigError(f"runs in one batch must share '{key}': {a} != {b}")


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


class SoloNets:
    """One run's own networks (K = 1): tensors without a run axis, parameters optimised as they are."""

    lead = 0  # leading run axes of the tensors

    def __init__(self, model: VAEModel):
        self.model = model

    def encode(self, x: torch.Tensor) -> Posterior:
        return self.model.encode(x)

    def decode(self, z: torch.Tensor) -> DecoderOut:
        return self.model.decode(z)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    @functools.cached_property
    def layers(self) -> tuple[list[Layer], list[Layer]]:
        """(weight, bias) of the encoder's and the decoder's layers, for `vaeviz.analytic` (the tensors
        themselves, updated in place by the optimiser, so found once)."""
        enc, dec = self.model.encoder, self.model.decoder
        return ([(m.weight, m.bias) for m in [*linear_chain(enc.body), enc.head.out]],
                [(m.weight, m.bias) for m in [*linear_chain(dec.body), dec.out]])

    def plain_mlp(self) -> bool:
        return True

    def to_member(self, k: int, opt: FastAdam, own: FastAdam) -> None:
        """Nothing to copy: the run trains its own parameters."""

    def from_members(self, opt: FastAdam, owns: list[FastAdam]) -> None:
        """Nothing to copy: the run trains its own parameters."""


class StackedNets:
    """The encoders and decoders of K runs as one stacked model: (K, B, ...) tensors in and out."""

    lead = 1

    def __init__(self, models: list[VAEModel], objectives: list, kind: str):
        self.models, self.objectives, self.kind = models, objectives, kind
        self.enc = _stack([m.encoder for m in models], _posterior_tensors)
        self.dec = _stack([m.decoder for m in models], _decoder_tensors)

    def encode(self, x: torch.Tensor) -> Posterior:
        return _posterior(self.kind, self.enc(x))

    def decode(self, z: torch.Tensor) -> DecoderOut:
        out = self.dec(z)
        return DecoderOut(out[0], out[1] if len(out) > 1 else None)

    def parameters(self) -> list[torch.Tensor]:
        """The stacked weights, then each run's objective's own parameters (optimised as they are)."""
        return [*self.enc.params.values(), *self.dec.params.values(),
                *(p for o in self.objectives for p in o.parameters())]

    @functools.cached_property
    def layers(self) -> tuple[list[Layer], list[Layer]]:
        return self.enc.layers(), self.dec.layers()

    def plain_mlp(self) -> bool:
        return isinstance(self.enc, StackedMLP) and isinstance(self.dec, StackedMLP)

    def _pairs(self, k: int) -> list[tuple[torch.Tensor, torch.Tensor, tuple | None]]:
        """(run k's own parameter, the optimised tensor holding it, (stack, name, k) to slice it, or None
        for an objective's own parameter, which is optimised as it is)."""
        model, pairs = self.models[k], []
        for module, stack in ((model.encoder, self.enc), (model.decoder, self.dec)):
            pairs += [(p, stack.params[name], (stack, name, k)) for name, p in module.named_parameters()]
        return pairs + [(p, p, None) for p in self.objectives[k].parameters()]

    @torch.no_grad()
    def to_member(self, k: int, opt: FastAdam, own: FastAdam) -> None:
        """Copy run k's slice of the stacked weights and Adam state `opt` into its own model and
        optimiser `own`, so that its evaluations and checkpoints are exactly those of a solo run."""
        own.state.clear()
        for param, leaf, where in self._pairs(k):
            param.copy_(_part(leaf, where))
            state = opt.state.get(leaf)
            if state:
                own.state[param] = {n: _part(v, where).clone(memory_format=torch.contiguous_format)
                                    for n, v in state.items()}

    @torch.no_grad()
    def from_members(self, opt: FastAdam, owns: list[FastAdam]) -> None:
        """The stacked Adam state `opt` from the runs' own optimisers (the inverse of `to_member`)."""
        for k, own in enumerate(owns):
            for param, leaf, where in self._pairs(k):
                saved = own.state.get(param)
                if not saved:
                    continue
                state = opt.state.setdefault(leaf, {})
                for name, value in saved.items():
                    if where is None or value.dim() == 0:  # an objective's own parameter, Adam's step
                        state[name] = value.clone()
                        continue
                    if name not in state:
                        state[name] = torch.zeros_like(leaf)
                    _part(state[name], where).copy_(value)


def noise_stream(device: torch.device) -> torch.Generator | None:
    """A generator in the state the device's default RNG has now: the stream the run just built
    would draw its reparameterisation noise from alone (None on other devices: the default RNG)."""
    if device.type == "cuda":
        source = torch.cuda.default_generators[device.index or torch.cuda.current_device()]
    elif device.type == "cpu":
        source = torch.default_generator
    else:
        return None
    gen = torch.Generator(device=device)
    gen.set_state(source.get_state())
    return gen


def _part(t: torch.Tensor, where: tuple | None) -> torch.Tensor:
    """One run's slice of a stacked tensor; scalars (Adam's step) and unstacked tensors as they are."""
    if where is None or t.dim() == 0:
        return t
    stack, name, k = where
    return stack.member(name, t, k)


def rows(ks: list[int], device: torch.device) -> slice | int | torch.Tensor:
    """Index of runs `ks` on the run axis: one run's index (its tensors without
    the axis), a slice (a view, no copy) for consecutive runs, else an index tensor."""
    if len(ks) == 1:
        return ks[0]
    if ks == list(range(ks[0], ks[-1] + 1)):
        return slice(ks[0], ks[-1] + 1)
    return torch.tensor(ks, device=device)
