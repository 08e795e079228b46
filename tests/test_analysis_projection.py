"""PCA against scikit-learn and a known rotation; UMAP keeps neighbourhoods; both cache."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness

from vaeviz.analysis import projection
from vaeviz.analysis.projection import PCAProjection, clear_cache, project


def _rotated(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    rot, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    return rng.normal(size=(n, 4)) * np.array([3.0, 1.0, 0.1, 0.05]) @ rot.T + 5.0, rot


def test_pca_recovers_principal_axes_and_matches_sklearn():
    mu, rot = _rotated()
    pca = PCAProjection().fit(mu)
    ref = PCA(2).fit(mu)
    np.testing.assert_allclose(np.abs(pca.components_ @ rot[:, :2]), np.eye(2), atol=0.03)
    np.testing.assert_allclose(np.abs(pca.components_), np.abs(ref.components_), atol=1e-10)
    np.testing.assert_allclose(pca.explained_variance_, ref.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(np.abs(pca.transform(mu)), np.abs(ref.transform(mu)), atol=1e-9)
    np.testing.assert_allclose(pca.basis_.T @ pca.basis_, np.eye(2), atol=1e-12)


def test_project_caches_in_memory_and_on_disk(vaeviz_home, monkeypatch):
    mu, _ = _rotated(300)
    first = project(mu, "pca", key="run/1:step 5")
    assert project(mu, "pca", key="run/1:step 5") is first
    files = list((vaeviz_home / "cache" / "projections").glob("*.npy"))
    assert len(files) == 1 and "/" not in files[0].name
    clear_cache()
    monkeypatch.setattr(projection, "PCAProjection", None)  # a recomputation would fail
    np.testing.assert_array_equal(project(mu, "pca", key="run/1:step 5"), first)


def test_project_small_dims_and_bad_method():
    np.testing.assert_array_equal(project(np.array([[1.0], [2.0]])), [[1.0, 0.0], [2.0, 0.0]])
    with pytest.raises(ValueError, match="pca, umap"):
        project(np.zeros((5, 3)), "tsne")


@pytest.mark.slow  # numba compiles UMAP on first use: 10–30 s on two shared cores
def test_umap_keeps_neighbourhoods():
    rng = np.random.default_rng(1)
    mu = np.concatenate([rng.normal(size=(100, 6)), rng.normal(size=(100, 6)) + 8.0])
    out = project(mu, "umap", seed=0)
    assert out.shape == (200, 2) and np.isfinite(out).all()
    assert trustworthiness(mu, out, n_neighbors=5) > 0.9
    a, b = out[:100].mean(0), out[100:].mean(0)
    spread = max(np.sqrt(out[:100].var(0).sum()), np.sqrt(out[100:].var(0).sum()))
    assert np.linalg.norm(a - b) > 3 * spread  # the two clusters stay apart
