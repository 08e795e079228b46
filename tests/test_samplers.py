"""Ex-post samplers: fitted moments against numpy, mixture recovery, exact save/load round trips, decoding,
and a run's samplers fitted once per step and read back."""

import numpy as np
import pytest
import torch

from vaeviz.analysis.batching import encode_batched
from vaeviz.config import ModelConfig
from vaeviz.nets import NetSpec, build_model
from vaeviz.samplers import (
    FIT_ON,
    GaussianSampler,
    GMMSampler,
    Sampler,
    decode_samples,
    fitted_samplers,
    sampler_paths,
    training_codes,
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
    assert files == ["step_00000030_sample_gaussian.npz", "step_00000030_sample_gmm.npz"]  # a VAE: z ~ q(z|x)
    setup, step = load_run(cfg, tmp_path)
    assert setup.objective.ex_post_fit == "sample"
    loaded = fitted_samplers(setup.model, setup.data.x_train, tmp_path, step, fit_on="sample")
    assert isinstance(loaded["gmm"], GMMSampler)
    np.testing.assert_array_equal(loaded["gmm"].sample(5, seed=1), GMMSampler.load(
        tmp_path / "samplers" / "step_00000030_sample_gmm.npz").sample(5, seed=1))


def test_an_rae_run_saves_samplers_fitted_on_its_codes(tmp_path):
    """The RAE's paper fits the ex-post density to E(x) (`RAE.ex_post_fit = "mean"`)."""
    from vaeviz.config import RunConfig
    from vaeviz.member import MemorySink
    from vaeviz.train import train

    cfg = RunConfig().with_overrides(["data.name=digits", "model.hidden=32", "objective.name=rae", "train.steps=20",
                                      "train.eval_every=20"])
    train(cfg, MemorySink(), workdir=tmp_path)
    files = sorted(p.name for p in (tmp_path / "samplers").iterdir())
    assert files == ["step_00000020_mean_gaussian.npz", "step_00000020_mean_gmm.npz"]


def _no_refit(self, latents):
    raise AssertionError("a saved sampler was fitted again")


def test_a_runs_samplers_are_fitted_once_per_step_and_read_back(tmp_path, monkeypatch):
    model, x = tiny_model(), torch.rand(60, 1, 4, 4)
    first = fitted_samplers(model, x, tmp_path, 7, seed=3)  # an intermediate step: fitted and saved
    paths = sampler_paths(tmp_path, 7)  # fit_on="sample", the default
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


# ----------------------------------------------------------------------------- fit_on: z ~ q(z|x) or μ(x)


class KnownPosteriors(torch.nn.Module):
    """An encoder whose posteriors are given: rows of x are [μ (L), log σ² (L)], or [μ (L), L (L·L)] with `full`."""

    def __init__(self, dim: int, full: bool = False):
        super().__init__()
        self.latent_dim, self.full, self.p = dim, full, torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def encode(self, x):
        from vaeviz.distributions import Posterior

        mu, rest = x[:, : self.latent_dim], x[:, self.latent_dim :]
        if self.full:
            return Posterior(mu, scale_tril=rest.reshape(-1, self.latent_dim, self.latent_dim))
        return Posterior(mu, logvar=rest)


def known_posteriors(n=20_000, full=False, seed=0):
    """Posteriors with correlated means and per-example covariances; returns (encoder input x, μ, Σ)."""
    rng = np.random.default_rng(seed)
    mu = correlated(n, seed)  # (n, 3), Cov(μ) far from diagonal
    if full:
        a = rng.normal(size=(n, 3, 3)) * 0.3
        tril = np.tril(a, -1) + np.eye(3) * rng.uniform(0.4, 0.9, size=(n, 1, 3))
        return np.concatenate([mu, tril.reshape(n, 9)], 1), mu, tril @ np.swapaxes(tril, 1, 2)
    logvar = np.log(rng.uniform(0.1, 0.6, size=(n, 3)))
    return np.concatenate([mu, logvar], 1), mu, np.exp(logvar)[:, :, None] * np.eye(3)


@pytest.mark.parametrize("full", [False, True])
def test_sample_fits_the_aggregate_posteriors_covariance_and_mean_that_of_the_means(full):
    """Law of total covariance: the aggregate q(z) = 1/N Σ N(μ_i, Σ_i) has covariance Cov(μ) + E[Σ]; one draw
    z_i ~ q(z|x_i) per example estimates it (σ-VAE §2.1), the means alone give Cov(μ) (Ghosh et al. 2020)."""
    from vaeviz.analysis.aggregate import AggregatePosterior

    x, mu, cov = known_posteriors(full=full)
    enc = KnownPosteriors(3, full)
    cov_mu = np.cov(mu.T, bias=True)
    aggregate = cov_mu + cov.mean(0)  # (L, L)
    mean_fit = fitted_samplers(enc, x, None, 0, fit_on="mean", max_points=len(x))["gaussian"]
    sample_fit = fitted_samplers(enc, x, None, 0, fit_on="sample", max_points=len(x), seed=5)["gaussian"]
    np.testing.assert_allclose(mean_fit.covariance_, cov_mu + 1e-6 * np.eye(3), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sample_fit.covariance_, aggregate, atol=0.03)  # sampling noise ~ 1/√N
    assert np.abs(sample_fit.covariance_ - cov_mu).max() > 0.2  # clearly not the means' covariance
    np.testing.assert_allclose(sample_fit.mean_, mu.mean(0), atol=0.02)
    agg = AggregatePosterior().fit(mu, scale_tril=np.linalg.cholesky(cov))  # the same q(z), drawn from
    np.testing.assert_allclose(np.cov(agg.sample(40_000, seed=1).T), aggregate, atol=0.05)


def test_the_draw_is_seeded_and_a_deterministic_encoders_sample_is_its_code():
    x = known_posteriors(2000)[0]
    enc = KnownPosteriors(3)
    once, again = (training_codes(enc, x, "sample", seed=4) for _ in range(2))
    np.testing.assert_array_equal(once, again)
    assert not np.array_equal(once, training_codes(enc, x, "sample", seed=5))
    model, imgs = tiny_model(), torch.rand(40, 1, 4, 4)  # no posterior variance: a sample is the code
    np.testing.assert_array_equal(training_codes(model, imgs, "sample"), training_codes(model, imgs, "mean"))
    with pytest.raises(ValueError, match="fit_on must be one of sample, mean"):
        training_codes(enc, x, "median")


def test_the_two_fit_on_choices_are_saved_apart_and_read_back(tmp_path, monkeypatch):
    x = known_posteriors(3000)[0]
    enc = KnownPosteriors(3)
    paths = {f: sampler_paths(tmp_path, 12, f) for f in FIT_ON}
    assert paths["sample"]["gmm"] != paths["mean"]["gmm"] and paths["mean"]["gmm"].name == "step_00000012_mean_gmm.npz"
    fitted = {f: fitted_samplers(enc, x, tmp_path, 12, fit_on=f, seed=2) for f in FIT_ON}
    assert len(list((tmp_path / "samplers").iterdir())) == 4  # neither overwrote the other
    assert not np.allclose(fitted["sample"]["gaussian"].covariance_, fitted["mean"]["gaussian"].covariance_)
    with monkeypatch.context() as m:
        for cls in (GaussianSampler, GMMSampler):
            m.setattr(cls, "fit", _no_refit)
        for f in FIT_ON:  # round trip: each choice reads back exactly its own file
            again = fitted_samplers(enc, x, tmp_path, 12, fit_on=f, seed=2)
            for kind, sampler in fitted[f].items():
                for name, value in sampler.arrays().items():
                    np.testing.assert_array_equal(again[kind].arrays()[name], value)
                np.testing.assert_array_equal(again[kind].sample(9, seed=1), sampler.sample(9, seed=1))
