"""Typed, validated run configuration: data, model, objective and training.

Every field is a knob (`vaeviz.knobs`): declared once with `knob(...)`, whose metadata (choices, bounds,
help) drives both validation here and the widget ranges in the app, and parsed strictly (`coerce`, `check`;
anything else raises `ConfigError` with one line naming the key and value). Configs round-trip to JSON and
accept dotted `key=value` overrides (`--set objective.beta=4`). An objective's knobs are its `Params`,
looked up by name in `vaeviz.objective_params.PARAMS`.

Switching objectives (`ObjectiveConfig.switched_to`, used by `with_overrides`, the CLI and the Train page) carries
over every knob that means the same thing in both objectives: the new `Params` declares a field of the same name,
type and help text (e.g. `decoder` and `sigma`, which β-VAE and β-TCVAE inherit from the VAE's knobs) and accepts
the value. Every other knob takes the new objective's default, and a `KnobNote` says which and why: a knob the new
objective lacks, one of the same name that means something else there (β-TCVAE's `beta` weighs the total
correlation, β-VAE's the whole rate), or a value it refuses.

A torch-free leaf: it imports only `vaeviz.knobs` and `vaeviz.objective_params`, never an objective.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from vaeviz.knobs import ConfigError, as_section, base_type, build_dataclass, check, coerce, knob, knob_meta, show
from vaeviz.objective_params import PARAMS

__all__ = [  # the run config, and the knob helpers its importers take from here
    "DEFAULT_OBJECTIVE", "MAX_NAME", "SEED_MAX", "ConfigError", "DataConfig", "KnobNote", "ModelConfig",
    "ObjectiveConfig", "RunConfig", "TrainConfig", "base_type", "carry_knobs", "knob", "knob_meta", "show",
]

MAX_NAME = 200  # characters of a run name
SEED_MAX = 2**32 - 1  # numpy's legacy seeding (scikit-learn's random_state) takes seeds below 2**32
DEFAULT_OBJECTIVE = "vae"


@dataclass
class DataConfig:
    name: str = knob("digits", help="dataset name (see `vaeviz datasets`)")
    path: str | None = knob(None, help="path of a user .npz file (data.name=npz)")
    n: int | None = knob(None, lo=1, help="keep only the first n training examples")
    per_class: int | None = knob(None, lo=1, help="keep n training examples per class")
    eval_fraction: float = knob(0.2, lo=0.0, hi=0.9, lo_open=True, help="held-out fraction")
    seed: int = knob(0, lo=0, hi=SEED_MAX, help="seed of procedural data and of the split")
    size: int | None = knob(None, lo=8, hi=1_000_000, help="examples generated for toy/shapes")
    k: int = knob(8, lo=1, hi=64, help="modes of the Gaussian mixture")
    layout: str = knob("ring", choices=["ring", "grid"], help="Gaussian-mixture layout")
    noise: float | None = knob(None, lo=0.0, hi=2.0, help="noise of toy 2-D sets")


@dataclass
class ModelConfig:
    arch: str = knob("mlp", choices=["mlp", "conv"])
    latent_dim: int = knob(2, lo=1, hi=512)
    hidden: list[int] = knob([256, 256], lo=1, hi=8192, help="hidden widths (mlp) or channels (conv)")
    covariance: str = knob("diag", choices=["diag", "full"], help="Gaussian encoder covariance")


@dataclass
class TrainConfig:
    steps: int = knob(2000, lo=1, hi=10_000_000)
    batch_size: int = knob(64, lo=1, hi=65536)
    lr: float = knob(1e-3, lo=0.0, hi=100.0, lo_open=True)
    seed: int = knob(0, lo=0, hi=SEED_MAX, help="seed of the weights, the batches and the ex-post samplers")
    device: str = knob("auto", choices=["auto", "cpu", "cuda", "mps"])
    eval_every: int = knob(500, lo=1)
    checkpoint_every: int = knob(1000, lo=1)
    checkpoint_seconds: float = knob(30.0, lo=0.0, help="also save the resume state when this many seconds have "
                                     "passed since the last save, so a crash loses at most that much training "
                                     "(0: by steps only)")
    probe_size: int = knob(2000, lo=1, hi=2000, help="points in the posterior snapshot probe set")
    compile: str = knob("auto", choices=["auto", "on", "off"],
                        help="torch.compile the encoder and decoder (auto: on a GPU only)")
    threads: int = knob(0, lo=0, hi=256, help="CPU threads (0: auto, 1 for small nets, every core for large ones)")
    dtype: str = knob("float32", choices=["float32", "float64"],
                      help="floating-point precision of weights, data and optimiser state (float64: slower, for "
                           "numerical checks, e.g. two gradient paths compared over many steps)")
    backward: str = knob("auto", choices=["auto", "autograd"],
                         help="auto: a hand-derived backward pass for MLP nets with a diagonal posterior and "
                              "VAE, β-VAE, closed-form σ-VAE or GECO (faster on small nets; compiled runs keep "
                              "autograd), autograd for everything else")


@dataclass
class ObjectiveConfig:
    """The objective's name and its knobs, validated by the objective's own `Params`."""

    name: str = DEFAULT_OBJECTIVE
    params: Any = None

    def __getattr__(self, item):
        params = self.__dict__.get("params")
        if params is not None and item in {f.name for f in dataclasses.fields(params)}:
            return getattr(params, item)
        raise AttributeError(item)

    @staticmethod
    def build(values: dict) -> ObjectiveConfig:
        values = dict(as_section(values, "config section 'objective'"))
        name = values.pop("name", DEFAULT_OBJECTIVE)
        if not isinstance(name, str) or name not in PARAMS:
            raise ConfigError(f"invalid value for 'objective.name': {show(name)} "
                              f"(allowed: one of {', '.join(PARAMS)})")
        return ObjectiveConfig(name, build_dataclass(PARAMS[name], values, "objective"))

    def to_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self.params)}

    def switched_to(self, name: str) -> tuple[ObjectiveConfig, list[KnobNote]]:
        """This objective's knobs under objective `name`: the knobs that mean the same thing there carry over,
        the others take `name`'s defaults; the notes say which knobs changed or went, and why."""
        if name == self.name:
            return self, []
        values, notes = carry_knobs(self.name, dataclasses.asdict(self.params), name)
        return ObjectiveConfig.build({"name": name, **values}), notes


