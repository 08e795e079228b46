"""σ-VAE: a Gaussian decoder whose variance is solved for or learned (Rybkin et al. 2021, "Simple and
Effective VAE Training with Calibrated Decoders").

Loss = E_q[−log p(x|z)] + KL(q(z|x) ‖ N(0, I)) with the Gaussian NLL of eq. 4,
    −log p(x|z) = d/2 log 2π + Σ_k log σ_k + Σ_k (x_k − g_k(z))² / (2σ_k²).
Variance modes (`variance`):
- `global_closed_form`: one σ shared by all dimensions, set every step to its maximiser on the batch,
  σ*² = 1/(B·d) Σ_i ‖x_i − g(z_i)‖² (eq. 6), detached;
- `per_image_closed_form`: eq. 6 solved per image instead of per batch, σ*²_i = ‖x_i − g(z_i)‖²/d, the
  maximiser of image i's term of eq. 4 over its own σ_i, detached and floored hard at σ_min²; each image's
  squared error is then weighed by its own 1/(2σ*²_i), so no image dominates the batch's gradient;
- `global_learned`: one parameter log σ, trained by gradient descent with the networks;
- `per_dim`: a learned log σ_k per data dimension;
- `network`: log σ_θ(z) from a decoder head (eq. 7–8), switched on after `warmup_steps` of the global
  closed form. The head predicts log σ relative to the last warm-up log σ*, so σ(z) starts there.
Floor: a learned log σ is passed through the soft floor log σ_min + softplus(s − log σ_min) (the
`softclip` of the paper's code), which keeps the optimum above the floor; the closed form is floored
hard, max(σ*, σ_min), which is the constrained maximiser of eq. 4 over σ ≥ σ_min.
Held-out metrics score one fixed model: there both closed forms (and the network mode's warm-up) use the one σ*
of the whole training split (`calibrate`, eq. 6 over that split), never a σ refitted per batch or per image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaeviz.distributions import gaussian_nll
from vaeviz.nets import NetSpec
from vaeviz.objective_params import SigmaVAEParams
from vaeviz.objectives.base import Bound, Chart, Losses, Objective, Pass

CALIBRATED = "gaussian, calibrated or learned σ"  # the distortion kind of a decoder σ fitted to the data


def softclip(log_sigma: torch.Tensor, log_min: float) -> torch.Tensor:
    """Soft floor: log σ_min + softplus(s − log σ_min) > log σ_min, ≈ s far above the floor."""
    return log_min + F.softplus(log_sigma - log_min)


FLOOR = 1e-6  # the closed form's default σ floor, where σ is only measured (GECO's distortion)


def fitted_log_sigma(mse: float, sigma_min: float = FLOOR) -> float:
    """log σ* of eq. 6 for a measured MSE per dimension, floored at σ_min: ½ log max(MSE, σ_min²)."""
    return 0.5 * math.log(max(float(mse), sigma_min**2))


def closed_form_log_sigma(x: torch.Tensor, mean: torch.Tensor, sigma_min: float = FLOOR) -> torch.Tensor:
    """log σ* with σ*² = mean squared error over batch and dimensions (eq. 6), floored, detached: a scalar."""
    mse = (x - mean).detach().pow(2).mean()
    return (0.5 * mse.log()).clamp_min(math.log(sigma_min))


def per_image_log_sigma(x: torch.Tensor, mean: torch.Tensor, sigma_min: float = FLOOR) -> torch.Tensor:
    """log σ*_i with σ*²_i = ‖x_i − g(z_i)‖²/d (eq. 6 written per image), floored at σ_min, detached:
    (B, D) -> (B, 1)."""
    mse = (x - mean).detach().pow(2).mean(-1, keepdim=True)  # (B, 1)
    return (0.5 * mse.log()).clamp_min(math.log(sigma_min))


def fixed_log_sigma(objective: Objective) -> torch.Tensor:
    """The calibrated log σ* of `objective` (a scalar buffer); refuses before the first `calibrate`."""
    if torch.isnan(objective.log_sigma_fit):
        raise RuntimeError(f"{type(objective).__name__}: σ* is measured on the training split; call "
                           "calibrate(train_mse) before scoring (vaeviz.analysis.likelihood.calibrate)")
    return objective.log_sigma_fit


class SigmaVAE(Objective):
    Params = SigmaVAEParams
    state_terms = ("sigma2", "sigma2_min", "sigma2_max")  # σ² averaged; its extremes (per_dim, network, per image)
    charts = (Chart(("sigma2", "mse"), log_y=True),)  # σ*² = MSE in the closed form (eq. 6)

    @classmethod
    def distortion_kind(cls, params: SigmaVAEParams) -> str:
        return CALIBRATED

    @classmethod
    def bounds(cls, params: SigmaVAEParams) -> tuple[Bound, ...]:
        """σ's floor σ_min, on the logged σ² (one shared σ) or its smallest value over dimensions or images
        (`sigma2_min`). The closed forms clamp σ*² at σ_min² exactly; a learned σ passes the soft floor
        (`softclip`), which keeps it above σ_min: within 10 % of σ_min² it is the floor that holds σ up."""
        shared = params.variance in ("global_closed_form", "global_learned")
        hard = params.variance in ("global_closed_form", "per_image_closed_form")
        note = ("While σ sits at its floor it no longer follows the reconstruction error (eq. 6): the squared "
                "errors it would weigh more are weighed by the fixed 1/(2σ_min²), a β-VAE with β = 2σ_min², so the "
                "rate stops paying for finer reconstructions. A smaller sigma_min lets σ² keep falling with the MSE.")
        return (Bound("sigma2" if shared else "sigma2_min", "sigma_min", "min", power=2, rtol=1e-5 if hard else 0.1,
                      label="σ_min²", note=note),)

    def __init__(self, params: SigmaVAEParams, data_dim: int):
        super().__init__(params, data_dim)
        self.mode, self.log_min = params.variance, math.log(params.sigma_min)
        if self.mode == "global_learned":
            self.log_sigma = nn.Parameter(torch.zeros(()))  # raw s; σ = exp(softclip(s)), starts at σ ≈ 1
        elif self.mode == "per_dim":
            self.log_sigma = nn.Parameter(torch.zeros(data_dim))  # (D,)
        self.register_buffer("log_sigma_ref", torch.zeros(()))  # network: last warm-up log σ*
        self.register_buffer("sigma2_map", torch.ones(data_dim))  # (D,) last batch's σ², for snapshots
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # last optimiser step seen
        self.register_buffer("log_sigma_fit", torch.tensor(float("nan")))  # σ* of the training split (calibrate)
        self.sigma2_images: torch.Tensor | None = None  # per_image_closed_form: last batch's σ*²_i, (B,)

    def net_spec(self) -> NetSpec:
        return NetSpec(variance_head=self.mode == "network")

    def warm(self, step: int) -> bool:
        """Whether `step` (1-based) still uses the global closed form in network mode."""
        return self.mode == "network" and step <= self.params.warmup_steps

    def decoder_log_sigma(self, p: Pass, warm: bool) -> torch.Tensor:
        """log σ broadcastable to (B, D): a scalar, (D,), (B, 1) per image or (B, D)."""
        if self.mode == "global_closed_form" or warm:
            return closed_form_log_sigma(p.x, p.x_mean, self.params.sigma_min)
        if self.mode == "per_image_closed_form":
            return per_image_log_sigma(p.x, p.x_mean, self.params.sigma_min)  # (B, 1)
        if self.mode == "network":
            return softclip(p.out.log_sigma + self.log_sigma_ref, self.log_min)  # (B, D)
        return softclip(self.log_sigma, self.log_min)

    def calibrate(self, mse: float) -> None:
        """σ*² = the training split's MSE (eq. 6 over the split), floored: the σ of every held-out metric."""
        self.log_sigma_fit.fill_(fitted_log_sigma(mse, self.params.sigma_min))

    def nll(self, p: Pass) -> torch.Tensor:
        """−log p(x|z) of a fixed model: the closed forms, global or per image (and the network mode's warm-up),
        use σ* of the training split (`calibrate`), never a σ refitted on the batch or image being scored."""
        warm = self.mode == "network" and self.warm(max(int(self.step), 1))
        if self.mode in ("global_closed_form", "per_image_closed_form") or warm:
            return gaussian_nll(p.x, p.x_mean, fixed_log_sigma(self))
        return gaussian_nll(p.x, p.x_mean, self.decoder_log_sigma(p, warm))

    def loss(self, p, step, model=None):
        warm = self.warm(step)
        log_sigma = self.decoder_log_sigma(p, warm)
        distortion = gaussian_nll(p.x, p.x_mean, log_sigma).mean()
        rate = p.q.kl().mean()
        loss = distortion + rate
        sigma2 = torch.exp(2.0 * log_sigma.detach()).expand_as(p.x)  # (B, D)
        with torch.no_grad():
            self.sigma2_map.copy_(sigma2.mean(0))
            self.step.fill_(step)
            if warm:
                self.log_sigma_ref.copy_(log_sigma)
            if self.mode == "per_image_closed_form":
                self.sigma2_images = sigma2[:, 0].clone()  # (B,)
        terms = {"loss": loss.detach(), "rate": rate.detach(), "distortion": distortion.detach(),
                 "mse": p.mse(), "sigma2": sigma2.mean()}
        if self.mode in ("per_dim", "network", "per_image_closed_form"):
            terms["sigma2_min"], terms["sigma2_max"] = sigma2.min(), sigma2.max()
        return Losses(loss, terms)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The per-dimension σ² of the last training batch (constant across dimensions in global modes) and,
        per image, that batch's σ*²_i (`sigma2_per_image`, (B,)) once a batch has been seen."""
        arrays = {"sigma2": self.sigma2_map.detach().cpu().numpy()}
        if self.sigma2_images is not None:
            arrays["sigma2_per_image"] = self.sigma2_images.cpu().numpy()
        return arrays
