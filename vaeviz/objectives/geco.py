"""GECO: the rate minimised under a constraint (Rezende & Viola 2018, "Taming VAEs", Algorithm 1 and Table 1).

The constraint C(x, g(z)) per example, g(z) the decoded mean, holds when C ≤ 0 (Table 1; `objective.constraint`):
- re, reconstruction error: C = ‖x − g(z)‖²/d − κ², κ the tolerated RMSE per data dimension (d of them);
- fre, feature reconstruction error: C = ‖f(x) − f(g(z))‖²/F − κ², f the F penultimate ReLU features of the
  dataset's frozen classifier: normalised per feature dimension, so κ is the tolerated RMS feature distance.
  The gradient flows through the frozen classifier into the decoder;
- cla, classification: C = κ − l(x)ᵀc(g(z)), l(x) the one-hot true label of x and c the classifier's softmax:
  κ is the probability the classifier must give the reconstruction's true label. Labelled data only. Its value
  is κ − p (p the true label's probability), its gradient that of log κ − log p: the same boundary p = κ per
  example, and −∇p/p ≈ ∇(κ − p)/κ near it, but not vanishing where the classifier is confidently wrong
  (p ≈ 0), where ∇p is ≈ 0. With ∇p itself, GECO-CLA on digits (κ = 0.9, ν from 0.01 to 1) still had a mean
  p of at most 0.52 after 3,000 steps, λ sitting at λ_max (measured); with this gradient it meets κ by step ≈ 350.
The classifier (`vaeviz.analysis.quality`, fitted once on the full labelled training split, as `vaeviz eval`
fits it) comes through `set_data` and is held as non-persistent buffers: it moves with the objective, is no
parameter (never optimised) and no state (never checkpointed). `c_batch`, `c_ma` and `kappa2` (the tolerance
term: κ² for re and fre, κ for cla) are logged in the constraint's own units (`ConstraintKind.units`).
The moving average C_ma ← α·C_ma + (1−α)·C̄_batch starts at the first batch's C̄_batch.
Lagrangian: loss = R + λ·Ĉ with Ĉ = C̄_batch + stopgrad(C_ma − C̄_batch): its value is C_ma, its
gradient that of the current batch only. After each optimiser step λ ← clamp(λ·exp(ν·C_ma), λ_min, λ_max),
so λ rises while the constraint is violated (C_ma > 0) and falls once it holds.
GECO has no decoder likelihood; its distortion D (for the ELBO and the information plane) is the
Gaussian NLL (σ-VAE eq. 4) at the calibrated σ*² (σ-VAE eq. 6): the batch MSE in the training logs, the
training split's MSE (`calibrate`) in every held-out metric, so that those are one fixed model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from vaeviz.distributions import gaussian_nll
from vaeviz.knobs import ConfigError
from vaeviz.objective_params import GECOParams
from vaeviz.objectives.base import Bound, Chart, Losses, Objective, Pass
from vaeviz.objectives.sigma_vae import CALIBRATED, closed_form_log_sigma, fitted_log_sigma, fixed_log_sigma

if TYPE_CHECKING:  # annotations only
    from vaeviz.data import Dataset


class FrozenClassifier(nn.Module):
    """A fitted MLP classifier (Linear, ReLU, ..., Linear: `SampleClassifier.net_` of `vaeviz.analysis.quality`)
    held as non-persistent buffers: `.to` moves it with its objective, no optimiser sees it, no checkpoint
    stores it. Inputs flow through it (their gradient is exact); its own weights never change."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        layers = list(net)
        self.depth = (len(layers) + 1) // 2  # Linear layers
        if [type(m) for m in layers] != [nn.Linear, nn.ReLU] * (self.depth - 1) + [nn.Linear]:
            raise ValueError(f"a feature classifier is Linear, ReLU, ..., Linear; got {net}")
        for i, layer in enumerate(layers[0::2]):
            self.register_buffer(f"weight{i}", layer.weight.detach().clone(), persistent=False)
            self.register_buffer(f"bias{i}", layer.bias.detach().clone(), persistent=False)
        self.eval()

    def _linear(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, getattr(self, f"weight{i}"), getattr(self, f"bias{i}"))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate ReLU activations (`SampleClassifier.features`): (B, D) -> (B, F)."""
        for i in range(self.depth - 1):
            x = torch.relu(self._linear(i, x))
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits: (B, D) -> (B, classes)."""
        return self._linear(self.depth - 1, self.features(x))


