"""Likelihood metrics of a trained model on a split: ELBO terms, σ-independent NLL, IWAE, active units.

- ELBO (Kingma & Welling 2014, eq. 3): log p(x) ≥ E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)) = −(D + R),
  one reparameterised sample per example.
- σ-independent NLL (Rybkin et al. 2021, eq. 6 into eq. 4): with σ*² = mean squared error over the
  split and all d dimensions, −log p(x|z) summed and averaged is NLL* = d/2 · (log 2πσ*² + 1).
- IWAE bound (Burda et al. 2016, eq. 8): log p(x) ≥ E log 1/k Σ_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x);
  log p(x|z_i) is the objective's own −nll on the decoded sample, so every decoder is covered.
- Active units (Burda et al. 2016, sec. 5.2): dimensions j with Cov_x(E_q[z_j]) > 0.01.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from vaeviz.analysis.batching import as_tensor, model_device
from vaeviz.distributions import Posterior, log_mean_exp, log_std_normal
from vaeviz.distributions import sigma_free_nll as _nll_star
from vaeviz.objectives.base import Pass, forward_pass

ACTIVE_THRESHOLD = 0.01


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Run the block with the global RNG seeded, restoring the caller's RNG state afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def elbo_terms(model, objective, x, batch: int = 500, seed: int = 0) -> dict[str, float]:
    """Rate, distortion, ELBO, MSE per dimension and σ-independent NLL, in nats per example."""
    model.eval()
    device = model_device(model)
    x = as_tensor(x, model)
    rate = dist = sq = 0.0
    with seeded(seed, device):
        for chunk in x.split(batch):
            p = forward_pass(model, chunk)
            rate += float(p.q.kl().double().sum())
            dist += float(objective.nll(p).double().sum())
            sq += float((p.x - p.x_mean).double().pow(2).sum())
    n, d = x.shape[0], model.dim
    return {
        "rate": rate / n,
        "distortion": dist / n,
        "elbo": -(rate + dist) / n,
        "mse": sq / (n * d),
        "nll_sigma_free": _nll_star(sq, n, d),
    }


def sigma_free_nll(model, objective, x, batch: int = 500, seed: int = 0) -> float:
    """NLL* = d/2 (log 2πσ*² + 1) with σ*² the reconstruction MSE over the whole split `x`."""
    return elbo_terms(model, objective, x, batch, seed)["nll_sigma_free"]


def _repeat(q: Posterior, n: int) -> Posterior:
    """The posterior of a batch repeated n times along the batch axis: (B, ...) -> (n·B, ...)."""

    def rep(t):
        return None if t is None else t.repeat(n, *([1] * (t.dim() - 1)))

    return Posterior(rep(q.mu), logvar=rep(q.logvar), scale_tril=rep(q.scale_tril))


def _log_weights(model, objective, x_rep: torch.Tensor, q: Posterior, n: int) -> torch.Tensor:
    """log p(x, z_i) − log q(z_i|x) for n samples per example: x_rep (≥ n·B, D) holds x repeated -> (n, B)."""
    z = q.rsample(n)  # (n, B, L)
    flat = z.reshape(-1, z.shape[-1])  # (n·B, L)
    p = Pass(x_rep[: len(flat)], _repeat(q, n), flat, model.decode(flat))
    log_px_z = -objective.nll(p).view(n, -1)  # (n, B)
    return log_px_z + log_std_normal(z) - q.log_prob(z)


@torch.inference_mode()
def iwae_per_example(model, objective, x, k: int, chunk: int = 2048, seed: int = 0) -> np.ndarray:
    """IWAE bound per example with k importance samples, (N,). At most `chunk` decoded rows at once."""
    model.eval()
    device = model_device(model)
    x = as_tensor(x, model)
    batch = max(1, min(chunk, len(x)))
    out = []
    with seeded(seed, device):
        for xb in x.split(batch):
            q = model.encode(xb)
            if q.deterministic:
                raise ValueError("the IWAE bound needs a stochastic encoder; this run's encoder is deterministic")
            per = min(k, max(1, chunk // len(xb)))  # samples decoded together
            x_rep = xb.flatten(1).repeat(per, 1)  # (per·B, D), shared by every chunk of samples
            logw = [_log_weights(model, objective, x_rep, q, min(per, k - s)) for s in range(0, k, per)]
            out.append(log_mean_exp(torch.cat(logw).double(), 0))  # (B,)
    return torch.cat(out).cpu().numpy()


def iwae_bound(model, objective, x, k: int, chunk: int = 2048, seed: int = 0) -> float:
    """Mean IWAE bound on log p(x) over the split, nats per example."""
    return float(iwae_per_example(model, objective, x, k, chunk, seed).mean())


def unit_activity(mu) -> np.ndarray:
    """Cov_x(E_q[z_j]) per latent dimension (unbiased variance over examples): (N, L) -> (L,)."""
    mu = np.asarray(mu, dtype=np.float64)
    return mu.var(0, ddof=1) if len(mu) > 1 else np.zeros(mu.shape[1])


def active_units(mu, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Number of latent dimensions whose activity exceeds `threshold`."""
    return int((unit_activity(mu) > threshold).sum())
