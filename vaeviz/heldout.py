"""Held-out evaluation run by the trainer: ELBO terms, σ-independent NLL, active units, probe snapshot.

Every evaluation scores the model of that step as one fixed model: first `calibrate` measures the training
split's reconstruction MSE (one posterior sample per example, the first 10,000 examples) and hands it to the
objective, so σ-VAE's closed form and GECO score every held-out metric at that one σ*²; posterior noise is
fixed per example (`vaeviz.analysis.likelihood.ExampleNoise`).
- ELBO = −(D + R) with D = E_q[−log p(x|z)] under the run's decoder and R = KL(q(z|x) ‖ p(z)).
- σ-independent NLL (Rezende & Viola 2018, "Taming VAEs", App. D; Rybkin et al. 2021, eq. 6 into eq. 4):
  σ*² = the TRAINING split's MSE at this step, applied to the eval split,
  NLL* = d/2 · log 2πσ*² + SSE_eval / (2σ*² · n) = d/2 · (log 2πσ*² + MSE_eval / MSE_train).
- Active units (Burda et al. 2016, sec. 5.2): dimensions with Cov_x(E_q[z_j]) > 0.01.
- A deterministic encoder (RAE, AE) has no posterior: no `elbo` and no `rate` are logged (they are not 0);
  `z_norm` = ½‖z‖² averaged over the eval split (Ghosh et al. 2020, eq. 11's L_z) is logged instead.
The maths lives in `vaeviz.analysis.likelihood`; this module picks what the trainer logs.
"""

from __future__ import annotations

import numpy as np
import torch

from vaeviz.analysis.batching import as_tensor, encode_batched
from vaeviz.analysis.likelihood import active_units, calibrate, elbo_terms


def evaluate(model, objective, x: torch.Tensor, x_train: torch.Tensor, seed: int) -> dict[str, float]:
    """Metrics of the held-out split `x` (N, *shape) after calibrating the objective on the training split
    `x_train`; one posterior sample per example, its noise fixed by (`seed`, example index) (the caller's RNG
    stream is left untouched); the model's train/eval mode is restored."""
    training = model.training
    mse = calibrate(model, objective, x_train, seed)
    metrics = elbo_terms(model, objective, x, seed=seed, train_mse=mse)
    q = encode_batched(model, x)
    metrics["active_units"] = float(active_units(q.mu))
    if q.deterministic:  # no q(z|x): neither a rate nor an ELBO exists
        del metrics["elbo"], metrics["rate"]
        metrics["z_norm"] = float(0.5 * q.mu.double().pow(2).sum(1).mean())  # ½‖z‖², (N, L) -> scalar
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