@dataclass(frozen=True)
class ConstraintKind:
    """What the app says of a constraint kind (`GECO.constraint_kind`): its name, C in LaTeX, the units of C
    (and of the logged `c_batch`, `c_ma`, `kappa2`), one teaching sentence, and whether the logged tolerance
    `kappa2` bounds the reconstruction MSE per dimension (RE only)."""

    name: str
    formula: str
    units: str
    lesson: str
    bounds_mse: bool = False


class Reconstruction:
    """RE (Table 1): C = ‖x − g(z)‖²/d − κ². The loss `vaeviz.output_grads.geco_grads` was derived for."""

    kind = ConstraintKind(
        "reconstruction error (RE)", r"C=\tfrac1d\|x-g(z)\|^2-\kappa^2", "squared error per data dimension",
        "RE asks every pixel to be within κ of the data on average (root mean square): a blur that is right "
        "on average meets it.", bounds_mse=True)
    needs_classifier = needs_labels = False
    fits_output_grad = True

    @staticmethod
    def tolerance(kappa: float) -> float:
        return kappa**2

    def __call__(self, p: Pass, kappa: float, judge: FrozenClassifier | None) -> torch.Tensor:
        return (p.x - p.x_mean).pow(2).mean(-1) - self.tolerance(kappa)  # (B,)


class FeatureReconstruction:
    """FRE (Table 1): C = ‖f(x) − f(g(z))‖²/F − κ², f the classifier's F penultimate features."""

    kind = ConstraintKind(
        "feature reconstruction error (FRE)", r"C=\tfrac1F\|f(x)-f(g(z))\|^2-\kappa^2",
        "squared classifier-feature distance per feature dimension",
        "FRE compares what a digit classifier sees in x and in its reconstruction, not the pixels: strokes may "
        "move a little as long as the features the classifier relies on stay within κ.")
    needs_classifier, needs_labels, fits_output_grad = True, False, False
    requires = "the feature classifier is fitted on the labels"

    @staticmethod
    def tolerance(kappa: float) -> float:
        return kappa**2

    def __call__(self, p: Pass, kappa: float, judge: FrozenClassifier) -> torch.Tensor:
        with torch.no_grad():
            target = judge.features(p.x)  # (B, F)
        return (judge.features(p.x_mean) - target).pow(2).mean(-1) - self.tolerance(kappa)  # (B,)


class Classification:
    """CLA (Table 1): C = κ − l(x)ᵀc(g(z)), the classifier's probability of x's true label for g(z); its gradient
    that of log κ − log l(x)ᵀc(g(z)) (module docstring)."""

    kind = ConstraintKind(
        "classification (CLA)", r"C=\kappa-l(x)^\top c(g(z))", "probability of the true label",
        "CLA only asks that a classifier still recognise the reconstruction as the right digit with probability "
        "at least κ: everything else about the image is free to go, so the rate can drop far.")
    needs_classifier, needs_labels, fits_output_grad = True, True, False
    requires = "the constraint reads each example's true label"

    @staticmethod
    def tolerance(kappa: float) -> float:
        return kappa

    def __call__(self, p: Pass, kappa: float, judge: FrozenClassifier) -> torch.Tensor:
        log_prob = judge.logits(p.x_mean).log_softmax(-1).gather(-1, p.y.unsqueeze(-1)).squeeze(-1)  # (B,)
        value = self.tolerance(kappa) - log_prob.exp().detach()
        return value - log_prob + log_prob.detach()  # value κ − p, gradient that of log κ − log p


