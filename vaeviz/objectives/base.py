"""The objective interface: a small module that turns a batch into a loss and named terms.

Every term is in nats per example (summed over data and latent dimensions, averaged over the
batch). An objective holds its own state (λ, σ², moving averages) as buffers or parameters so
that it is checkpointed with the run, and exposes that state through `terms` for logging.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vaeviz.distributions import Posterior
from vaeviz.nets import DecoderOut, NetSpec, VAEModel


@dataclass
class Losses:
    """The scalar to minimise and the named scalar terms to log (metric names of DESIGN.md)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclass
class Params:
    """Knobs of an objective; subclasses add fields declared with `vaeviz.config.knob`."""


@dataclass
class Pass:
    """One encode-sample-decode pass over a batch."""

    x: torch.Tensor  # (B, D) flattened data
    q: Posterior  # q(z|x)
    z: torch.Tensor  # (B, L)
    out: DecoderOut  # decoder logits (B, D) and optional log σ_θ(z)

    @property
    def x_mean(self) -> torch.Tensor:
        """The decoded mean in [0, 1], (B, D)."""
        return torch.sigmoid(self.out.logits)

    def mse(self) -> torch.Tensor:
        """Mean squared error per data dimension, averaged over the batch: a scalar for (B, D), (K,)
        for K stacked runs (K, B, D). Logged only, so computed without a gradient."""
        with torch.no_grad():
            return F.mse_loss(self.x_mean, self.x, reduction="none").mean((-2, -1))


class Objective(nn.Module):
    """Base class: subclasses set `Params`, implement `forward`, and may override the hooks."""

    Params = Params

    def __init__(self, params: Params, data_dim: int):
        super().__init__()
        self.params, self.data_dim = params, data_dim

    def net_spec(self) -> NetSpec:
        """What the network must provide (deterministic encoder, variance head, spectral norm)."""
        return NetSpec()

    def run(self, model: VAEModel, x: torch.Tensor) -> Pass:
        """Encode, draw one reparameterised sample and decode."""
        q = model.encode(x)
        z = q.rsample()
        return Pass(x.flatten(1), q, z, model.decode(z))

    def forward(self, model: VAEModel, x: torch.Tensor, step: int) -> Losses:
        return self.loss(self.run(model, x), step, model)

    def loss(self, p: Pass, step: int, model: VAEModel) -> Losses:
        """The loss of one pass. `model` is only for terms that need the network itself (RAE's
        regularisers); such objectives set `needs_model = True` and cannot train batched."""
        raise NotImplementedError

    needs_model = False

    def group_key(self):
        """Runs trained in one batch whose objectives share a key (not None) compute their losses
        in one `group_loss` call. None (the default): this objective's loss runs per run."""
        return None

    @classmethod
    def group_loss(cls, objectives: list, p: Pass, step: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """The losses of K runs at once, from a Pass whose tensors lead with the run axis (K, B, ...):
        (losses (K,), detached terms (K, T), the T term names in `loss`'s order). Only for objectives
        with nothing to do in `after_step`."""
        raise NotImplementedError

    def has_loss_grads(self) -> bool:
        """Whether `group_loss_and_grads` is this class's (then `vaeviz.analytic` can train it)."""
        return False

    @classmethod
    def group_loss_and_grads(cls, objectives: list, p: Pass, step: int) -> tuple:
        """`group_loss` without a graph, plus its gradient w.r.t. the decoder logits (K, B, D), the
        posterior's μ (K, B, L) and log σ² (K, B, L), derived by hand, each holding the sample z
        fixed (the trainer adds the path through z): (losses, terms, names, (∂logits, ∂μ, ∂log σ²)).
        Also for one run's tensors without the run axis, giving a scalar loss and (T,) terms.
        It updates each run's state as `loss` does; the trainer calls `after_step` after the step."""
        raise NotImplementedError

    def set_dataset_size(self, n: int) -> None:
        """Told the training-set size N before training (β-TCVAE's estimators need it)."""

    def state_arrays(self) -> dict:
        """Arrays of state to store with each evaluation snapshot (e.g. per-dimension σ²)."""
        return {}

    @torch.no_grad()
    def after_step(self, losses: Losses, step: int) -> None:
        """Update state once the optimiser has stepped (e.g. GECO's λ). Default: nothing."""

    def nll(self, p: Pass) -> torch.Tensor:
        """−log p(x|z) per example under this objective's decoder, (B,). Used for ELBO/distortion."""
        raise NotImplementedError
