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
    notes = []
    assert cfg.with_overrides(["objective.name=vae"], notes).objective.to_dict() == {
        "name": "vae", "decoder": "bernoulli", "sigma": 0.1}
    assert [str(n) for n in notes] == ["objective.beta = 2 dropped (vae has no such knob)"]


MIXTURE = ["objective.decoder=gaussian", "objective.sigma=0.05"]  # preset mixture-2d's objective knobs


@pytest.mark.parametrize("new", ["beta_vae", "beta_tcvae", "vae"])
def test_knobs_that_mean_the_same_carry_over_silently(new):
    """decoder and σ are the VAE's knobs, inherited by β-VAE and β-TCVAE: a switch keeps them, in `switched_to`
    and in `--set objective.name=` (the preset's Gaussian decoder no longer turns Bernoulli)."""
    cfg = RunConfig().with_overrides(MIXTURE)
    switched, notes = cfg.objective.switched_to(new)
    assert (switched.name, switched.decoder, switched.sigma, notes) == (new, "gaussian", 0.05, [])
    assert cfg.with_overrides([f"objective.name={new}"]).objective == switched
    defaults = RunConfig().with_overrides([f"objective.name={new}"]).objective.to_dict()
    assert switched.to_dict() == {**defaults, "decoder": "gaussian", "sigma": 0.05}  # the rest at new's defaults


def test_knobs_the_new_objective_lacks_are_dropped_with_a_note():
    cfg = RunConfig().with_overrides(MIXTURE)
    switched, notes = cfg.objective.switched_to("sigma_vae")
    assert switched.to_dict() == RunConfig().with_overrides(["objective.name=sigma_vae"]).objective.to_dict()
    assert [(n.key, n.old, n.dropped) for n in notes] == [("objective.decoder", "gaussian", True),
                                                         ("objective.sigma", 0.05, True)]
    assert str(notes[1]) == "objective.sigma = 0.05 dropped (sigma_vae has no such knob)"
    _, quiet = RunConfig().objective.switched_to("sigma_vae")
    assert quiet == []  # knobs at their defaults go without a word


@pytest.mark.parametrize("old, knob, value, new, default", [
    ("beta_vae", "beta", 2.0, "beta_tcvae", 6.0),  # β of the whole rate vs β of the total correlation
    ("beta_vae", "beta", 2.0, "rae", 1e-4),  # β of the rate vs β of RAE's code penalty
    ("geco", "alpha", 0.5, "beta_tcvae", 1.0),  # C_ma's moving average vs the weight of the mutual information
])
def test_a_knob_of_the_same_name_but_another_meaning_is_not_carried(old, knob, value, new, default):
    cfg = RunConfig().with_overrides({"objective.name": old, f"objective.{knob}": value})
    switched, (note,) = cfg.objective.switched_to(new)
    assert getattr(switched, knob) == default
    assert (note.key, note.old, note.new, note.dropped) == (f"objective.{knob}", value, default, False)
    assert f"{new}'s {knob} is another knob" in str(note)


def test_a_value_the_new_objective_refuses_takes_its_default(monkeypatch):
    """A knob of the same meaning whose value is out of the new objective's bounds is reset, with the reason."""
    import dataclasses

    from vaeviz.config import carry_knobs
    from vaeviz.knobs import knob
    from vaeviz.objective_params import PARAMS, VAEParams

    @dataclasses.dataclass
    class NarrowParams(VAEParams):
        sigma: float = knob(0.005, lo=1e-4, hi=0.01, help=VAEParams.__dataclass_fields__["sigma"].metadata["help"])

    monkeypatch.setitem(PARAMS, "narrow", NarrowParams)
    values, (note,) = carry_knobs("vae", {"decoder": "gaussian", "sigma": 0.05}, "narrow")
    assert values == {"decoder": "gaussian", "sigma": 0.005}
    assert note.key == "objective.sigma" and "narrow refuses it" in str(note) and "0.01" in str(note)
    values, notes = carry_knobs("vae", {"decoder": "gaussian", "sigma": 0.008}, "narrow")
    assert values == {"decoder": "gaussian", "sigma": 0.008} and notes == []


