"""Ex-post density estimation on training latents, for sampling any model (Ghosh et al. 2020, sec. 4).

A model's latent codes (μ for Gaussian encoders, E(x) for deterministic ones) are fitted with a density
and new codes drawn from it are decoded: the RAE's way to sample, and often better than the prior for
VAEs, whose aggregate posterior leaves holes in N(0, I).
- `GaussianSampler` ("N" in the paper): one full-covariance Gaussian, maximum-likelihood mean and
  covariance (plus `reg_covar` on the diagonal), sampled as μ + L ε with L the Cholesky factor.
- `GMMSampler` ("GMM (k = 10)"): a full-covariance Gaussian mixture fitted by EM (scikit-learn), with
  k = min(n_components, number of latents); sampled by drawing a component, then μ_c + L_c ε.
scikit-learn style: `fit` returns self, learned attributes end in `_`. Saved as `.npz` (no pickle).

What they are fitted on (`fit_on`): "sample" draws one code z_i ~ q(z|x_i) per training example, so the
fitted density estimates the aggregate posterior q(z) = 1/N Σ q(z|x_i) itself (σ-VAE, Rybkin et al. 2021,
§2.1: "fit the aggregate posterior"); its covariance tends to Cov(μ) + E[Σ(x)] (law of total covariance).
"mean" fits the codes μ(x) (Ghosh et al. 2020, sec. 4, for the RAE's deterministic E(x)); its covariance
is Cov(μ). Each objective names its paper's choice in `Objective.ex_post_fit`, and every caller passes it.
The draw is seeded (the run's `train.seed`), so a refit gives the same sampler.

A run's samplers are fitted once per (step, fit_on) and saved in its folder under a name that encodes both:
training saves the final step's, and every consumer (the Traversals page, Compare and `vaeviz eval`'s
Fréchet distances) reads them through `fitted_samplers`, which fits and saves the ones of an older run, an
intermediate step or another `fit_on` on first use.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from vaeviz.analysis.batching import decode_batched, encode_batched
from vaeviz.distributions import Posterior

log = logging.getLogger(__name__)


def _chol(cov: np.ndarray) -> np.ndarray:
    """Cholesky factors of covariances (..., L, L), in float64."""
    return np.linalg.cholesky(np.asarray(cov, dtype=np.float64))


class Sampler:
    """Shared save/load: a fitted sampler is its `kind` plus the arrays of `arrays()`, in an `.npz`."""

    kind = ""

    def arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """Write the fitted sampler to `path` (.npz) atomically: a reader never sees a partial file."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, kind=np.array(self.kind), **self.arrays())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> Sampler:
        """Read a sampler written by `save` (no pickle); on a subclass, the kind must match."""
        with np.load(Path(path), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        kind = str(arrays.pop("kind", ""))
        if kind not in SAMPLERS or (cls is not Sampler and kind != cls.kind):
            want = cls.kind or "sampler"
            raise ValueError(f"{path}: not a saved {want} (kind {kind!r}; known: {', '.join(SAMPLERS)})")
        return SAMPLERS[kind].from_arrays(arrays)


class GaussianSampler(Sampler):
    """A single full-covariance Gaussian fitted to latents."""

    kind = "gaussian"

    def __init__(self, reg_covar: float = 1e-6):
        self.reg_covar = reg_covar

    def fit(self, latents: np.ndarray) -> GaussianSampler:
        z = np.asarray(latents, dtype=np.float64)  # (N, L)
        self.mean_ = z.mean(0)  # (L,)
        diff = z - self.mean_
        self.covariance_ = diff.T @ diff / len(z) + self.reg_covar * np.eye(z.shape[1])  # (L, L)
        return self

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n latents (n, L), float32."""
        eps = np.random.default_rng(seed).standard_normal((n, len(self.mean_)))
        return (self.mean_ + eps @ _chol(self.covariance_).T).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean_": self.mean_, "covariance_": self.covariance_, "reg_covar": np.array(self.reg_covar)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> GaussianSampler:
        s = cls(float(a["reg_covar"]))
        s.mean_, s.covariance_ = a["mean_"], a["covariance_"]
        return s


class GMMSampler(Sampler):
    """A full-covariance Gaussian mixture (k components) fitted to latents by EM."""

    kind = "gmm"

    def __init__(self, n_components: int = 10, reg_covar: float = 1e-6, seed: int = 0, max_iter: int = 200):
        self.n_components, self.reg_covar, self.seed, self.max_iter = n_components, reg_covar, seed, max_iter

    def fit(self, latents: np.ndarray) -> GMMSampler:
        z = np.asarray(latents, dtype=np.float64)  # (N, L)
        k = min(self.n_components, len(z))
        gmm = GaussianMixture(k, covariance_type="full", reg_covar=self.reg_covar, max_iter=self.max_iter,
                              random_state=self.seed).fit(z)
        self.weights_, self.means_, self.covariances_ = gmm.weights_, gmm.means_, gmm.covariances_  # (k,) (k,L) (k,L,L)
        self.n_components_ = k
        return self

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n latents (n, L), float32: a component c ~ weights_, then μ_c + L_c ε."""
        rng = np.random.default_rng(seed)
        comp = rng.choice(len(self.weights_), size=n, p=self.weights_ / self.weights_.sum())  # (n,)
        eps = rng.standard_normal((n, self.means_.shape[1]))  # (n, L)
        chol = _chol(self.covariances_)[comp]  # (n, L, L)
        return (self.means_[comp] + np.einsum("nij,nj->ni", chol, eps)).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        params = np.array([self.n_components, self.reg_covar, self.seed, self.max_iter], dtype=np.float64)
        return {"weights_": self.weights_, "means_": self.means_, "covariances_": self.covariances_, "params": params}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> GMMSampler:
        k, reg, seed, max_iter = a["params"].tolist()
        s = cls(int(k), reg, int(seed), int(max_iter))
        s.weights_, s.means_, s.covariances_ = a["weights_"], a["means_"], a["covariances_"]
        s.n_components_ = len(s.weights_)
        return s


SAMPLERS = {"gaussian": GaussianSampler, "gmm": GMMSampler}
FIT_ON = ("sample", "mean")  # z ~ q(z|x) (the aggregate posterior) or μ(x)
MAX_POINTS = 10_000  # training codes a run's samplers are fitted on


def decode_samples(model, sampler: Sampler, n: int, seed: int = 0) -> np.ndarray:
    """Decode n sampled latents to data in [0, 1], shape (n, *data_shape)."""
    return decode_batched(model, sampler.sample(n, seed)).reshape(n, *model.data_shape)


def sampler_paths(folder: str | Path, step: int, fit_on: str = "sample") -> dict[str, Path]:
    """Where a run's samplers of `step` fitted on `fit_on` are saved:
    `folder/samplers/step_XXXXXXXX_<fit_on>_<kind>.npz`, so two choices of `fit_on` never collide."""
    _check_fit_on(fit_on)
    return {kind: Path(folder) / "samplers" / f"step_{step:08d}_{fit_on}_{kind}.npz" for kind in SAMPLERS}


def _check_fit_on(fit_on: str) -> None:
    if fit_on not in FIT_ON:
        raise ValueError(f"fit_on must be one of {', '.join(FIT_ON)}, not {fit_on!r}")


def training_codes(model, x_train, fit_on: str = "sample", max_points: int = MAX_POINTS,
                   seed: int = 0) -> np.ndarray:
    """The codes (N, L), float64, the samplers are fitted on: of the first `max_points` training examples, one
    z_i = μ_i + L_i ε_i ~ q(z|x_i) each ("sample", ε from a generator seeded by `seed`, drawn in float64 for
    all N at once so it depends on neither the batch nor the run's dtype) or μ_i ("mean"). A deterministic
    encoder's sample is its code."""
    _check_fit_on(fit_on)
    q = encode_batched(model, x_train[:max_points])
    mu = q.mu.double()  # (N, L)
    if fit_on == "mean" or q.deterministic:
        return mu.numpy()
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)  # (N, L)
    tril = None if q.scale_tril is None else q.scale_tril.double()
    logvar = None if q.logvar is None else q.logvar.double()
    return Posterior(mu, logvar=logvar, scale_tril=tril).rsample(eps=eps).numpy()


