"""Ex-post samplers: fitted moments against numpy, mixture recovery, exact save/load round trips, decoding,
and a run's samplers fitted once per step and read back."""

import numpy as np
import pytest
import torch

from vaeviz.analysis.batching import encode_batched
from vaeviz.config import ModelConfig
from vaeviz.nets import NetSpec, build_model
from vaeviz.samplers import (
    GaussianSampler,
    GMMSampler,
    Sampler,
    decode_samples,
    fitted_samplers,
    sampler_paths,
)


def correlated(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    a = np.array([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.2, 0.3]])
    return rng.standard_normal((n, 3)) @ a.T + np.array([1.0, -2.0, 0.5])


def three_clusters(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    centres, weights = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]]), np.array([0.5, 0.3, 0.2])
    comp = rng.choice(3, size=n, p=weights)
    return centres[comp] + 0.5 * rng.standard_normal((n, 2)), centres, weights


def test_gaussian_sampler_fits_the_ml_moments_and_samples_them():
    z = correlated()
    s = GaussianSampler(reg_covar=0.0).fit(z)
    np.testing.assert_allclose(s.mean_, z.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.covariance_, np.cov(z.T, bias=True), rtol=1e-10, atol=1e-12)
    draws = s.sample(40000, seed=1)
    assert draws.shape == (40000, 3) and draws.dtype == np.float32
    np.testing.assert_allclose(draws.mean(0), s.mean_, atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), s.covariance_, atol=0.02)
    np.testing.assert_array_equal(s.sample(5, seed=3), s.sample(5, seed=3))
    assert not np.array_equal(s.sample(5, seed=3), s.sample(5, seed=4))


def test_gmm_sampler_recovers_a_mixture_and_caps_components_at_the_data():
    z, centres, weights = three_clusters()
    s = GMMSampler(n_components=3).fit(z)
    order = np.argsort(s.means_[:, 0])
    np.testing.assert_allclose(s.means_[order], centres, atol=0.1)
    np.testing.assert_allclose(s.weights_[order], weights, atol=0.03)
    draws = s.sample(20000, seed=0)
    nearest = np.argmin(((draws[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(np.bincount(nearest, minlength=3) / len(draws), weights, atol=0.02)
    micro = GMMSampler().fit(z[:7])  # 7 codes (micro datasets): at most 7 components
    assert micro.n_components_ == 7 and np.isfinite(micro.sample(100)).all()


@pytest.mark.parametrize("make", [lambda: GaussianSampler().fit(correlated()), lambda: GMMSampler().fit(correlated())])
def test_save_load_round_trip_is_exact(tmp_path, make):
    s = make()
    path = tmp_path / "sampler.npz"
    s.save(path)
    for loaded in (type(s).load(path), Sampler.load(path)):
        assert type(loaded) is type(s)
        for name, value in s.arrays().items():
            np.testing.assert_array_equal(loaded.arrays()[name], value)
        np.testing.assert_array_equal(loaded.sample(50, seed=2), s.sample(50, seed=2))
    other = GMMSampler if isinstance(s, GaussianSampler) else GaussianSampler
    with pytest.raises(ValueError, match="not a saved"):
        other.load(path)


def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(latent_dim=2, hidden=[16]), (1, 4, 4), NetSpec(stochastic=False))


def test_decode_samples_gives_images_in_range_from_the_models_latents():
    model = tiny_model()
    x = torch.rand(50, 1, 4, 4)
    latents = encode_batched(model, x, batch=16).mu.double().numpy()
    np.testing.assert_allclose(latents, model.encode(x).mu.detach().double().numpy(), rtol=1e-6)
    images = decode_samples(model, GMMSampler(n_components=3).fit(latents), 12, seed=0)
    assert images.shape == (12, 1, 4, 4) and np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_final_checkpoint_saves_fitted_samplers_that_load_back(tmp_path):
    from vaeviz.build import load_run
    from vaeviz.config import RunConfig
    from vaeviz.member import MemorySink
    from vaeviz.train import train

    cfg = RunConfig().with_overrides(["data.name=digits", "model.hidden=32", "train.steps=30", "train.eval_every=30"])
    train(cfg, MemorySink(), workdir=tmp_path)
    files = sorted(p.name for p in (tmp_path / "samplers").iterdir())
    assert files == ["step_00000030_gaussian.npz", "step_00000030_gmm.npz"]
    setup, step = load_run(cfg, tmp_path)
    loaded = fitted_samplers(setup.model, setup.data.x_train, tmp_path, step)
    assert isinstance(loaded["gmm"], GMMSampler)
    np.testing.assert_array_equal(loaded["gmm"].sample(5, seed=1), GMMSampler.load(
        tmp_path / "samplers" / "step_00000030_gmm.npz").sample(5, seed=1))


def _no_refit(self, latents):
    raise AssertionError("a saved sampler was fitted again")


def test_a_runs_samplers_are_fitted_once_per_step_and_read_back(tmp_path, monkeypatch):
    model, x = tiny_model(), torch.rand(60, 1, 4, 4)
    first = fitted_samplers(model, x, tmp_path, 7, seed=3)  # an intermediate step: fitted and saved
    paths = sampler_paths(tmp_path, 7)
    assert all(p.is_file() for p in paths.values()) and first["gmm"].seed == 3
    with monkeypatch.context() as m:
        for cls in (GaussianSampler, GMMSampler):
            m.setattr(cls, "fit", _no_refit)
        again = fitted_samplers(model, x, tmp_path, 7, seed=3)
    for kind, sampler in first.items():
        for name, value in sampler.arrays().items():
            np.testing.assert_array_equal(again[kind].arrays()[name], value)
    paths["gmm"].write_bytes(b"not an npz")  # a damaged file is refitted and overwritten
    refit = fitted_samplers(model, x, tmp_path, 7, seed=3)
    np.testing.assert_allclose(refit["gmm"].means_, first["gmm"].means_)
    np.testing.assert_allclose(GMMSampler.load(paths["gmm"]).means_, first["gmm"].means_)
    fitted_samplers(model, x, None, 8)  # no folder: fitted, nothing written
    assert sorted(p.name for p in (tmp_path / "samplers").iterdir()) == sorted(p.name for p in paths.values())
