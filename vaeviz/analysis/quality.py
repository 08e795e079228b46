"""Sample quality in the feature space of a small classifier trained on the labelled data.

- Fréchet distance (Heusel et al. 2017, eq. below fig. 1; Dowson & Landau 1982) between Gaussian
  fits of two feature sets: d² = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½). The trace of
  the matrix square root is Σ √λ_i over the eigenvalues of the symmetric PSD Σ_a^½ Σ_b Σ_a^½ (eigh),
  which equals tr((Σ_a Σ_b)^½) without a non-symmetric sqrtm.
- Features are the penultimate layer of an MLP classifier (D → 256 → 128 → classes, ReLU) trained
  once per labelled dataset with Adam and cached in $VAEVIZ_HOME/classifiers/<key>.pt
  (`torch.save`, loaded with `weights_only=True`). It stands in for Inception on small data, as in
  the seed papers' use of a dataset-specific network for FID and feature reconstruction.
- Reconstruction accuracy: the classifier's accuracy on decoded posterior means, g(μ(x)).
- Samplers compared (`vaeviz eval`'s `fd_prior`, `fd_gaussian`, `fd_gmm`): the prior N(0, I) and the run's
  ex-post densities of `vaeviz.samplers` (Ghosh et al. 2020, sec. 4, Table 1's "N" and "GMM" rows) fitted on
  training codes (z ~ q(z|x) or μ(x), the objective's `ex_post_fit`): one full-covariance Gaussian and a
  10-component GMM. Nothing ties a deterministic encoder's codes to N(0, I), so for an RAE the prior is
  usually the worst of the three and the GMM the best (Ghosh et al. 2020, Table 1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vaeviz.analysis.batching import decode_batched, encode_batched


def frechet_distance(feat_a, feat_b) -> float:
    """Fréchet distance between Gaussian fits of features (N_a, F) and (N_b, F)."""
    a, b = np.asarray(feat_a, dtype=np.float64), np.asarray(feat_b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    return gaussian_frechet(mu_a, cov_a, mu_b, cov_b)


def gaussian_frechet(mu_a, cov_a, mu_b, cov_b) -> float:
    """d²(N(μ_a, Σ_a), N(μ_b, Σ_b)) in closed form."""
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # Σ_a^½
    inner = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = np.asarray(mu_a) - np.asarray(mu_b)
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt, 0.0))


class SampleClassifier:
    """MLP classifier whose penultimate activations are the feature space of the Fréchet distance.

    Learned attributes: `net_` (torch module), `n_classes_`, `input_dim_`.
    """

    def __init__(self, hidden=(256, 128), steps: int = 1500, batch_size: int = 128, lr: float = 1e-3, seed: int = 0):
        self.hidden, self.steps, self.batch_size, self.lr, self.seed = tuple(hidden), steps, batch_size, lr, seed

    def _build(self, dim: int, n_classes: int) -> nn.Sequential:
        sizes, layers = [dim, *self.hidden], []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(sizes[-1], n_classes))

    def fit(self, x, y) -> SampleClassifier:
        g = torch.Generator().manual_seed(self.seed)
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32).flatten(1)  # (N, D)
        y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        self.input_dim_, self.n_classes_ = x.shape[1], int(y.max()) + 1
        torch.manual_seed(self.seed)
        self.net_ = self._build(self.input_dim_, self.n_classes_)
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr)
        for _ in range(self.steps):
            idx = torch.randint(len(x), (min(self.batch_size, len(x)),), generator=g)
            loss = nn.functional.cross_entropy(self.net_(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.net_.eval()
        return self

    @torch.no_grad()
    def _run(self, x, upto: int | None, batch: int = 4096) -> np.ndarray:
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32).flatten(1)
        body = self.net_[:upto] if upto is not None else self.net_
        return torch.cat([body(c) for c in x.split(batch)]).numpy() if len(x) else np.zeros((0, 0), np.float32)

    def features(self, x) -> np.ndarray:
        """Penultimate activations (N, hidden[-1])."""
        return self._run(x, -1)

    def predict(self, x) -> np.ndarray:
        return self._run(x, None).argmax(1)

    def score(self, x, y) -> float:
        """Accuracy on (x, y)."""
        return float((self.predict(x) == np.asarray(y)).mean())

    def save(self, path) -> None:
        meta = {"hidden": list(self.hidden), "steps": self.steps, "batch_size": self.batch_size, "lr": self.lr,
                "seed": self.seed, "input_dim": self.input_dim_, "n_classes": self.n_classes_}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_suffix(".tmp")
        torch.save({"meta": meta, "state": self.net_.state_dict()}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> SampleClassifier:
        blob = torch.load(path, weights_only=True)
        m = blob["meta"]
        clf = cls(m["hidden"], m["steps"], m["batch_size"], m["lr"], m["seed"])
        clf.input_dim_, clf.n_classes_ = m["input_dim"], m["n_classes"]
        clf.net_ = clf._build(clf.input_dim_, clf.n_classes_)
        clf.net_.load_state_dict(blob["state"])
        clf.net_.eval()
        return clf


def classifier_key(data_cfg) -> str:
    """Cache key of a dataset's classifier: its name and a hash of its config, micro subsets ignored."""
    fields = dataclasses.asdict(data_cfg)
    fields.update(n=None, per_class=None)
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{data_cfg.name}-{digest}"


def classifier_path(key: str, home=None) -> Path:
    home = Path(home or os.environ.get("VAEVIZ_HOME", Path.home() / ".vaeviz"))
    return home / "classifiers" / f"{key}.pt"


def load_or_fit_classifier(key: str, x, y, home=None, **params) -> SampleClassifier:
    """The cached classifier of `key`, or a new one fitted on (x, y) and saved."""
    path = classifier_path(key, home)
    if path.exists():
        return SampleClassifier.load(path)
    clf = SampleClassifier(**params).fit(x, y)
    clf.save(path)
    return clf


def reconstruction_accuracy(clf: SampleClassifier, model, x, y, batch: int = 1000) -> float:
    """Classifier accuracy on the decoded posterior means g(μ(x))."""
    recon = decode_batched(model, encode_batched(model, x, batch).mu, batch)  # (N, D)
    return clf.score(recon, y)


def sample_frechet(clf: SampleClassifier, model, reference_x, latents) -> float:
    """Fréchet distance between classifier features of reference data and of decoded `latents` (n, L)."""
    return frechet_distance(clf.features(reference_x), clf.features(decode_batched(model, latents)))


def frechet_by_sampler(clf: SampleClassifier, model, reference_x, samplers: dict, n: int | None = None,
                       seed: int = 0) -> dict[str, float]:
    """Fréchet distance to `reference_x` of n decoded samples from the prior N(0, I) and from each of the
    run's ex-post `samplers` ({"gaussian": ..., "gmm": ...} of `vaeviz.samplers.fitted_samplers`)."""
    n = n or len(reference_x)
    latents = {"prior": np.random.default_rng(seed).standard_normal((n, model.latent_dim)).astype(np.float32)}
    latents.update({kind: sampler.sample(n, seed) for kind, sampler in samplers.items()})
    ref = clf.features(reference_x)
    return {k: frechet_distance(ref, clf.features(decode_batched(model, z))) for k, z in latents.items()}
