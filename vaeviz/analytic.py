"""A hand-derived backward pass for MLP VAEs: the trainer's fast path on small nets.

A digits step is ~100 tiny ops, and on a small CPU autograd's bookkeeping (graph nodes, saved
tensors, gradient accumulation) costs more than their arithmetic. For the common case (MLP
encoder and decoder of Linear + ReLU layers, a diagonal Gaussian posterior sampled as
z = μ + σ ⊙ ε (Kingma & Welling 2014, eq. 10), no decoder variance head, and an objective with a
registered output gradient in `vaeviz.output_grads`: VAE, β-VAE, σ-VAE with the closed-form σ*
(global or per image), GECO) this module runs the forward pass without a graph, takes the loss's
terms from the objective's own `loss` and its output gradients from `output_grads`, and
backpropagates by hand, writing every gradient straight into the parameters' `.grad`:

    affine y = h Wᵀ + b:  ∂W = gᵀ h,  ∂b = Σ_batch g,  ∂h = g W;   ReLU: ∂h = g ⊙ [y > 0];
    reparameterisation:   ∂μ += ∂z,   ∂log σ² += ½ ∂z ⊙ σ ⊙ ε.

The same code runs one model (weights (out, in), `addmm`) or K stacked ones (weights (K, in, out),
`baddbmm`, stacked by the trainer). ε is drawn as `Posterior.rsample` draws it, so a run matches its
autograd twin (tests).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from vaeviz.distributions import Posterior
from vaeviz.nets import DecoderOut, MLPDecoder, MLPEncoder, VAEModel
from vaeviz.objectives.base import Losses, Objective, Pass
from vaeviz.output_grads import output_grads

# (weight, bias): (out, in) and (out,) for one model; (K, in, out) and (K, 1, out) stacked
Layer = tuple[torch.Tensor, torch.Tensor]


def _plain(layer: nn.Module) -> bool:
    return type(layer) is nn.Linear and layer.bias is not None and not parametrize.is_parametrized(layer)


def linear_chain(body: nn.Sequential) -> list[nn.Linear] | None:
    """The Linear layers of a Linear, ReLU, Linear, ReLU... body (`nets.mlp(final_act=True)`), else None."""
    layers = list(body)
    linears, relus = layers[0::2], layers[1::2]
    if len(linears) != len(relus) or not all(map(_plain, linears)) or any(type(r) is not nn.ReLU for r in relus):
        return None
    return linears


def supports(model: VAEModel, objective: Objective) -> bool:
    """Whether the hand-derived backward pass computes this model and objective's gradient."""
    enc, dec = model.encoder, model.decoder
    return (isinstance(enc, MLPEncoder) and isinstance(dec, MLPDecoder) and enc.head.kind == "diag"
            and dec.log_sigma is None and _plain(enc.head.out) and _plain(dec.out)
            and linear_chain(enc.body) is not None and linear_chain(dec.body) is not None
            and output_grads(objective) is not None)


def _grad(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:
        p.grad = torch.zeros_like(p)
    return p.grad


def affine(layer: Layer, h: torch.Tensor) -> torch.Tensor:
    """h Wᵀ + b: (B, in) -> (B, out) as F.linear computes it, or (K, B, in) -> (K, B, out)."""
    w, b = layer
    return torch.addmm(b, h, w.t()) if w.dim() == 2 else torch.baddbmm(b, h, w)


def affine_backward(layer: Layer, h: torch.Tensor, g: torch.Tensor, need_input: bool) -> torch.Tensor | None:
    """Write ∂W = gᵀh and ∂b = Σ_batch g into the layer's `.grad`; return ∂h = g W when `need_input`."""
    w, b = layer
    if w.dim() == 2:
        torch.mm(g.t(), h, out=_grad(w))  # (out, in)
        torch.sum(g, 0, out=_grad(b))  # (out,)
        return torch.mm(g, w) if need_input else None  # (B, in)
    torch.bmm(h.transpose(1, 2), g, out=_grad(w))  # (K, in, out)
    torch.sum(g, 1, keepdim=True, out=_grad(b))  # (K, 1, out)
    return torch.bmm(g, w.transpose(1, 2)) if need_input else None  # (K, B, in)


def forward_chain(layers: list[Layer], h: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(the input of every layer, the last layer's output): ReLU after every layer but the last."""
    inputs = []
    for i, layer in enumerate(layers):
        inputs.append(h)
        h = affine(layer, h)
        if i < len(layers) - 1:
            h = h.relu_()
    return inputs, h


def backward_chain(layers: list[Layer], inputs: list[torch.Tensor], g: torch.Tensor,
                   need_input: bool = True) -> torch.Tensor | None:
    """Every layer's gradients, last to first, from ∂output g; ∂(the first input) when `need_input`."""
    for i in range(len(layers) - 1, -1, -1):
        g = affine_backward(layers[i], inputs[i], g, need_input or i > 0)
        if i > 0:  # inputs[i] is the previous layer's ReLU output: pass g where it was positive
            g = torch.ops.aten.threshold_backward(g, inputs[i], 0, grad_input=g)
    return g


LossGrads = Callable[[Pass], tuple[object, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]


@torch.no_grad()
def backprop(encoder: list[Layer], decoder: list[Layer], posterior: Callable[[torch.Tensor], Posterior],
             x: torch.Tensor, noise: Callable[[torch.Tensor], torch.Tensor], loss_and_grads: LossGrads):
    """Forward x -> q(z|x) -> z -> logits, the objective's terms and output gradients, then every
    parameter's gradient. x is (B, D), or (K, B, D) for stacked layers; returns `loss_and_grads`'s result."""
    enc_inputs, out = forward_chain(encoder, x)  # out (..., B, 2L)
    q = posterior(out)  # μ, log σ² (..., B, L)
    sigma_eps = torch.exp(0.5 * q.logvar) * noise(q.mu)  # σ ⊙ ε
    z = q.mu + sigma_eps  # as Posterior.rsample computes it
    dec_inputs, logits = forward_chain(decoder, z)  # (..., B, D)
    result, (d_logits, d_mu, d_logvar) = loss_and_grads(Pass(x, q, z, DecoderOut(logits)))
    d_z = backward_chain(decoder, dec_inputs, d_logits)  # (..., B, L)
    d_out = torch.cat([d_mu.add_(d_z), d_logvar.addcmul_(d_z, sigma_eps, value=0.5)], -1)  # ∂z/∂log σ² = ½ σ ε
    backward_chain(encoder, enc_inputs, d_out, need_input=False)
    return result


def _draw_noise(mu: torch.Tensor) -> torch.Tensor:
    return torch.randn(mu.shape, device=mu.device, dtype=mu.dtype)  # the draw of Posterior.rsample


def _layers(linears: list[nn.Linear]) -> list[Layer]:
    return [(layer.weight, layer.bias) for layer in linears]


class AnalyticStep:
    """One model's batch: forward pass and hand-derived backward pass; gradients land in `.grad`."""

    def __init__(self, model: VAEModel, objective: Objective):
        self.model, self.objective, self.grads = model, objective, output_grads(objective)
        self.encoder = _layers([*linear_chain(model.encoder.body), model.encoder.head.out])
        self.decoder = _layers([*linear_chain(model.decoder.body), model.decoder.out])

    def __call__(self, x: torch.Tensor, step: int) -> Losses:
        def loss_and_grads(p: Pass):
            losses = self.objective.loss(p, step)
            return losses, self.grads(self.objective, p, losses, step)

        return backprop(self.encoder, self.decoder, self.model.encoder.head.posterior, x.flatten(1), _draw_noise,
                        loss_and_grads)
