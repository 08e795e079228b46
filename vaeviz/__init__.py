"""vaeviz: train small VAE-family models and see the reconstruction/regularisation trade-off."""

__version__ = "0.1.0"
