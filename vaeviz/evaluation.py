"""Held-out evaluation run by the trainer: ELBO terms, σ-independent NLL, active units, probe snapshot.

- ELBO = −(D + R) with D = E_q[−log p(x|z)] under the run's decoder and R = KL(q(z|x) ‖ p(z)).
- σ-independent NLL (Rybkin et al. 2021, eq. 6 plugged into eq. 4): σ*² = mean squared error over
  the split and all dimensions, NLL* = d/2 · (log 2πσ*² + 1), comparable across decoders.
- Active units (Burda et al. 2016, sec. 5.2): dimensions with Cov_x(E_q[z_j]) > 0.01.
"""

from __future__ import annotations

import numpy as np
import torch

from vaeviz.distributions import sigma_free_nll

ACTIVE_THRESHOLD = 0.01


def active_units(mu: torch.Tensor | np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Number of latent dimensions whose posterior mean varies across data: (N, L) -> int."""
    mu = torch.as_tensor(mu, dtype=torch.float64)
    return int((mu.var(0, unbiased=True) > threshold).sum()) if mu.shape[0] > 1 else 0


@torch.no_grad()
def evaluate(model, objective, x: torch.Tensor, batch: int = 1000) -> dict[str, float]:
    """Metrics of the held-out split `x` (N, *shape), one posterior sample per example."""
    rate = dist = sq = 0.0
    mus = []
    for chunk in x.split(batch):
        p = objective.run(model, chunk)
        rate += float(p.q.kl().sum())
        dist += float(objective.nll(p).sum())
        sq += float((p.x - p.x_mean).double().pow(2).sum())
        mus.append(p.q.mu)
    n, d = x.shape[0], model.dim
    return {
        "rate": rate / n,
        "distortion": dist / n,
        "elbo": -(rate + dist) / n,
        "mse": sq / (n * d),
        "nll_sigma_free": sigma_free_nll(sq, n, d),
        "active_units": float(active_units(torch.cat(mus))),
    }


@torch.no_grad()
def probe_snapshot(model, objective, data, probe_size: int) -> dict[str, np.ndarray]:
    """Posterior parameters of the first `probe_size` held-out points (fixed across steps)."""
    x = torch.as_tensor(data.x_eval[:probe_size], device=next(model.parameters()).device)
    q = model.encode(x)
    arrays = {"mu": q.mu.cpu().numpy()}
    if q.logvar is not None:
        arrays["logvar"] = q.logvar.cpu().numpy()
    if q.scale_tril is not None:
        arrays["scale_tril"] = q.scale_tril.cpu().numpy()
    if data.y_eval is not None:
        arrays["labels"] = np.asarray(data.y_eval[:probe_size])
    for name, value in objective.state_arrays().items():
        arrays[name] = np.asarray(value)
    return arrays
