"""Objective registry: one dict mapping a config name to its class."""

from vaeviz.objectives.base import Losses, Objective, Pass
from vaeviz.objectives.beta_tcvae import BetaTCVAE
from vaeviz.objectives.beta_vae import BetaVAE
from vaeviz.objectives.geco import GECO
from vaeviz.objectives.rae import RAE
from vaeviz.objectives.sigma_vae import SigmaVAE
from vaeviz.objectives.vae import VAE

REGISTRY: dict[str, type[Objective]] = {
    "vae": VAE,
    "beta_vae": BetaVAE,
    "sigma_vae": SigmaVAE,
    "geco": GECO,
    "rae": RAE,
    "beta_tcvae": BetaTCVAE,
}


def build_objective(cfg, data_dim: int) -> Objective:
    """Instantiate the objective named in an `ObjectiveConfig`."""
    return REGISTRY[cfg.name](cfg.params, data_dim)


__all__ = ["REGISTRY", "Losses", "Objective", "Pass", "build_objective"]
