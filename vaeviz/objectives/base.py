"""The objective interface: a small module that turns a batch into a loss and named terms.

Every term is in nats per example (summed over data and latent dimensions, averaged over the
batch). An objective holds its own state (λ, σ², moving averages) as buffers or parameters so
that it is checkpointed with the run, and exposes that state through `terms` for logging.
Its class also describes it to the app (the state it logs, how to chart it, what its distortion
measures), so that no page switches on objective names.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from vaeviz.distributions import Posterior
from vaeviz.nets import DecoderOut, NetSpec, VAEModel
from vaeviz.objective_params import Params

if TYPE_CHECKING:  # annotations only
    from vaeviz.data import Dataset

STANDARD_TERMS = ("loss", "rate", "distortion", "mse")  # the terms every objective's `loss` logs


@dataclass
class Losses:
    """The scalar to minimise ((K,) for a group) and the named terms to log (the metric names of
    ARCHITECTURE.md)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Chart:
    """One live chart of the Train page: logged terms drawn together, on a log scale or not."""

    terms: tuple[str, ...]
    log_y: bool = False


@dataclass(frozen=True)
class Bound:
    """A clamp or floor on an objective's logged state, which the app reports once a run reaches it
    (`vaeviz.analysis.bounds`): the logged train `term`, the `Params` knob that sets the bound, the side the term
    reaches it from ("max": from below, "min": from above), the bound on the term as `knob ** power` (σ² against
    σ_min), the relative tolerance `rtol` of "at the bound", the bound's symbol in the app (`label`), and `note`:
    what it does to the run while there."""

    term: str
    knob: str
    side: str
    power: int = 1
    rtol: float = 1e-5  # terms are logged in float32
    label: str = ""
    note: str = ""

    def value(self, params: Params) -> float:
        """The bound on the logged term of a run with `params`."""
        return float(getattr(params, self.knob)) ** self.power


@dataclass
class Pass:
    """One encode-sample-decode pass over a batch: tensors (B, ...) for one run, or (K, B, ...) for the
    K runs of a group (`Objective.group`)."""

    x: torch.Tensor  # (B, D) flattened data
    q: Posterior  # q(z|x)
    z: torch.Tensor  # (B, L)
    out: DecoderOut  # decoder logits (B, D) and optional log σ_θ(z)
    y: torch.Tensor | None = None  # (B,) int64 labels of x, only for an objective that reads them (`needs_labels`)

    @functools.cached_property
    def x_mean(self) -> torch.Tensor:
        """The decoded mean in [0, 1], (B, D)."""
        return torch.sigmoid(self.out.logits)

    def mse(self) -> torch.Tensor:
        """Mean squared error per data dimension, averaged over the batch: a scalar ((K,) for a group).
        Logged only, so computed without a gradient."""
        with torch.no_grad():
            return (self.x_mean - self.x).pow_(2).mean((-2, -1))


def forward_pass(model: VAEModel, x: torch.Tensor) -> Pass:
    """Encode x (B, *shape), draw one reparameterised sample z ~ q(z|x) and decode it."""
    q = model.encode(x)
    z = q.rsample()
    return Pass(x.flatten(1), q, z, model.decode(z))


