"""Ex-post samplers: fitted moments against numpy, mixture recovery, exact save/load round trips, decoding."""

import numpy as np
import pytest
import torch

from vaeviz.config import ModelConfig
from vaeviz.nets import NetSpec, build_model
from vaeviz.samplers import GaussianSampler, GMMSampler, Sampler, decode_samples, encode_latents, load_sampler


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
    for loaded in (load_sampler(path), type(s).load(path), Sampler.load(path)):
        assert type(loaded) is type(s)
        for name, value in s.arrays().items():
            np.testing.assert_array_equal(loaded.arrays()[name], value)
        np.testing.assert_array_equal(loaded.sample(50, seed=2), s.sample(50, seed=2))
    other = GMMSampler if isinstance(s, GaussianSampler) else GaussianSampler
    with pytest.raises(ValueError, match="not a saved"):
        other.load(path)


def test_decode_samples_gives_images_in_range_from_the_models_latents():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden=[16]), (1, 4, 4), NetSpec(stochastic=False))
    x = torch.rand(50, 1, 4, 4)
    latents = encode_latents(model, x, batch=16)
    np.testing.assert_allclose(latents, model.encode(x).mu.detach().double().numpy(), rtol=1e-6)
    images = decode_samples(model, GMMSampler(n_components=3).fit(latents), 12, seed=0)
    assert images.shape == (12, 1, 4, 4) and np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_final_checkpoint_saves_fitted_samplers_that_load_back(tmp_path):
    from vaeviz.build import load_run
    from vaeviz.config import RunConfig
    from vaeviz.member import MemorySink
    from vaeviz.samplers import GMMSampler, fitted_samplers
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
