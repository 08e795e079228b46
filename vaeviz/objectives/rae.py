"""Regularised autoencoders (Ghosh et al. 2020, "From Variational to Deterministic Autoencoders", eq. 11).

Deterministic encoder z = E(x); loss per example
    L = ‖x − D(E(x))‖² + β·½‖z‖² + λ·L_REG        (L_REC + β·L_z^RAE + λ·L_REG)
with D(z) the decoded mean sigmoid(logits) and `variant`:
- `l2`:   L_REG = ‖θ_D‖², the squared norm of every decoder parameter (weights and biases);
- `gp`:   L_REG = ‖∇_z D(z)‖²_F at z = E(x), the squared Frobenius norm of the decoder Jacobian (D × L),
          computed exactly with one forward-mode product per latent dimension; z is detached, so the
          penalty regularises the decoder only;
- `sn`:   spectral normalisation on every decoder layer (Miyato et al. 2018), no L_REG;
- `none`: the β term only;  `ae`: the plain autoencoder, L = ‖x − D(E(x))‖².
The rate is 0 (no posterior). Distortion = ‖x − D(z)‖² per example: in nats it is the Gaussian NLL with
σ² = ½ less its constant d/2·log π (σ-VAE eq. 4). Sampling is ex-post (vaeviz.samplers).
"""

from __future__ import annotations

import torch

from vaeviz.nets import NetSpec, VAEModel
from vaeviz.objective_params import RAEParams
from vaeviz.objectives.base import Chart, Losses, Objective, Pass


def decoder_sq_norm(model: VAEModel) -> torch.Tensor:
    """‖θ_D‖²: the sum of squares of every decoder parameter, a scalar."""
    return sum(w.pow(2).sum() for w in model.decoder.parameters())


def jacobian_sq_norm(f, z: torch.Tensor) -> torch.Tensor:
    """‖∂f/∂z‖²_F per example for f: (B, L) -> (B, D), by L forward-mode products: (B, L) -> (B,)."""
    b, n = z.shape
    basis = torch.eye(n, dtype=z.dtype, device=z.device).unsqueeze(1).expand(n, b, n)  # (L, B, L): e_l per example
    columns = torch.func.vmap(lambda v: torch.func.jvp(f, (z,), (v,))[1])(basis)  # (L, B, D): J e_l
    return columns.pow(2).sum((0, 2))


class RAE(Objective):
    Params = RAEParams
    state_terms = ("reg", "z_norm")
    charts = (Chart(state_terms),)
    ex_post_fit = "mean"  # the ex-post density is fitted to the codes E(x) (Ghosh et al. 2020, sec. 4)

    @classmethod
    def distortion_kind(cls, params: RAEParams) -> str:
        return "squared error"

    def net_spec(self) -> NetSpec:
        return NetSpec(stochastic=False, spectral_norm=self.params.variant == "sn")

    @property
    def needs_model(self) -> bool:
        """The l2 and gp regularisers read the decoder itself."""
        return self.params.variant in ("l2", "gp")

    def nll(self, p: Pass) -> torch.Tensor:
        return (p.x - p.x_mean).pow(2).sum(1)

    def regulariser(self, model: VAEModel, z: torch.Tensor) -> torch.Tensor:
        """L_REG of the variant (0 for sn, none, ae), a scalar averaged over the batch."""
        if self.params.variant == "l2":
            return decoder_sq_norm(model)
        if self.params.variant == "gp":
            return jacobian_sq_norm(model.decode_mean, z.detach()).mean()
        return z.new_zeros(())

    def loss(self, p, step, model=None):
        distortion = self.nll(p).mean()
        z_norm = 0.5 * p.z.pow(2).sum(1).mean()  # L_z^RAE = ½‖z‖²
        reg = self.regulariser(model, p.z)
        beta = 0.0 if self.params.variant == "ae" else self.params.beta
        loss = distortion + beta * z_norm + self.params.reg_weight * reg
        terms = {"loss": loss.detach(), "rate": torch.zeros_like(distortion).detach(),
                 "distortion": distortion.detach(), "mse": p.mse(), "reg": reg.detach(),
                 "z_norm": z_norm.detach()}
        return Losses(loss, terms)
