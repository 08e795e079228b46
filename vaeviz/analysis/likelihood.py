"""Likelihood metrics of one fixed trained model on a split: ELBO terms, σ-independent NLL, IWAE, active units.

A held-out metric scores one fixed model, whatever the chunk size of the pass:
- posterior noise is drawn per example (`ExampleNoise`): example i's ε is fixed by (seed, i), so a pass in
  chunks of 1, 7 or 500 examples sees the same samples;
- a decoder σ measured from data (σ-VAE's closed form, GECO) is measured once, on the training split, before
  the evaluation (`calibrate` → `Objective.calibrate`), never refitted on the chunk being scored.
Metrics:
- ELBO (Kingma & Welling 2014, eq. 3): log p(x) ≥ E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)) = −(D + R),
  one reparameterised sample per example.
- σ-independent NLL (Rezende & Viola 2018, "Taming VAEs", App. D; Rybkin et al. 2021, eq. 6 into eq. 4):
  the Gaussian NLL at the σ that is optimal on the TRAINING split, σ*² = MSE_train per dimension
  (`train_mse`, the same measurement `calibrate` makes), applied to the scored (eval) split of n examples:
      NLL* = d/2 · log 2πσ*² + SSE_eval / (2σ*² · n) = d/2 · (log 2πσ*² + r),  r = MSE_eval / MSE_train.
  Without a training MSE, σ*² is the scored split's own MSE, r = 1 (`distributions.sigma_free_nll`).
- IWAE bound (Burda et al. 2016, eq. 8): log p(x) ≥ E log 1/k Σ_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x);
  log p(x|z_i) is the objective's own −nll on the decoded sample, so every decoder is covered.
- Active units (Burda et al. 2016, sec. 5.2): dimensions j with Cov_x(E_q[z_j]) > 0.01.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from vaeviz.analysis.batching import as_tensor
from vaeviz.distributions import Posterior, log_mean_exp, log_std_normal
from vaeviz.distributions import sigma_free_nll as _nll_star
from vaeviz.objectives.base import Pass

ACTIVE_THRESHOLD = 0.01
TRAIN_MSE_EXAMPLES = 10_000  # training examples whose MSE sets σ* (all of a smaller split)
NOISE_BLOCK = 256  # examples per block of noise drawn by one seeded generator (fewer for a large event)
NOISE_BLOCK_VALUES = 1 << 20  # at most this many normals per block (4 MB in float32): k·L of IWAE can be large
TRAIN, EVAL, IWAE = 0, 1, 2  # noise streams: the training-split MSE, the one-sample pass, the IWAE samples


def _block_seed(seed: int, stream: int, block: int) -> int:
    """A 63-bit generator seed mixed from (seed, stream, block) by NumPy's SeedSequence."""
    state = np.random.SeedSequence([seed & (2**64 - 1), stream, block]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


class ExampleNoise:
    """Standard-normal noise of shape `event` for every example of a split, fixed by (seed, stream, index):
    example i's noise is row i mod m of block ⌊i / m⌋, m = `rows` (NOISE_BLOCK, fewer for a large event: fixed
    by the event's shape), drawn on the CPU by a generator seeded from (seed, stream, block), in `like`'s dtype,
    then moved to its device. Chunks of any size see the same noise; the last block used is kept, so a pass
    in order draws each block once."""

    def __init__(self, seed: int, stream: int, event: tuple[int, ...], like: torch.Tensor):
        self.seed, self.stream, self.event = seed, stream, tuple(event)
        self.rows = max(1, min(NOISE_BLOCK, NOISE_BLOCK_VALUES // max(1, math.prod(self.event))))
        self.dtype, self.device = like.dtype, like.device
        self._last: tuple[int, torch.Tensor] | None = None

    def _block(self, b: int) -> torch.Tensor:
        """Block b's noise, (rows, *event)."""
        if self._last is None or self._last[0] != b:
            gen = torch.Generator().manual_seed(_block_seed(self.seed, self.stream, b))
            draw = torch.randn((self.rows, *self.event), generator=gen, dtype=self.dtype)
            self._last = (b, draw.to(self.device))
        return self._last[1]

    def take(self, start: int, stop: int) -> torch.Tensor:
        """The noise of examples start, ..., stop − 1: (stop − start, *event)."""
        parts, m = [], self.rows
        for b in range(start // m, (stop - 1) // m + 1):
            parts.append(self._block(b)[max(start - b * m, 0):min(stop - b * m, m)])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def one_sample_passes(model, x: torch.Tensor, batch: int, seed: int, stream: int = EVAL) -> Iterator[Pass]:
    """Encode, sample z = μ + σ ⊙ ε once per example (ε from `ExampleNoise`) and decode, `batch` examples
    of x (N, *shape) at a time; a deterministic encoder decodes z = μ."""
    noise = None
    for start in range(0, len(x), max(1, batch)):
        chunk = x[start:start + max(1, batch)]
        q = model.encode(chunk)
        if noise is None:
            noise = ExampleNoise(seed, stream, tuple(q.mu.shape[1:]), q.mu)
        z = q.rsample(eps=None if q.deterministic else noise.take(start, start + len(chunk)))  # (B, L)
        yield Pass(chunk.flatten(1), q, z, model.decode(z))


def _squared_error(model, x: torch.Tensor, batch: int, seed: int, stream: int) -> float:
    """Σ over examples and dimensions of (x − g(z))², one posterior sample per example."""
    return sum(float((p.x - p.x_mean).double().pow(2).sum()) for p in one_sample_passes(model, x, batch, seed, stream))


@torch.no_grad()
def train_mse(model, x_train, seed: int = 0, batch: int = 500, limit: int = TRAIN_MSE_EXAMPLES) -> float:
    """Reconstruction MSE per data dimension of the training split: one posterior sample per example (noise
    fixed per example, so the value does not depend on `batch`) on the first `limit` examples."""
    model.eval()
    x = as_tensor(x_train[:limit], model)
    return _squared_error(model, x, batch, seed, TRAIN) / (len(x) * model.dim)


def calibrate(model, objective, x_train, seed: int = 0, batch: int = 500) -> float:
    """Fix the model before a held-out evaluation: measure the training split's MSE (`train_mse`) and tell the
    objective (`Objective.calibrate`), which for σ-VAE's closed form and GECO sets σ*² = that MSE (Rybkin
    et al. 2021, eq. 6 over the training split) for every held-out metric. Returns the MSE (NLL*'s σ*²)."""
    mse = train_mse(model, x_train, seed, batch)
    objective.calibrate(mse)
    return mse


@torch.no_grad()
def elbo_terms(model, objective, x, batch: int = 500, seed: int = 0,
               train_mse: float | None = None) -> dict[str, float]:
    """Rate, distortion, ELBO, MSE per dimension and σ-independent NLL of split x, in nats per example, one
    posterior sample per example. `train_mse`: the training split's MSE, the σ*² of NLL* (module docstring);
    a σ-VAE or GECO objective must have been calibrated (`calibrate`) first."""
    model.eval()
    x = as_tensor(x, model)
    rate = dist = sq = 0.0
    for p in one_sample_passes(model, x, batch, seed):
        rate += float(p.q.kl().double().sum())
        dist += float(objective.nll(p).double().sum())
        sq += float((p.x - p.x_mean).double().pow(2).sum())
    n, d = x.shape[0], model.dim
    return {
        "rate": rate / n,
        "distortion": dist / n,
        "elbo": -(rate + dist) / n,
        "mse": sq / (n * d),
        "nll_sigma_free": _nll_star(sq, n, d, train_mse),
    }


@torch.no_grad()
def sigma_free_nll(model, objective, x, batch: int = 500, seed: int = 0, x_train=None) -> float:
    """NLL* = d/2 (log 2πσ*² + r), r = MSE_x / σ*², of split x with σ*² the MSE of `x_train` (the training
    split, `train_mse`); without `x_train`, σ*² = x's own MSE and r = 1. The objective is not needed."""
    mse = None if x_train is None else train_mse(model, x_train, seed, batch)
    model.eval()
    x = as_tensor(x, model)
    return _nll_star(_squared_error(model, x, batch, seed, EVAL), len(x), model.dim, mse)


def _repeat(q: Posterior, n: int) -> Posterior:
    """The posterior of a batch repeated n times along the batch axis: (B, ...) -> (n·B, ...)."""

    def rep(t):
        return None if t is None else t.repeat(n, *([1] * (t.dim() - 1)))

    return Posterior(rep(q.mu), logvar=rep(q.logvar), scale_tril=rep(q.scale_tril))


def _log_weights(model, objective, x_rep: torch.Tensor, q: Posterior, eps: torch.Tensor) -> torch.Tensor:
    """log p(x, z_i) − log q(z_i|x) for the n samples z_i = μ + A ε_i of `eps` (n, B, L); x_rep (≥ n·B, D)
    holds x repeated -> (n, B)."""
    n = eps.shape[0]
    z = q.rsample(n, eps=eps)  # (n, B, L)
    flat = z.reshape(-1, z.shape[-1])  # (n·B, L)
    p = Pass(x_rep[: len(flat)], _repeat(q, n), flat, model.decode(flat))
    log_px_z = -objective.nll(p).view(n, -1)  # (n, B)
    return log_px_z + log_std_normal(z) - q.log_prob(z)


@torch.inference_mode()
def iwae_per_example(model, objective, x, k: int, chunk: int = 2048, seed: int = 0,
                     batch: int | None = None) -> np.ndarray:
    """IWAE bound per example with k importance samples, (N,). `batch` examples are encoded together
    (default: min(chunk, N)) and their samples decoded at most max(chunk, batch) rows at once. The k noise
    draws of example i are fixed by (seed, i), so the result does not depend on `batch` or `chunk`."""
    model.eval()
    x = as_tensor(x, model)
    batch = max(1, min(batch or chunk, len(x)))
    noise, out = None, []
    for start in range(0, len(x), batch):
        xb = x[start:start + batch]
        q = model.encode(xb)
        if q.deterministic:
            raise ValueError("the IWAE bound needs a stochastic encoder; this run's encoder is deterministic")
        if noise is None:
            noise = ExampleNoise(seed, IWAE, (k, q.mu.shape[-1]), q.mu)
        eps = noise.take(start, start + len(xb)).transpose(0, 1)  # (k, B, L)
        per = min(k, max(1, chunk // len(xb)))  # samples decoded together
        x_rep = xb.flatten(1).repeat(per, 1)  # (per·B, D), shared by every chunk of samples
        logw = [_log_weights(model, objective, x_rep, q, eps[s:s + per]) for s in range(0, k, per)]
        out.append(log_mean_exp(torch.cat(logw).double(), 0))  # (B,)
    return torch.cat(out).cpu().numpy()


def iwae_bound(model, objective, x, k: int, chunk: int = 2048, seed: int = 0, batch: int | None = None) -> float:
    """Mean IWAE bound on log p(x) over the split, nats per example (`iwae_per_example`)."""
    return float(iwae_per_example(model, objective, x, k, chunk, seed, batch).mean())


def unit_activity(mu) -> np.ndarray:
    """Cov_x(E_q[z_j]) per latent dimension (unbiased variance over examples): (N, L) -> (L,)."""
    mu = np.asarray(mu, dtype=np.float64)
    return mu.var(0, ddof=1) if len(mu) > 1 else np.zeros(mu.shape[1])


def active_units(mu, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Number of latent dimensions whose activity exceeds `threshold`."""
    return int((unit_activity(mu) > threshold).sum())