CONSTRAINTS = {"re": Reconstruction(), "fre": FeatureReconstruction(), "cla": Classification()}  # Table 1
CLAMP_NOTE = ("While λ sits at a clamp it stops following exp(ν·C_ma), and Adam's memory of the huge or tiny "
              "gradients of those steps can stall the rate for hundreds of steps; a smaller ν keeps λ inside its "
              "clamps.")


SUGGESTED_DRIFT = 1e-3  # ν·κ² of `GECO.suggested`: log λ's step per unit of relative violation MSE/κ² − 1


def _round(x: float) -> float:
    """`x` to 3 significant digits (a knob value as a user would type it)."""
    return float(f"{x:.3g}")


class GECO(Objective):
    Params = GECOParams
    state_terms = ("lambda", "c_batch", "c_ma", "kappa2")
    charts = (Chart(("lambda",), log_y=True), Chart(("c_ma", "c_batch")))
    chart_loss = False  # R + λĈ: λ spans decades and Ĉ is in the constraint's units, not nats

    @classmethod
    def distortion_kind(cls, params: GECOParams) -> str:
        return CALIBRATED

    @classmethod
    def bounds(cls, params: GECOParams) -> tuple[Bound, ...]:
        """λ's clamps of Algorithm 1's update λ ← clamp(λ·exp(ν·C_ma), λ_min, λ_max)."""
        return (Bound("lambda", "lambda_max", "max", label="λ_max", note=CLAMP_NOTE),
                Bound("lambda", "lambda_min", "min", label="λ_min", note=CLAMP_NOTE))

    @classmethod
    def suggested(cls, params: GECOParams, measured: dict) -> dict:
        """κ, λ₀ and ν of a constraint on the reconstruction MSE (RE) for data on which a run measured an MSE per
        dimension m (`measured["mse"]`) over d dimensions (`measured["dim"]`); no change for the other kinds
        (nothing measured is in their units) or without a measurement:
        - κ = √m: the RMSE per dimension that run reached, so the constraint MSE ≤ κ² is one a network of the
          same size meets in the same steps (GECO then spends the least rate on it);
        - λ₀ = d/(2κ²): R + λ·MSE is then, up to a constant, the negative ELBO of a Gaussian decoder with σ = κ,
          the scale λ settles at, rather than climbing there from 1 while the rate collapses the posterior;
        - ν = SUGGESTED_DRIFT/κ²: log λ moves by SUGGESTED_DRIFT per step per unit of relative violation
          MSE/κ² − 1, on any data's scale.
        Measured on digits (latent 8, 2,000 steps; presets beta-vae-annealed-digits and sigma-vae-digits, then GECO
        with these knobs): after the β-VAE (m = 0.052) or the σ-VAE (m = 0.013), λ peaks at 8·10² or 2·10⁴ and
        the constraint holds from step 291 or 648, λ never at λ_max; with the defaults (κ = 0.1, ν = 1, λ₀ = 1) on
        the same data, λ sat at λ_max = 10⁸ for 690 steps (`tests/test_compare_layout.py` checks a smaller case)."""
        mse, dim = measured.get("mse"), measured.get("dim")
        if not CONSTRAINTS[params.constraint].kind.bounds_mse or not mse or not dim or not 0 < mse <= 1:
            return {}
        kappa = _round(math.sqrt(mse))
        lambda_init = min(max(_round(dim / (2 * kappa**2)), params.lambda_min), params.lambda_max)
        return {"kappa": kappa, "lambda_init": lambda_init, "nu": _round(SUGGESTED_DRIFT / kappa**2)}

    @classmethod
    def constraint_kind(cls, params: GECOParams) -> ConstraintKind:
        """The constraint of a run with `params`: its formula, units and lesson (the GECO page)."""
        return CONSTRAINTS[params.constraint].kind

    def __init__(self, params: GECOParams, data_dim: int):
        super().__init__(params, data_dim)
        if not params.lambda_min <= params.lambda_init <= params.lambda_max:
            raise ConfigError(
                f"invalid value for 'objective.lambda_init': {params.lambda_init} "
                f"(allowed: a value in [lambda_min={params.lambda_min}, lambda_max={params.lambda_max}])"
            )
        self.rule = CONSTRAINTS[params.constraint]
        self.register_buffer("lam", torch.tensor(float(params.lambda_init)))
        self.register_buffer("c_ma", torch.tensor(float("nan")))  # NaN until the first batch
        self.register_buffer("log_sigma_fit", torch.tensor(float("nan")))  # σ* of the training split (calibrate)
        self.register_module("judge", None)  # the frozen classifier of fre and cla (`set_data`)

    @property
    def needs_labels(self) -> bool:
        return self.rule.needs_labels

    @property
    def fits_output_grad(self) -> bool:
        return self.rule.fits_output_grad

    def check_data(self, data: Dataset) -> None:
        """fre and cla need a labelled dataset."""
        if self.rule.needs_classifier and data.y_train is None:
            raise ConfigError(
                f"invalid value for 'objective.constraint': '{self.params.constraint}' ({self.rule.kind.name}) "
                f"needs a labelled dataset, as {self.rule.requires}, and dataset '{data.name}' has no labels y "
                "(use objective.constraint=re, or data with labels)")

    def set_data(self, data: Dataset, classifier: Callable[[], nn.Sequential]) -> None:
        """fre and cla: fit or load the dataset's classifier once, frozen."""
        super().set_data(data, classifier)
        if self.rule.needs_classifier:
            self.judge = FrozenClassifier(classifier())

    def constraint(self, p: Pass) -> torch.Tensor:
        """C per example in the constraint's own units (module docstring), (B,)."""
        if self.rule.needs_classifier and self.judge is None:
            raise RuntimeError(f"GECO with objective.constraint={self.params.constraint} has no classifier: call "
                               "set_data(data, classifier) first (vaeviz.build.build does)")
        return self.rule(p, self.params.kappa, self.judge)

    def calibrate(self, mse: float) -> None:
        self.log_sigma_fit.fill_(fitted_log_sigma(mse))

    def nll(self, p: Pass) -> torch.Tensor:
        """−log p(x|z) at the training split's σ* (held-out metrics)."""
        return gaussian_nll(p.x, p.x_mean, fixed_log_sigma(self))

    def batch_distortion(self, p: Pass) -> torch.Tensor:
        """The logged training distortion: the Gaussian NLL at this batch's σ*, averaged over the batch."""
        return gaussian_nll(p.x, p.x_mean, closed_form_log_sigma(p.x, p.x_mean)).mean()

    def loss(self, p, step, model=None):
        rate = p.q.kl().mean()
        c_batch = self.constraint(p).mean()
        with torch.no_grad():  # C_ma ← α·C_ma + (1−α)·C̄_batch; the first batch sets it
            old, alpha = self.c_ma, self.params.alpha
            self.c_ma.copy_(torch.where(old.isnan(), c_batch, alpha * old + (1 - alpha) * c_batch))
        c_ma = self.c_ma.clone()
        c_hat = c_batch + (c_ma - c_batch).detach()  # value C_ma, gradient of C̄_batch
        lam = self.lam.clone()  # the λ of this step (after_step updates the buffer in place)
        loss = rate + lam * c_hat
        terms = {"loss": loss.detach(), "rate": rate.detach(), "distortion": self.batch_distortion(p).detach(),
                 "mse": p.mse(), "lambda": lam, "c_batch": c_batch.detach(), "c_ma": c_ma,
                 "kappa2": torch.tensor(self.rule.tolerance(self.params.kappa), device=p.x.device)}
        return Losses(loss, terms)

    @torch.no_grad()
    def after_step(self, losses: Losses, step: int) -> None:
        """λ ← clamp(λ·exp(ν·C_ma), λ_min, λ_max)."""
        p = self.params
        self.lam.mul_(torch.exp(p.nu * self.c_ma)).clamp_(p.lambda_min, p.lambda_max)
