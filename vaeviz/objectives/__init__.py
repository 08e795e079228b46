"""Objective registry: one dict mapping a config name to its class.

The same names map to the classes' knobs in `vaeviz.objective_params.PARAMS` (torch-free, for the config);
`REGISTRY[name].Params is PARAMS[name]` for every name (tests/test_architecture.py checks it).
"""

from vaeviz.objectives.base import STANDARD_TERMS, Chart, Losses, Objective, Pass
from vaeviz.objectives.beta_tcvae import BetaTCVAE
from vaeviz.objectives.beta_vae import BetaVAE
from vaeviz.objectives.geco import GECO
from vaeviz.objectives.hfvae import HFVAE
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
    "hfvae": HFVAE,
}


def build_objective(cfg, data_dim: int) -> Objective:
    """Instantiate the objective named in an `ObjectiveConfig`."""
    return REGISTRY[cfg.name](cfg.params, data_dim)


def latent_groups(cfg, latent_dim: int) -> list[range] | None:
    """The groups of latent dimensions the objective named in an `ObjectiveConfig` works with (HFVAE's `groups`),
    as consecutive ranges, or None for an objective without groups. ConfigError when they do not fit `latent_dim`."""
    groups = getattr(REGISTRY[cfg.name], "latent_groups", None)
    return None if groups is None else groups(cfg.params, latent_dim)


__all__ = ["REGISTRY", "STANDARD_TERMS", "Chart", "Losses", "Objective", "Pass", "build_objective", "latent_groups"]
