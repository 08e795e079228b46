"""Disentanglement: the mutual information gap (MIG) and the MI / TC / dimension-wise KL decomposition.

- MIG (Chen et al. 2018, sec. 5, eq. 6): MIG = 1/K Σ_k (I(z_j(k); v_k) − I(z_j'(k); v_k)) / H(v_k), with
  j(k), j'(k) the latents of largest and second-largest mutual information with factor v_k. As in
  disentanglement_lib, each code (the posterior means) is discretised into 20 equal-width bins and
  I, H are plug-in estimates in nats from the empirical joint histogram. Factors with more than
  `max_levels` distinct values are binned the same way; constant factors (H = 0) are skipped.
- KL decomposition (Chen et al. 2018, eq. 2): E_x KL(q(z|x) ‖ p(z)) = I_q(x; z) + KL(q(z) ‖ Π_j q(z_j))
  + Σ_j KL(q(z_j) ‖ p(z_j)), i.e. index-code MI + total correlation + dimension-wise KL. On a split of
  N examples we draw z_i ~ q(z|x_i) and evaluate q(z_i) = 1/N Σ_n q(z_i|x_n) and each
  q(z_ij) = 1/N Σ_n q(z_ij|x_n) with the whole split (the full-data mixture, no minibatch weighting),
  in chunks of samples. This is the β-TCVAE objective's estimator (vaeviz.objectives.beta_tcvae) with
  uniform weights w_ij = 1/N over the whole split, but with memory bounded by the chunk.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vaeviz.distributions import Posterior, log_normal_diag, log_normal_full, log_std_normal


def discretize(values, n_bins: int = 20) -> np.ndarray:
    """Equal-width bins over each column's range: (N, L) floats -> (N, L) ints in [0, n_bins)."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = values.min(0), values.max(0)
    width = np.where(hi > lo, hi - lo, 1.0)
    return np.clip(((values - lo) / width * n_bins).astype(np.int64), 0, n_bins - 1)


def factor_levels(factors, max_levels: int = 20) -> np.ndarray:
    """Integer level of every factor value, (N, K); columns with many distinct values are binned."""
    factors = np.asarray(factors)
    factors = factors[:, None] if factors.ndim == 1 else factors
    cols = []
    for col in factors.T:
        uniq, inverse = np.unique(col, return_inverse=True)
        cols.append(inverse if len(uniq) <= max_levels else discretize(col[:, None], max_levels)[:, 0])
    return np.stack(cols, 1)


def entropy(a) -> float:
    """Plug-in entropy in nats of integer labels (N,)."""
    p = np.bincount(a) / len(a)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(a, b) -> float:
    """Plug-in mutual information in nats between integer labels a (N,) and b (N,)."""
    nb = int(b.max()) + 1
    joint = np.bincount(a * nb + b, minlength=(int(a.max()) + 1) * nb).reshape(-1, nb) / len(a)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def mutual_information_matrix(codes, factors, n_bins: int = 20) -> np.ndarray:
    """I(z_j; v_k) for every code j and factor k, (L, K)."""
    zd, vd = discretize(codes, n_bins), factor_levels(factors)
    return np.array([[mutual_information(zd[:, j], vd[:, k]) for k in range(vd.shape[1])] for j in range(zd.shape[1])])


def mig(codes, factors, n_bins: int = 20) -> float:
    """Mutual information gap of codes (N, L) (posterior means) against ground-truth factors (N, K)."""
    codes = np.asarray(codes)
    if codes.shape[1] < 2:
        raise ValueError("MIG needs at least two latent dimensions")
    mi = mutual_information_matrix(codes, factors, n_bins)  # (L, K)
    levels = factor_levels(factors)
    h = np.array([entropy(levels[:, k]) for k in range(levels.shape[1])])  # (K,)
    top = np.sort(mi, axis=0)[::-1]  # (L, K), descending
    keep = h > 0
    if not keep.any():
        raise ValueError("every factor is constant: MIG is undefined")
    return float(((top[0] - top[1])[keep] / h[keep]).mean())


def _pair_log_densities(zc: torch.Tensor, mu, logvar, tril) -> tuple[torch.Tensor, torch.Tensor]:
    """log q(z_i|x_n) (c, N) and per-dimension log q(z_ij|x_n) (c, N, L) for a chunk of samples zc (c, L)."""
    per_dim = log_normal_diag(zc[:, None, :], mu[None], logvar[None])  # (c, N, L), marginal variances
    if tril is None:
        return per_dim.sum(-1), per_dim
    return log_normal_full(zc[:, None, :].expand(-1, mu.shape[0], -1), mu, tril), per_dim


def kl_decomposition(mu, logvar=None, scale_tril=None, z=None, seed: int = 0, chunk: int = 256) -> dict[str, float]:
    """Index-code MI, total correlation and dimension-wise KL of a Gaussian encoder on a split.

    mu (N, L) with logvar (N, L) or scale_tril (N, L, L); z (N, L) one sample per example (drawn
    with `seed` when omitted). Returns nats per example: `mi`, `tc`, `dim_kl` and their sum `kl`
    (the rate, estimated with the same samples). Memory: `chunk` × N × L at once.
    """
    q = Posterior(*(None if a is None else torch.as_tensor(np.asarray(a), dtype=torch.float64)
                    for a in (mu, logvar, scale_tril)))
    if q.deterministic:
        raise ValueError("the MI/TC/dimKL decomposition needs a Gaussian encoder; this one is deterministic")
    if z is None:
        z = q.rsample(generator=torch.Generator().manual_seed(seed))  # (N, L)
    z = torch.as_tensor(np.asarray(z), dtype=torch.float64)
    logvar = q.variance.log()  # marginal variances, (N, L)
    log_qzx, log_qz, log_prod = [], [], []
    for i0, zc in zip(range(0, len(z), chunk), z.split(chunk)):
        pair, per_dim = _pair_log_densities(zc, q.mu, logvar, q.scale_tril)
        log_qzx.append(pair[torch.arange(len(zc)), torch.arange(i0, i0 + len(zc))])  # own example, (c,)
        log_qz.append(torch.logsumexp(pair, 1))  # (c,)
        log_prod.append(torch.logsumexp(per_dim, 1).sum(-1))  # (c,)
    n, dim = q.mu.shape
    log_qzx, log_qz = torch.cat(log_qzx), torch.cat(log_qz) - math.log(n)
    log_prod = torch.cat(log_prod) - dim * math.log(n)
    mi, tc, dim_kl = (log_qzx - log_qz).mean(), (log_qz - log_prod).mean(), (log_prod - log_std_normal(z)).mean()
    return {"mi": float(mi), "tc": float(tc), "dim_kl": float(dim_kl), "kl": float(mi + tc + dim_kl)}