class Objective(nn.Module):
    """Base class: subclasses set `Params` and implement `loss` and `nll`, and may override the hooks.

    `loss` is the objective's one definition of its loss. It sees one run's pass, or, for a class whose
    `group_key` is not None, the stacked pass of K runs of that class at once (`group`): then every
    reduction keeps the leading run axis and each knob that may differ between the runs is read through
    `per_run`."""

    Params = Params
    needs_model = False  # True when `loss` reads the network itself (RAE's regularisers): never grouped
    needs_labels = False  # True when `loss` reads the batch's labels `Pass.y` (the trainer fills them then)
    fits_output_grad = True  # False when `loss` is not the one its class's registered output gradient
    # (`vaeviz.output_grads`) was derived for (e.g. a knob changes it): such a run trains with autograd
    members: list | None = None  # the K runs of a group (`group`); None for one run

    # What the app shows of a run, read through `REGISTRY[name]` (no page switches on objective names):
    state_terms: tuple[str, ...] = ()  # terms `loss` may log beside STANDARD_TERMS: the objective's own state
    charts: tuple[Chart, ...] = ()  # the Train page's live charts of them, below the chart of R and D
    chart_caption: str = ""  # how to read those charts, shown below them
    chart_loss: bool = True  # `loss` is in the units of R and D (D + βR, D + penalties): charted with them
    hidden_knobs: tuple[str, ...] = ()  # `Params` knobs the Train form leaves out (`--set` still sets them)
    ex_post_fit: str = "sample"  # what the run's ex-post samplers fit: codes z ~ q(z|x) (σ-VAE §2.1) or "mean"

    @classmethod
    def distortion_kind(cls, params: Params) -> str:
        """What the distortion D of a run with `params` measures: runs whose kinds differ have D on different
        scales (the app draws no common frontier). By default a kind of its own."""
        return cls.__name__

    @classmethod
    def bounds(cls, params: Params) -> tuple[Bound, ...]:
        """The clamps and floors on the state a run with `params` logs (GECO's λ_min/λ_max, σ-VAE's σ_min).
        Default: none."""
        return ()

    @classmethod
    def logs(cls, *terms: str) -> bool:
        """Whether this objective's runs log every one of `terms` (a page's check that a run has what it plots)."""
        return set(terms) <= {*STANDARD_TERMS, *cls.state_terms}

    @classmethod
    def suggested(cls, params: Params, measured: dict) -> dict:
        """Knob values that suit data on which another run measured `measured` (`vaeviz.app_state.measured_error`:
        "mse", its reconstruction MSE per data dimension, and "dim", the data dimension d), for a run of this
        objective whose knobs are `params`: {knob: value}, applied by Compare's comparison to the knobs it does not
        carry over from the selected run. Default: no change."""
        return {}

    def __init__(self, params: Params, data_dim: int):
        super().__init__()
        self.params, self.data_dim = params, data_dim

    def net_spec(self) -> NetSpec:
        """What the network must provide (deterministic encoder, variance head, spectral norm)."""
        return NetSpec()

    def forward(self, model: VAEModel, x: torch.Tensor, step: int) -> Losses:
        return self.loss(forward_pass(model, x), step, model)

    def loss(self, p: Pass, step: int, model: VAEModel | None = None) -> Losses:
        """The loss of one pass (of K runs for a group). `model` is only for terms that need the
        network itself; such objectives set `needs_model = True`."""
        raise NotImplementedError

    def nll(self, p: Pass) -> torch.Tensor:
        """−log p(x|z) per example under this objective's decoder, (B,). Used for ELBO/distortion."""
        raise NotImplementedError

    def group_key(self):
        """Runs trained together whose objectives share a key (not None) compute `loss` in one call on
        their stacked tensors. None (the default): this run's loss is computed on its own. Only
        objectives without state of their own (buffers changed by `loss` or `after_step`) may group."""
        return None

    @classmethod
    def group(cls, members: list[Objective]) -> Objective:
        """One objective standing for the K runs `members` (same class and group key): its `loss` takes
        their stacked pass and returns (K,) terms."""
        grouped = copy.copy(members[0])
        grouped.members = list(members)
        return grouped

    def per_run(self, value: Callable[[Objective], float], like: torch.Tensor) -> torch.Tensor:
        """`value(run's objective)` as a tensor of `like`'s dtype and device: a scalar for one run; for a
        group, each member's value, shaped (K, 1, ..., 1) to broadcast against `like` (K, ...)."""
        if self.members is None:
            return torch.tensor(value(self), dtype=like.dtype, device=like.device)
        values = torch.tensor([value(m) for m in self.members], dtype=like.dtype, device=like.device)
        return values.view(-1, *[1] * (like.dim() - 1))

    def calibrate(self, mse: float) -> None:
        """Told the training split's reconstruction MSE per data dimension (`analysis.likelihood.train_mse`)
        before every held-out evaluation, by the trainer and by `vaeviz eval` alike. An objective whose
        decoder σ is measured from data (σ-VAE's closed form, GECO) fixes it here, so that every held-out
        metric is the bound of one fixed model whatever the eval chunk. Default: nothing to fix."""

    def check_data(self, data: Dataset) -> None:
        """Refuse, with a `ConfigError` naming the knob and the problem, data this objective cannot train on
        (labels it reads and the dataset lacks). Called by `vaeviz.preflight` and by `vaeviz.build` before
        anything is fitted. Default: any data."""

    def set_data(self, data: Dataset, classifier: Callable[[], nn.Sequential]) -> None:
        """Told the run's data before training or analysis (`vaeviz.build`). `classifier()` fits, or loads
        from its cache, the dataset's feature classifier (`vaeviz.analysis.quality`, D → ... → features →
        class logits, fitted on the full labelled training split): called only by an objective that needs it.
        Default: tell the training-set size (`set_dataset_size`)."""
        self.set_dataset_size(len(data.x_train))

    def set_dataset_size(self, n: int) -> None:
        """Told the training-set size N before training (β-TCVAE's estimators need it)."""

    def state_arrays(self) -> dict:
        """Arrays of state to store with each evaluation snapshot (e.g. per-dimension σ²)."""
        return {}

    @torch.no_grad()
    def after_step(self, losses: Losses, step: int) -> None:
        """Update state once the optimiser has stepped (e.g. GECO's λ). Default: nothing."""
