"""The only place encoders and decoders are built: MLP and small conv nets sized from the data.

Encoders return a `Posterior` (diagonal Gaussian, full-covariance Gaussian through a Cholesky
factor with positive diagonal, or deterministic). Decoders return logits (B, D); the image
mean is sigmoid(logits) for every likelihood, so Bernoulli logits and a Gaussian mean share
one head. An optional variance head predicts log σ_θ(z) per dimension (σ-VAE eq. 7–8).
The model never knows its objective: the objective asks for what it needs through `NetSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from vaeviz.config import ConfigError, ModelConfig
from vaeviz.distributions import Posterior


@dataclass(frozen=True)
class NetSpec:
    """What an objective needs from the network, beyond the model config."""

    stochastic: bool = True
    variance_head: bool = False
    spectral_norm: bool = False


@dataclass
class DecoderOut:
    logits: torch.Tensor  # (B, D)
    log_sigma: torch.Tensor | None = None  # (B, D) from the σ_θ(z) head, when built


def mlp(sizes: list[int], final_act: bool = False) -> nn.Sequential:
    """Linear layers with ReLU between them (and after the last one when `final_act`)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if final_act or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class GaussianHead(nn.Module):
    """Features (B, H) -> Posterior: μ and log σ², or μ and a Cholesky factor, or μ alone."""

    def __init__(self, width: int, latent_dim: int, kind: str):
        super().__init__()
        self.kind, self.latent_dim = kind, latent_dim
        n_extra = {"deterministic": 0, "diag": latent_dim, "full": latent_dim * (latent_dim + 1) // 2}[kind]
        self.out = nn.Linear(width, latent_dim + n_extra)
        if kind == "full":
            self.register_buffer("tril_idx", torch.tril_indices(latent_dim, latent_dim), persistent=False)

    def forward(self, h: torch.Tensor) -> Posterior:
        return self.posterior(self.out(h))

    def posterior(self, out: torch.Tensor) -> Posterior:
        """Split the head's output (..., L + E) into the posterior's parameters (any leading dims)."""
        mu, rest = out[..., : self.latent_dim], out[..., self.latent_dim :]  # (..., L), (..., E)
        if self.kind == "deterministic":
            return Posterior(mu)
        if self.kind == "diag":
            return Posterior(mu, logvar=rest)
        tril = out.new_zeros(*out.shape[:-1], self.latent_dim, self.latent_dim)
        tril[..., self.tril_idx[0], self.tril_idx[1]] = rest
        diag = torch.diagonal(tril, dim1=-2, dim2=-1)
        tril = tril - torch.diag_embed(diag) + torch.diag_embed(torch.exp(0.5 * diag))  # positive diagonal
        return Posterior(mu, scale_tril=tril)


class MLPEncoder(nn.Module):
    def __init__(self, dim: int, hidden: list[int], latent_dim: int, kind: str):
        super().__init__()
        self.body = mlp([dim, *hidden], final_act=True)
        self.head = GaussianHead(hidden[-1] if hidden else dim, latent_dim, kind)

    def forward(self, x: torch.Tensor) -> Posterior:
        return self.head(self.body(x.flatten(1)))


class MLPDecoder(nn.Module):
    def __init__(self, latent_dim: int, hidden: list[int], dim: int, variance_head: bool):
        super().__init__()
        self.body = mlp([latent_dim, *hidden], final_act=True)
        width = hidden[-1] if hidden else latent_dim
        self.out = nn.Linear(width, dim)
        self.log_sigma = nn.Linear(width, dim) if variance_head else None

    def forward(self, z: torch.Tensor) -> DecoderOut:
        h = self.body(z)  # (B, H)
        return DecoderOut(self.out(h), self.log_sigma(h) if self.log_sigma is not None else None)


def _conv_channels(hidden: list[int]) -> list[int]:
    return (hidden + hidden[-1:])[:2] if hidden else [32, 64]


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (H, W -> H/4, W/4), then a linear Gaussian head."""

    def __init__(self, shape: tuple[int, int, int], hidden: list[int], latent_dim: int, kind: str):
        super().__init__()
        c, h, w = shape
        c1, c2 = _conv_channels(hidden)
        self.body = nn.Sequential(
            nn.Conv2d(c, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(), nn.Flatten()
        )
        self.head = GaussianHead(c2 * (h // 4) * (w // 4), latent_dim, kind)

    def forward(self, x: torch.Tensor) -> Posterior:
        return self.head(self.body(x))


class ConvDecoder(nn.Module):
    """Linear to (C2, H/4, W/4), then two stride-2 transposed convolutions back to (C, H, W)."""

    def __init__(self, latent_dim: int, hidden: list[int], shape: tuple[int, int, int], variance_head: bool):
        super().__init__()
        c, h, w = shape
        c1, c2 = _conv_channels(hidden)
        self.grid = (c2, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, math.prod(self.grid)), nn.ReLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU())
        self.out = nn.ConvTranspose2d(c1, c, 4, 2, 1)
        self.log_sigma = nn.ConvTranspose2d(c1, c, 4, 2, 1) if variance_head else None

    def forward(self, z: torch.Tensor) -> DecoderOut:
        h = self.up(self.fc(z).view(-1, *self.grid))  # (B, C1, H/2, W/2)
        log_sigma = self.log_sigma(h).flatten(1) if self.log_sigma is not None else None
        return DecoderOut(self.out(h).flatten(1), log_sigma)


class VAEModel(nn.Module):
    """Encoder + decoder for data of shape `data_shape` (per example); D = prod(data_shape)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, data_shape: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.data_shape, self.latent_dim = tuple(data_shape), latent_dim
        self.dim = math.prod(self.data_shape)

    def encode(self, x: torch.Tensor) -> Posterior:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> DecoderOut:
        return self.decoder(z)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images in [0, 1], (B, D)."""
        return torch.sigmoid(self.decoder(z).logits)


def _apply_spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation (Miyato et al. 2018) on every linear/conv layer of `module`."""
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            setattr(module, name, spectral_norm(child))
        else:
            _apply_spectral_norm(child)


def build_model(cfg: ModelConfig, data_shape: tuple[int, ...], spec: NetSpec = NetSpec()) -> VAEModel:
    """Build the encoder/decoder pair for `cfg` and data of shape `data_shape`."""
    dim = math.prod(data_shape)
    kind = cfg.covariance if spec.stochastic else "deterministic"
    if cfg.arch == "conv":
        if len(data_shape) != 3 or data_shape[1] % 4 or data_shape[2] % 4:
            raise ConfigError(
                f"invalid value for 'model.arch': 'conv' needs images (C, H, W) with H and W divisible by 4, "
                f"got data of shape {tuple(data_shape)} (allowed: mlp for this data)"
            )
        enc = ConvEncoder(data_shape, cfg.hidden, cfg.latent_dim, kind)
        dec = ConvDecoder(cfg.latent_dim, cfg.hidden, data_shape, spec.variance_head)
    else:
        enc = MLPEncoder(dim, cfg.hidden, cfg.latent_dim, kind)
        dec = MLPDecoder(cfg.latent_dim, cfg.hidden[::-1], dim, spec.variance_head)
    if spec.spectral_norm:
        _apply_spectral_norm(dec)
    return VAEModel(enc, dec, data_shape, cfg.latent_dim)
