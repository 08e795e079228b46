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
- What each latent encodes (`LatentFactors`): the rows of MIG's MI matrix. Latent j's factor is
  argmax_k I(z_j; v_k) / H(v_k), its gap the difference to its second-best factor (the per-latent gap of MIG-sup,
  Li et al. 2020, "Progressive learning and disentanglement of hierarchical representations", ICLR); latents with
  dimension-wise KL ≈ 0 are inactive, latents whose best normalised MI is below `MIN_NMI` predict no factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vaeviz.analysis.likelihood import ACTIVE_THRESHOLD, unit_activity
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


# ----------------------------------------------------------------------------- what each latent encodes

MIN_NMI = 0.1  # a latent whose best I(z_j; v_k) / H(v_k) is below this predicts no factor
MIN_KL = 0.01  # nats per example: a latent with less dimension-wise KL than this is inactive (KL ≈ 0)
CATEGORICAL_LEVELS = 10  # a factor of at most this many distinct whole numbers is categorical (e.g. shape)


def dimension_kl(mu, variance) -> np.ndarray:
    """Mean over examples of KL(q(z_j|x) ‖ N(0, 1)) per latent, from marginal means and variances (N, L) -> (L,)."""
    mu, var = np.asarray(mu, dtype=np.float64), np.asarray(variance, dtype=np.float64)
    return (0.5 * (mu**2 + var - 1.0 - np.log(var))).mean(0)


def is_categorical(values, max_levels: int = CATEGORICAL_LEVELS) -> bool:
    """Whether a factor's values (N,) are few whole numbers (a label such as shape), not a continuous quantity."""
    values = np.asarray(values, dtype=np.float64)
    return bool(np.all(values == np.round(values)) and len(np.unique(values)) <= max_levels)


@dataclass(frozen=True)
class LatentFactor:
    """What latent z_{dim+1} encodes. `status`: 'factor' (it predicts factor number `factor`), 'none' (its best
    normalised MI is too small; `factor` None) or 'inactive' (KL ≈ 0; `factor` None). `name`, `mi`, `nmi` and
    `gap` describe its best factor in every case: its name, I(z_j; v_k) in nats, that MI over H(v_k), and nmi
    minus the latent's second-best nmi; `kl` its dimension-wise KL in nats (None for a deterministic encoder)."""

    dim: int
    factor: int | None
    name: str | None
    mi: float
    nmi: float
    gap: float
    kl: float | None
    status: str

    @property
    def short(self) -> str:
        """'z3 · x', 'z5 · inactive' or 'z4 · no factor'."""
        what = {"factor": self.name, "inactive": "inactive", "none": "no factor"}[self.status]
        return f"z{self.dim + 1} · {what}"

    @property
    def label(self) -> str:
        """'z3 · x (MI 0.82 nats, gap 0.60)', 'z5 · inactive (KL 0.00 nats)', 'z4 · no factor (best: x, NMI 0.04)'."""
        if self.status == "factor":
            return f"{self.short} (MI {self.mi:.2f} nats, gap {self.gap:.2f})"
        if self.status == "inactive":
            return f"{self.short} (KL {self.kl:.2f} nats)" if self.kl is not None else f"{self.short} (Var μ ≈ 0)"
        return f"{self.short} (best: {self.name}, NMI {self.nmi:.2f})"


class LatentFactors:
    """Per latent, the known factor it best predicts (Chen et al. 2018's MI matrix, read by rows).

    `fit(codes, factors, names, kl=None)`: codes (N, L) posterior means, factors (N, K), names (K,), kl (L,) the
    dimension-wise KL (`dimension_kl`) or None. The MI matrix I(z_j; v_k) (`mi_`, (L, K)) is the one `mig`
    uses (codes in `n_bins` equal-width bins, plug-in estimates in nats); `entropy_` (K,) holds H(v_k). Latent j's
    best factor maximises the normalised MI I(z_j; v_k) / H(v_k); its gap is that minus its second best (the
    per-latent gap of MIG-sup, Li et al. 2020). A latent is inactive when its KL is below `min_kl` (or, without a
    KL, its posterior means vary less than the active-units threshold, Var_x μ_j ≤ 0.01), and predicts no factor
    when its best normalised MI is below `min_nmi`. `mig_` is MIG from the same matrix; `n_` the sample size.
    """

    def __init__(self, n_bins: int = 20, min_nmi: float = MIN_NMI, min_kl: float = MIN_KL):
        self.n_bins, self.min_nmi, self.min_kl = n_bins, min_nmi, min_kl

    def fit(self, codes, factors, names, kl=None) -> LatentFactors:
        codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
        factors = factors[:, None] if factors.ndim == 1 else factors
        levels = factor_levels(factors)
        self.n_ = len(codes)
        self.mi_ = mutual_information_matrix(codes, factors, self.n_bins)  # (L, K)
        self.entropy_ = np.array([entropy(levels[:, k]) for k in range(levels.shape[1])])  # (K,)
        nmi = np.where(self.entropy_ > 0, self.mi_ / np.where(self.entropy_ > 0, self.entropy_, 1.0), 0.0)  # (L, K)
        active = unit_activity(codes) > ACTIVE_THRESHOLD if kl is None else np.asarray(kl) >= self.min_kl  # (L,)
        self.latents_ = [self._latent(j, nmi[j], list(names), active[j], None if kl is None else float(kl[j]))
                         for j in range(codes.shape[1])]
        top = np.sort(self.mi_, axis=0)[::-1]  # (L, K), descending over latents
        keep = self.entropy_ > 0
        second = top[1] if len(top) > 1 else np.zeros_like(top[0])
        self.mig_ = float(((top[0] - second)[keep] / self.entropy_[keep]).mean()) if keep.any() else float("nan")
        return self

    def _latent(self, j: int, nmi: np.ndarray, names: list[str], active: bool, kl: float | None) -> LatentFactor:
        """Latent j from its row of normalised MI (K,)."""
        order = np.argsort(nmi)[::-1]
        best = int(order[0])
        gap = float(nmi[best] - (nmi[order[1]] if len(order) > 1 else 0.0))
        status = "inactive" if not active else "factor" if nmi[best] >= self.min_nmi else "none"
        return LatentFactor(j, best if status == "factor" else None, names[best], float(self.mi_[j, best]),
                            float(nmi[best]), gap, kl, status)