@dataclass(frozen=True)
class KnobNote:
    """A knob of the previous objective that did not carry over: its old value, the new one and why (`dropped`:
    the new objective has no such knob)."""

    key: str
    old: Any
    new: Any
    why: str
    dropped: bool = False

    def __str__(self) -> str:
        if self.dropped:
            return f"{self.key} = {_text(self.old)} dropped ({self.why})"
        return f"{self.key}: {_text(self.old)} → {_text(self.new)} ({self.why})"


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _fields(name: str) -> dict[str, tuple[dataclasses.Field, Any]]:
    """An objective's knobs by name: (field, type hint)."""
    cls = PARAMS[name]
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _same_meaning(a: tuple[dataclasses.Field, Any], b: tuple[dataclasses.Field, Any]) -> bool:
    """Two knobs of one name mean the same thing when they have the same type and the same help text."""
    return base_type(a[1])[0] == base_type(b[1])[0] and a[0].metadata.get("help") == b[0].metadata.get("help")


def _accepted(key: str, value: Any, f: dataclasses.Field, hint) -> Any:
    """`value` parsed and checked as knob `f` would take it (ConfigError when refused)."""
    meta = knob_meta(f, hint)
    value = coerce(key, value, hint, meta)
    check(key, value, meta)
    return value


def carry_knobs(old: str, values: dict, new: str) -> tuple[dict, list[KnobNote]]:
    """The knob values of objective `new` after a switch from objective `old` whose knobs were `values` (by name;
    missing ones at `old`'s defaults): each knob `new` declares with the same meaning and accepts carries over,
    the rest take `new`'s defaults. Notes for every old knob whose value changes or goes (a knob `old` had at its
    default and `new` lacks goes without a note)."""
    before, after = _fields(old), _fields(new)
    out = {name: _default(f) for name, (f, _) in after.items()}
    notes = []
    for name, spec in before.items():
        key, value = f"objective.{name}", values.get(name, _default(spec[0]))
        try:
            value = _accepted(key, value, *spec)
        except ConfigError:
            continue  # an invalid value of the old objective (a half-typed form) is not carried anywhere
        if name not in after:
            if value != _default(spec[0]):
                notes.append(KnobNote(key, value, None, f"{new} has no such knob", dropped=True))
        elif not _same_meaning(spec, after[name]):
            if value != out[name]:
                help_text = after[name][0].metadata.get("help") or "another knob"
                notes.append(KnobNote(key, value, out[name], f"{new}'s {name} is another knob: {help_text}"))
        else:
            try:
                out[name] = _accepted(key, value, *after[name])
            except ConfigError as exc:
                notes.append(KnobNote(key, value, out[name], f"{new} refuses it: {exc}"))
    return out, notes


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=lambda: ObjectiveConfig.build({}))
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str | None = None

    def to_dict(self) -> dict:
        out = {k: dataclasses.asdict(getattr(self, k)) for k in _SECTIONS}
        out["objective"] = self.objective.to_dict()
        out["name"] = self.name
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @staticmethod
    def from_dict(d: dict) -> RunConfig:
        """A validated config from a dict of sections (each a dict of knobs, or None) and a name."""
        d = as_section(d, "a config", none_ok=False)
        unknown = sorted(set(d) - set(_SECTIONS) - {"objective", "name"})
        if unknown:
            raise ConfigError(f"unknown config section {show(unknown[0])} (known: data, model, objective, train, name)")
        parts = {k: build_dataclass(cls, d.get(k), k) for k, cls in _SECTIONS.items()}
        return RunConfig(objective=ObjectiveConfig.build(d.get("objective")), name=_run_name(d.get("name")), **parts)

    @staticmethod
    def from_json(text: str) -> RunConfig:
        """A validated config from JSON text; ConfigError (one line) for anything else."""
        try:
            raw = json.loads(text)
        except RecursionError:
            raise ConfigError("config is not valid JSON: it is nested too deeply") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        except UnicodeDecodeError:
            raise ConfigError("config is not valid JSON: it is not UTF-8 text") from None
        except ValueError:  # Python's limit on the digits of an int
            raise ConfigError("config is not valid JSON: it holds a number of more than 4300 digits") from None
        return RunConfig.from_dict(raw)

    def with_overrides(self, pairs: list[str] | dict, notes: list[KnobNote] | None = None) -> RunConfig:
        """Apply dotted overrides (`["objective.beta=4", ...]` or a dict) and re-validate. A new `objective.name`
        comes first and carries over the knobs that mean the same thing (`ObjectiveConfig.switched_to`); the
        notes on the others go to `notes`, but for knobs the overrides set themselves."""
        if isinstance(pairs, dict):
            items = list(as_section(pairs, "the overrides").items())
        else:
            items = [_split_pair(p) for p in pairs]
        items.sort(key=lambda kv: kv[0] != "objective.name")  # a new objective first, then its knobs
        d, switched = self.to_dict(), []
        for key, value in items:
            if key == "name":
                d["name"] = value
                continue
            section, _, leaf = key.partition(".")
            if section not in d or not leaf or not isinstance(d[section], dict):
                raise ConfigError(f"unknown key {show(key)} "
                                  "(use section.key, section in data, model, objective, train)")
            if section == "objective" and leaf == "name":
                d["objective"] = _switch(d["objective"], value, switched)
                continue
            d[section][leaf] = value
        if notes is not None:
            notes.extend(n for n in switched if n.key not in dict(items))
        return RunConfig.from_dict(d)


def _switch(objective: dict, name: Any, notes: list[KnobNote]) -> dict:
    """The objective section after `objective.name=name`: knobs carried over by `carry_knobs` (an unknown
    name is kept as it is, for `ObjectiveConfig.build` to refuse with the list of names)."""
    old = objective.get("name")
    if not isinstance(name, str) or name not in PARAMS or name == old:
        return {**objective, "name": name}
    if not isinstance(old, str) or old not in PARAMS:  # after an unknown name: nothing to carry
        return {"name": name}
    values, why = carry_knobs(old, {k: v for k, v in objective.items() if k != "name"}, name)
    notes.extend(why)
    return {"name": name, **values}


def _split_pair(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=") if isinstance(pair, str) else ("", "", "")
    if not sep or not key.strip():
        raise ConfigError(f"override {show(pair)} is not of the form key=value")
    return key.strip(), value.strip()


def _run_name(value: Any) -> str | None:
    """A run's name: None or text of at most MAX_NAME characters."""
    if value is None or (isinstance(value, str) and len(value) <= MAX_NAME):
        return value
    raise ConfigError(f"invalid value for 'name': {show(value)} (expected text of at most {MAX_NAME} characters)")

