"""Config validation, overrides and JSON round trip."""

import pytest

from vaeviz.config import ConfigError, RunConfig


def test_defaults_round_trip_json():
    cfg = RunConfig()
    assert RunConfig.from_json(cfg.to_json()) == cfg


def test_overrides_coerce_types_and_round_trip():
    cfg = RunConfig().with_overrides(
        ["objective.beta=3", "objective.name=beta_vae", "model.hidden=128,64", "train.steps=10", "data.n=7",
         "train.compile=on"]
    )
    assert cfg.objective.name == "beta_vae" and cfg.objective.beta == 3.0
    assert cfg.model.hidden == [128, 64] and cfg.train.steps == 10 and cfg.data.n == 7 and cfg.train.compile == "on"
    assert RunConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "pair, words",
    [
        ("train.lr=-1", ["train.lr", "-1", "(0.0, 100.0]"]),
        ("train.steps=abc", ["train.steps", "abc", "int"]),
        ("model.arch=rnn", ["model.arch", "rnn", "mlp, conv"]),
        ("objective.name=nope", ["objective.name", "nope", "vae"]),
        ("objective.beta=2", ["objective.beta", "known"]),
        ("train.nosuch=1", ["train.nosuch", "known"]),
        ("oops", ["oops", "key=value"]),
        ("model.latent_dim=0", ["model.latent_dim", "0"]),
        ("train.lr=nan", ["train.lr", "nan"]),
    ],
)
def test_invalid_values_name_key_value_and_allowed(pair, words):
    with pytest.raises(ConfigError) as err:
        RunConfig().with_overrides([pair])
    for w in words:
        assert w in str(err.value)


def test_switching_objective_drops_old_knobs():
    cfg = RunConfig().with_overrides(["objective.name=beta_vae", "objective.beta=2"])
    assert cfg.with_overrides(["objective.name=vae"]).objective.to_dict() == {
        "name": "vae", "decoder": "bernoulli", "sigma": 0.1}


def test_bad_json_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{nope")