def fitted_samplers(model, x_train, folder: str | Path | None, step: int, fit_on: str = "sample",
                    max_points: int = MAX_POINTS, seed: int = 0) -> dict[str, Sampler]:
    """The run's ex-post samplers at `step`, {"gaussian": ..., "gmm": ...}: the one path every consumer takes.

    `fit_on` is the objective's `ex_post_fit` ("sample" or "mean", see the module docstring). Read from
    `folder/samplers/` when saved there (training saves the final step's); otherwise fitted on
    `training_codes` of the first `max_points` training examples (the draw and the GMM seeded by `seed`, the
    run's `train.seed`) and saved, so an old run or an intermediate step is fitted once too. `folder=None`
    fits without saving. An unreadable saved file is refitted and overwritten.
    """
    paths = sampler_paths(folder, step, fit_on) if folder is not None else {}
    saved = _load_saved(paths)
    if saved is not None:
        return saved
    codes = training_codes(model, x_train, fit_on, max_points, seed)  # (N, L)
    fitted = {"gaussian": GaussianSampler().fit(codes), "gmm": GMMSampler(seed=seed).fit(codes)}
    for kind, path in paths.items():
        _save_quietly(fitted[kind], path)
    return fitted


def _load_saved(paths: dict[str, Path]) -> dict[str, Sampler] | None:
    """The samplers saved at `paths`, or None when one is missing or unreadable."""
    if not paths or not all(p.is_file() for p in paths.values()):
        return None
    try:
        return {kind: SAMPLERS[kind].load(path) for kind, path in paths.items()}
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        log.warning("refitting the ex-post samplers: a saved one is unreadable (%s)", e)
        return None


def _save_quietly(sampler: Sampler, path: Path) -> None:
    """Save `sampler`; a run folder that cannot be written to only costs a refit next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sampler.save(path)
    except OSError as e:
        log.warning("could not save the ex-post sampler %s (%s)", path, e)
