"""Presets: every seed experiment is a valid config that trains; GECO meets its constraint; σ² tracks the MSE."""

import numpy as np
import pytest

from vaeviz.build import load_run
from vaeviz.config import ConfigError, RunConfig
from vaeviz.member import MemorySink
from vaeviz.presets import PRESETS, preset_config
from vaeviz.samplers import decode_samples, fitted_samplers
from vaeviz.train import train

REQUIRED = ["vae-digits", "beta-vae-annealed-digits", "sigma-vae-digits", "sigma-vae-network-digits", "geco-digits",
            "geco-mnist", "rae-l2-mnist", "rae-gp-digits", "rae-sn-digits", "beta-tcvae-shapes", "hfvae-shapes",
            "micro-mnist-2d", "mixture-2d"]
SHORT = ["train.eval_every=1000", "train.probe_size=100", "train.checkpoint_every=1000"]


def test_every_seed_experiment_has_a_valid_preset():
    assert set(REQUIRED) <= set(PRESETS)
    for name, preset in PRESETS.items():
        cfg = preset_config(name)
        assert cfg.name == name and preset.description
        assert RunConfig.from_json(cfg.to_json()).to_dict() == cfg.to_dict()
    assert preset_config("micro-mnist-2d").data.n == 7 and preset_config("micro-mnist-2d").model.latent_dim == 2
    assert preset_config("mixture-2d").data.name == "gaussian_mixture"
    assert preset_config("geco-digits").objective.name == "geco"
    assert preset_config("rae-gp-digits").objective.variant == "gp"
    hfvae = preset_config("hfvae-shapes")
    assert hfvae.objective.groups == [2, 2, 2] and sum(hfvae.objective.groups) == hfvae.model.latent_dim
    assert hfvae.model == preset_config("beta-tcvae-shapes").model  # the same net as β-TCVAE's
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*vae-digits"):
        preset_config("nope")


def _uses_mnist(name: str) -> bool:
    return PRESETS[name].overrides.get("data.name") == "mnist"


@pytest.mark.parametrize("name", REQUIRED)
def test_preset_trains_without_nan(name, request, monkeypatch):
    if _uses_mnist(name):
        monkeypatch.setenv("VAEVIZ_DATA_DIR", str(request.getfixturevalue("data_dir")))
    cfg = preset_config(name).with_overrides(["train.steps=15", "data.size=600", *SHORT])
    sink = MemorySink()
    train(cfg, sink)
    values = np.array([v for _, _, _, v in sink.rows])
    assert len(values) > 15 and np.isfinite(values).all()


def test_rae_gmm_samples_are_finite_and_in_range(tmp_path):
    cfg = preset_config("rae-sn-digits").with_overrides(["train.steps=150", *SHORT])
    train(cfg, MemorySink(), workdir=tmp_path)
    setup, step = load_run(cfg, tmp_path)
    assert step == 150
    sampler = fitted_samplers(setup.model, setup.data.x_train, tmp_path, step,
                             fit_on=setup.objective.ex_post_fit)["gmm"]  # saved by training
    assert sampler.n_components_ == 10
    images = decode_samples(setup.model, sampler, 64, seed=0)
    assert images.shape == (64, 1, 8, 8) and np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0


def _trained_2000(preset: str) -> MemorySink:
    """The metric stream of a preset trained for its full 2,000 steps."""
    sink = MemorySink()
    train(preset_config(preset).with_overrides(["train.steps=2000"]), sink)
    return sink


@pytest.mark.slow
def test_geco_digits_meets_its_constraint_and_lambda_rises_then_falls():
    sink = _trained_2000("geco-digits")
    _, lam = sink.series("lambda")
    _, c_ma = sink.series("c_ma")
    peak = int(lam.argmax())
    assert c_ma[-1] <= 0
    assert lam[peak] > 10 * lam[0] and lam[-1] < lam[peak] / 10 and 0 < peak < len(lam) - 1
    assert (np.diff(lam[: peak + 1]) > 0).all()  # rises while C_ma > 0 ...
    assert (np.diff(lam[peak:]) <= 0).mean() > 0.9  # ... and falls once the constraint holds


@pytest.mark.slow
def test_sigma_vae_digits_sigma2_matches_the_training_mse():
    sink = _trained_2000("sigma-vae-digits")
    _, sigma2 = sink.series("sigma2")
    _, mse = sink.series("mse")
    assert sigma2[-1] == pytest.approx(mse[-200:].mean(), rel=0.10)
    _, nll = sink.series("nll_sigma_free", "eval")
    assert len(nll) > 0 and np.isfinite(nll).all()