def test_knobs_set_with_the_switch_are_not_noted():
    notes = []
    cfg = RunConfig().with_overrides(["objective.name=beta_vae", "objective.beta=2"]).with_overrides(
        ["objective.name=beta_tcvae", "objective.beta=3"], notes)
    assert cfg.objective.beta == 3.0 and notes == []


def test_bad_json_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{nope")


# ----------------------------------------------------------------------------- strict numbers


@pytest.mark.parametrize(
    "pair, words",
    [
        ("data.k=2.5e0", ["data.k", "'2.5e0'", "expected int", "[1, 64]"]),
        ("data.k=2.5", ["data.k", "'2.5'", "expected int"]),
        ("train.seed=1e400", ["train.seed", "'1e400'", "expected int", "[0, 4294967295]"]),
        ("train.eval_every=1e400", ["train.eval_every", "'1e400'", "expected int"]),
        ("data.size=1e400", ["data.size", "'1e400'", "expected int", "[8, 1000000]"]),
        ("train.seed=inf", ["train.seed", "'inf'", "expected int"]),
        ("train.steps=nan", ["train.steps", "'nan'", "expected int"]),
        ("train.steps=True", ["train.steps", "'True'", "expected int"]),
        ("train.steps=0x10", ["train.steps", "'0x10'", "expected int"]),
        ("train.seed=4294967296", ["train.seed", "4294967296", "[0, 4294967295]"]),
        ("train.seed=1e13", ["train.seed", "10000000000000", "[0, 4294967295]"]),
        ("data.seed=4294967296", ["data.seed", "[0, 4294967295]"]),
        ("train.eval_every=1e13", ["train.eval_every", "[1, 1000000000]"]),
        ("train.checkpoint_every=1e13", ["train.checkpoint_every", "[1, 1000000000]"]),
        ("objective.warmup_steps=1e13", ["objective.warmup_steps", "[1, 1000000000]"]),
        ("train.lr=1e400", ["train.lr", "inf", "(0.0, 100.0]"]),
        ("objective.beta=-inf", ["objective.beta", "-inf"]),
        ("objective.beta=1e400", ["objective.beta", "inf", "[0.0, 1000.0]"]),
        ("model.hidden=2.5", ["model.hidden", "'2.5'", "list of at most 32 int values"]),
        ("model.hidden=" + ",".join(["8"] * 33), ["model.hidden", "at most 32"]),
        ("model.hidden=8,True", ["model.hidden", "list of at most 32 int"]),
    ],
)
def test_numbers_parse_strictly(pair, words):
    with pytest.raises(ConfigError) as err:
        RunConfig().with_overrides(["objective.name=beta_vae", pair])
    message = str(err.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


def test_whole_numbers_in_any_notation_are_accepted():
    cfg = RunConfig().with_overrides(["data.k=2.0", "train.steps=1e3", "train.seed=4294967295",
                                      "train.batch_size=1_024", "model.hidden= 64 , 32 ", "data.seed=0"])
    assert (cfg.data.k, cfg.train.steps, cfg.train.seed, cfg.train.batch_size) == (2, 1000, 4294967295, 1024)
    assert cfg.model.hidden == [64, 32] and isinstance(cfg.data.k, int)
    assert RunConfig.from_dict({"train": {"steps": 300.0, "lr": 1}}).train.steps == 300


def test_huge_digit_strings_get_our_message():
    for value in ["9" * 5000, "1" + "0" * 100_000]:
        with pytest.raises(ConfigError) as err:
            RunConfig().with_overrides([f"data.k={value}"])
        message = str(err.value)
        assert message.startswith(f"invalid value for 'data.k': '{value[:2]}")
        assert len(message) < 200 and "sys.set_int_max_str_digits" not in message


@pytest.mark.parametrize(
    "d, words",
    [
        ({"train": {"steps": True}}, ["train.steps", "True", "expected int"]),
        ({"train": {"seed": False}}, ["train.seed", "False"]),
        ({"train": {"steps": 2.5}}, ["train.steps", "2.5"]),
        ({"train": {"steps": float("inf")}}, ["train.steps", "inf"]),
        ({"train": {"seed": 10**400}}, ["train.seed", "[0, 4294967295]"]),
        ({"train": {"lr": 10**400}}, ["train.lr", "expected float"]),
        ({"train": {"lr": True}}, ["train.lr", "True", "expected float"]),
        ({"train": {"lr": [0.1]}}, ["train.lr", "[0.1]"]),
        ({"data": {"name": 5}}, ["data.name", "5", "expected str"]),
        ({"data": {"path": ["a.npz"]}}, ["data.path", "expected str"]),
        ({"model": {"hidden": {"a": 1}}}, ["model.hidden", "list of at most 32"]),
        ({"model": {"hidden": [8, 8.5]}}, ["model.hidden", "list"]),
        ({"objective": {"name": ["vae"]}}, ["objective.name", "['vae']", "one of vae"]),
        ({"objective": {"name": {}}}, ["objective.name", "one of vae"]),
        ({"name": ["x"]}, ["'name'", "at most 200 characters"]),
        ({"name": "x" * 201}, ["'name'", "at most 200 characters"]),
    ],
)
def test_knob_values_must_have_the_right_type(d, words):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(d)
    message = str(err.value)
    assert "\n" not in message and len(message) < 300
    for w in words:
        assert w in message, message


@pytest.mark.parametrize(
    "text, words",
    [
        ("5", ["a config must be an object", "int 5"]),
        ('"abc"', ["a config must be an object", "str 'abc'"]),
        ("[]", ["a config must be an object", "list"]),
        ("null", ["a config must be an object", "NoneType"]),
        ('{"train": 5}', ["config section 'train' must be an object", "int 5"]),
        ('{"train": []}', ["config section 'train' must be an object", "list"]),
        ('{"objective": "vae"}', ["config section 'objective' must be an object"]),
        ('{"train": {"steps": "1e400"}}', ["train.steps", "'1e400'"]),
        ('{"train": {"steps": 1e400}}', ["train.steps", "inf"]),
        ('{"train": {"seed": 1e13}}', ["train.seed", "[0, 4294967295]"]),
        ("[" * 100_000, ["config is not valid JSON", "nested too deeply"]),
        ('{"a": ' * 50_000, ["config is not valid JSON"]),
        ("1" * 5000, ["config is not valid JSON", "more than 4300 digits"]),
        ('{"train": {"steps": ' + "1" * 5000 + "}}", ["config is not valid JSON", "4300 digits"]),
        ("{nope", ["config is not valid JSON"]),
        ('{"bogus": {}}', ["unknown config section 'bogus'"]),
    ],
)
def test_malformed_json_is_one_config_error(text, words):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_json(text)
    message = str(err.value)
    assert "\n" not in message and len(message) < 300
    for w in words:
        assert w in message, message


def test_bad_keys_and_overrides_are_config_errors():
    with pytest.raises(ConfigError, match="has a key that is not text: 1"):
        RunConfig.from_dict({1: {}})
    with pytest.raises(ConfigError, match="config section 'train' has a key that is not text"):
        RunConfig.from_dict({"train": {(1, 2): 3}})
    with pytest.raises(ConfigError, match="override 5 is not of the form key=value"):
        RunConfig().with_overrides([5])
    with pytest.raises(ConfigError, match="the overrides has a key that is not text"):
        RunConfig().with_overrides({None: 1})
    with pytest.raises(ConfigError, match="unknown key 'name.x'"):
        RunConfig().with_overrides(["name.x=1"])
    long = "train.nosuch" + "x" * 10_000 + "=1"
    with pytest.raises(ConfigError) as err:
        RunConfig().with_overrides([long])
    assert len(str(err.value)) < 300


def test_none_sections_mean_defaults_and_sections_round_trip():
    cfg = RunConfig.from_dict({"data": None, "model": None, "objective": None, "train": None, "name": None})
    assert cfg == RunConfig()
    cfg = RunConfig.from_dict({"name": "ünïcode ✓", "data": {"path": "\ud800.npz", "name": "npz"}})
    assert RunConfig.from_json(cfg.to_json()) == cfg
