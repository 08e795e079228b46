"""Batched encoding and decoding with bounded memory, gradients off and the model in eval mode.

Every analyser goes through these two helpers, so a 60,000-image split or a 256×256 latent grid
never materialises more than `batch` examples of activations at once.
"""

from __future__ import annotations

import numpy as np
import torch

from vaeviz.distributions import Posterior


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free module)."""
    return next(model.parameters(), torch.empty(0)).device


def as_tensor(a, model: torch.nn.Module) -> torch.Tensor:
    """A numpy array or tensor on the model's device, in the dtype of its parameters (float32 unless
    the run trains in float64)."""
    p = next(model.parameters(), torch.empty(0))
    return torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a, dtype=p.dtype, device=p.device)


@torch.no_grad()
def encode_batched(model, x, batch: int = 1000) -> Posterior:
    """q(z|x) of every example of `x` (N, *shape), concatenated on the CPU."""
    model.eval()
    x = as_tensor(x, model)
    parts = [model.encode(chunk) for chunk in x.split(batch)]
    mu = torch.cat([q.mu for q in parts]).cpu()  # (N, L)
    logvar = torch.cat([q.logvar for q in parts]).cpu() if parts[0].logvar is not None else None
    tril = torch.cat([q.scale_tril for q in parts]).cpu() if parts[0].scale_tril is not None else None
    return Posterior(mu, logvar=logvar, scale_tril=tril)


@torch.no_grad()
def decode_batched(model, z, batch: int = 4096) -> np.ndarray:
    """Decoded means in [0, 1] of codes `z` (..., L) -> float32 array (..., D)."""
    model.eval()
    z = as_tensor(z, model)
    flat = z.reshape(-1, z.shape[-1])  # (M, L)
    if flat.shape[0] == 0:
        return np.zeros((*z.shape[:-1], model.dim), np.float32)
    out = torch.cat([model.decode_mean(chunk) for chunk in flat.split(batch)])  # (M, D)
    return out.reshape(*z.shape[:-1], out.shape[-1]).float().cpu().numpy()
