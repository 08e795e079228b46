"""Held-out evaluation run by the trainer: ELBO terms, σ-independent NLL, active units, probe snapshot.

- ELBO = −(D + R) with D = E_q[−log p(x|z)] under the run's decoder and R = KL(q(z|x) ‖ p(z)).
- σ-independent NLL (Rybkin et al. 2021, eq. 6 plugged into eq. 4): σ*² = mean squared error over
  the split and all dimensions, NLL* = d/2 · (log 2πσ*² + 1), comparable across decoders.
- Active units (Burda et al. 2016, sec. 5.2): dimensions with Cov_x(E_q[z_j]) > 0.01.
The maths lives in `vaeviz.analysis.likelihood`; this module picks what the trainer logs.
"""

from __future__ import annotations

import numpy as np
import torch

from vaeviz.analysis.batching import as_tensor, encode_batched
from vaeviz.analysis.likelihood import active_units, elbo_terms


def evaluate(model, objective, x: torch.Tensor, seed: int) -> dict[str, float]:
    """Metrics of the held-out split `x` (N, *shape), one posterior sample per example drawn under
    `seed` (the caller's RNG stream is left untouched); the model's train/eval mode is restored."""
    training = model.training
    metrics = elbo_terms(model, objective, x, seed=seed)
    metrics["active_units"] = float(active_units(encode_batched(model, x).mu))
    model.train(training)
    return metrics


@torch.no_grad()
def probe_snapshot(model, objective, data, probe_size: int) -> dict[str, np.ndarray]:
    """Posterior parameters of the first `probe_size` held-out points (fixed across steps)."""
    x = as_tensor(data.x_eval[:probe_size], model)
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
