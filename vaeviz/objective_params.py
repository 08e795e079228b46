"""Every objective's knobs (its `Params`) and `PARAMS`, the name → Params registry the run config validates with.

Each field is a `knob(...)`: default, bounds or choices, help; the same metadata bounds the app's widgets.
The objective classes (`vaeviz/objectives/<name>.py`, which explain the maths) set `Params = ...` from here,
and `vaeviz.objectives.REGISTRY` maps the same names to them. The knobs live apart from the objectives,
which need torch, so that the run config (`vaeviz.config`) stays a torch-free leaf that imports no
objective: the CLI parses and refuses a config without loading torch, and nothing needs a late import.
"""

from __future__ import annotations

from dataclasses import dataclass

from vaeviz.knobs import knob


@dataclass
class Params:
    """Knobs of an objective; subclasses add fields declared with `knob(...)`."""


@dataclass
class VAEParams(Params):
    """VAE (Kingma & Welling 2014): the decoder likelihood; a Gaussian decoder has a fixed σ (CV-VAE)."""

    decoder: str = knob("bernoulli", choices=["bernoulli", "gaussian"], help="decoder likelihood")
    sigma: float = knob(0.1, lo=1e-4, hi=10.0, help="fixed decoder σ of the Gaussian decoder (CV-VAE)")


@dataclass
class BetaVAEParams(VAEParams):
    """β-VAE (Higgins et al. 2017) and its β_t schedules (Bowman et al. 2016; Fu et al. 2019)."""

    beta: float = knob(4.0, lo=0.0, hi=1000.0, help="weight β of the rate")
    schedule: str = knob("constant", choices=["constant", "linear", "cyclic"], help="β_t schedule")
    warmup_steps: int = knob(1000, lo=1, help="steps of the linear warm-up from 0")
    period: int = knob(500, lo=1, help="steps per cycle of the cyclic schedule")
    ratio: float = knob(0.5, lo=0.0, hi=1.0, lo_open=True, help="fraction of a cycle spent increasing β")


VARIANCES = ["global_closed_form", "per_image_closed_form", "global_learned", "per_dim", "network"]


@dataclass
class SigmaVAEParams(Params):
    """σ-VAE (Rybkin et al. 2021): how the Gaussian decoder's σ is obtained, and its floor."""

    variance: str = knob("global_closed_form", choices=VARIANCES, help="how the decoder σ is obtained")
    warmup_steps: int = knob(1000, lo=0, help="steps of global closed-form σ before the σ_θ(z) head (network)")
    sigma_min: float = knob(1e-3, lo=0.0, hi=1.0, lo_open=True, help="soft floor of the decoder σ")


@dataclass
class GECOParams(Params):
    """GECO (Rezende & Viola 2018, Algorithm 1): the constraint's tolerance and the multiplier's dynamics."""

    kappa: float = knob(0.1, lo=0.0, hi=1.0, lo_open=True,
                        help="tolerance κ of the constraint: re, RMSE per pixel (MSE ≤ κ²); fre, RMS feature "
                             "distance per feature (≤ κ²); cla, least probability of the true label (p ≥ κ)")
    alpha: float = knob(0.99, lo=0.0, hi=0.9999, help="moving-average factor of C_ma")
    nu: float = knob(1.0, lo=0.0, hi=1e4, lo_open=True, help="step size ν of log λ per step")
    lambda_init: float = knob(1.0, lo=0.0, lo_open=True, help="initial multiplier λ₀")
    lambda_min: float = knob(1e-6, lo=0.0, lo_open=True, help="lower clamp of λ")
    lambda_max: float = knob(1e8, lo=0.0, lo_open=True, help="upper clamp of λ")
    constraint: str = knob("re", choices=["re", "fre", "cla"],
                           help="constraint (Taming VAEs Table 1): re = reconstruction error, fre = feature "
                                "reconstruction error, cla = classifier probability of the true label")


VARIANTS = ["l2", "gp", "sn", "none", "ae"]


@dataclass
class RAEParams(Params):
    """RAE (Ghosh et al. 2020, eq. 11): the decoder regulariser and the weights of the two penalties."""

    variant: str = knob("l2", choices=VARIANTS, help="decoder regulariser: l2, gp, sn, none (β only), ae (plain)")
    beta: float = knob(1e-4, lo=0.0, hi=1e4, help="weight β of the code penalty ½‖z‖²")
    reg_weight: float = knob(1e-6, lo=0.0, hi=1e4, help="weight λ of the decoder regulariser (l2, gp)")


@dataclass
class BetaTCVAEParams(VAEParams):
    """β-TCVAE (Chen et al. 2018, eq. 4): the weights of the three KL terms and the estimator of q(z)."""

    alpha: float = knob(1.0, lo=0.0, hi=1000.0, help="weight α of the index-code mutual information")
    beta: float = knob(6.0, lo=0.0, hi=1000.0, help="weight β of the total correlation")
    gamma: float = knob(1.0, lo=0.0, hi=1000.0, help="weight γ of the dimension-wise KL")
    estimator: str = knob("mws", choices=["mws", "mss"], help="minibatch weighted or stratified sampling")
    dataset_size: int | None = knob(None, lo=1, help="N of the estimators (default: the training-set size)")


@dataclass
class HFVAEParams(VAEParams):
    """HFVAE (Esmaeili et al. 2019, Sec. 3): groups of latent dimensions and the weights of the four KL terms
    (the paper's α on MI, β between groups, γ within groups; δ on the dimension-wise KL, 1 in the paper)."""

    groups: list[int] | None = knob(None, lo=1, hi=512, help="sizes of consecutive latent groups, e.g. 2,2,2; they "
                                    "must add up to model.latent_dim (default: one dimension per group)")
    alpha: float = knob(1.0, lo=0.0, hi=1000.0, help="weight α of the index-code mutual information")
    beta: float = knob(6.0, lo=0.0, hi=1000.0, help="weight β of the total correlation between groups")
    gamma: float = knob(2.0, lo=0.0, hi=1000.0, help="weight γ of the total correlation within groups")
    delta: float = knob(1.0, lo=0.0, hi=1000.0, help="weight δ of the dimension-wise KL")
    estimator: str = knob("mws", choices=["mws", "mss"], help="minibatch weighted or stratified sampling")
    dataset_size: int | None = knob(None, lo=1, help="N of the estimators (default: the training-set size)")

    def __post_init__(self):
        if self.groups == []:  # no sizes: the default, as the empty text that stands for it on the command line
            self.groups = None


PARAMS: dict[str, type[Params]] = {  # `objective.name` → its knobs; the same names as `vaeviz.objectives.REGISTRY`
    "vae": VAEParams,
    "beta_vae": BetaVAEParams,
    "sigma_vae": SigmaVAEParams,
    "geco": GECOParams,
    "rae": RAEParams,
    "beta_tcvae": BetaTCVAEParams,
    "hfvae": HFVAEParams,
}
