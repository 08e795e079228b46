"""Typed, validated run configuration: data, model, objective and training.

Every field is declared once with `knob(...)`, whose metadata (choices, bounds, help) drives
both validation here and the widget ranges in the app. Configs round-trip to JSON and accept
dotted `key=value` overrides (`--set objective.beta=4`). Objective knobs live in each
objective's own `Params` dataclass, looked up through the objective registry.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key, the value and what is allowed."""


def knob(default: Any, *, choices=None, lo=None, hi=None, lo_open=False, help: str = ""):
    """A dataclass field with validation metadata (choices or a numeric range [lo, hi])."""
    meta = {"choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open, "help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _allowed(meta: dict) -> str:
    if meta.get("choices") is not None:
        return "one of " + ", ".join(map(str, meta["choices"]))
    lo, hi = meta.get("lo"), meta.get("hi")
    left = "(" if meta.get("lo_open") else "["
    if lo is not None and hi is not None:
        return f"a value in {left}{lo}, {hi}]"
    if lo is not None:
        return f"a value {'>' if meta.get('lo_open') else '>='} {lo}"
    if hi is not None:
        return f"a value <= {hi}"
    return "a valid value"


def base_type(tp):
    """Strip Optional[...] and return (type, optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def coerce(key: str, value: Any, tp) -> Any:
    """Convert `value` (possibly a string from the command line) to the field type `tp`."""
    base, optional = base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"invalid value for '{key}': None (a value is required)")
    try:
        if typing.get_origin(base) is list:
            (inner,) = typing.get_args(base)
            items = value.split(",") if isinstance(value, str) else list(value)
            return [inner(str(v).strip()) if isinstance(v, str) else inner(v) for v in items if str(v).strip()]
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if base is float:
            return float(value)
        if base is str and isinstance(value, bool):  # an on/off knob stored as a bool
            return "on" if value else "off"
        return base(value)
    except (TypeError, ValueError):
        name = getattr(base, "__name__", str(base))
        raise ConfigError(f"invalid value for '{key}': {value!r} (expected {name})") from None


def check(key: str, value: Any, meta: dict) -> None:
    """Raise ConfigError when `value` violates the choices or bounds in `meta`."""
    if value is None:
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ConfigError(f"invalid value for '{key}': {value!r} (allowed: {_allowed(meta)})")
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        lo, hi = meta.get("lo"), meta.get("hi")
        bad = (isinstance(v, float) and not math.isfinite(v)) or (
            lo is not None and (v <= lo if meta.get("lo_open") else v < lo)
        ) or (hi is not None and v > hi)
        if bad:
            raise ConfigError(f"invalid value for '{key}': {value!r} (allowed: {_allowed(meta)})")


def validate_dataclass(obj, prefix: str) -> None:
    """Coerce every field of `obj` to its declared type and check it against its knob metadata."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}"
        value = coerce(key, getattr(obj, f.name), hints[f.name])
        check(key, value, dict(f.metadata))
        object.__setattr__(obj, f.name, value)


def build_dataclass(cls, values: dict, prefix: str):
    """Instantiate `cls` from a dict, refusing unknown keys with the list of known ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key '{prefix}.{unknown[0]}' (known: {', '.join(sorted(names))})")
    obj = cls(**values)
    validate_dataclass(obj, prefix)
    return obj


@dataclass
class DataConfig:
    name: str = knob("digits", help="dataset name (see `vaeviz datasets`)")
    path: str | None = knob(None, help="path of a user .npz file (data.name=npz)")
    n: int | None = knob(None, lo=1, help="keep only the first n training examples")
    per_class: int | None = knob(None, lo=1, help="keep n training examples per class")
    eval_fraction: float = knob(0.2, lo=0.0, hi=0.9, lo_open=True, help="held-out fraction")
    seed: int = knob(0, lo=0, help="seed of procedural data and of the split")
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
    seed: int = knob(0, lo=0)
    device: str = knob("auto", choices=["auto", "cpu", "cuda", "mps"])
    eval_every: int = knob(500, lo=1)
    checkpoint_every: int = knob(1000, lo=1)
    probe_size: int = knob(2000, lo=1, hi=2000, help="points in the posterior snapshot probe set")
    compile: str = knob("auto", choices=["auto", "on", "off"],
                        help="torch.compile the encoder and decoder (auto: on a GPU only)")
    threads: int = knob(0, lo=0, hi=256, help="CPU threads (0: auto, 1 for small nets, every core for large ones)")
    backward: str = knob("auto", choices=["auto", "autograd"],
                         help="auto: a hand-derived backward pass for MLP nets with a diagonal posterior and "
                              "VAE, β-VAE, closed-form σ-VAE or GECO (faster on small nets; compiled runs keep "
                              "autograd), autograd for everything else")


@dataclass
class ObjectiveConfig:
    """The objective's name and its knobs, validated by the objective's own `Params`."""

    name: str = "vae"
    params: Any = None

    def __getattr__(self, item):
        params = self.__dict__.get("params")
        if params is not None and item in {f.name for f in dataclasses.fields(params)}:
            return getattr(params, item)
        raise AttributeError(item)

    @staticmethod
    def build(values: dict) -> ObjectiveConfig:
        from vaeviz.objectives import REGISTRY

        values = dict(values)
        name = values.pop("name", "vae")
        if name not in REGISTRY:
            raise ConfigError(f"invalid value for 'objective.name': {name!r} (allowed: one of {', '.join(REGISTRY)})")
        return ObjectiveConfig(name, build_dataclass(REGISTRY[name].Params, values, "objective"))

    def to_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self.params)}


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
        d = dict(d)
        unknown = sorted(set(d) - set(_SECTIONS) - {"objective", "name"})
        if unknown:
            raise ConfigError(f"unknown config section '{unknown[0]}' (known: data, model, objective, train, name)")
        parts = {k: build_dataclass(cls, d.get(k) or {}, k) for k, cls in _SECTIONS.items()}
        return RunConfig(objective=ObjectiveConfig.build(d.get("objective") or {}), name=d.get("name"), **parts)

    @staticmethod
    def from_json(text: str) -> RunConfig:
        try:
            return RunConfig.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None

    def with_overrides(self, pairs: list[str] | dict) -> RunConfig:
        """Apply dotted overrides (`["objective.beta=4", ...]` or a dict) and re-validate."""
        items = list(pairs.items()) if isinstance(pairs, dict) else [_split_pair(p) for p in pairs]
        items.sort(key=lambda kv: kv[0] != "objective.name")  # a new objective first, then its knobs
        d = self.to_dict()
        for key, value in items:
            if key == "name":
                d["name"] = value
                continue
            section, _, leaf = key.partition(".")
            if section not in d or not leaf or not isinstance(d[section], dict):
                raise ConfigError(f"unknown key '{key}' (use section.key, section in data, model, objective, train)")
            if section == "objective" and leaf == "name" and value != d["objective"].get("name"):
                d["objective"] = {}  # knobs of the previous objective do not carry over
            d[section][leaf] = value
        return RunConfig.from_dict(d)


def _split_pair(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {pair!r} is not of the form key=value")
    return key.strip(), value.strip()


def field_meta(cls, name: str) -> dict:
    """The knob metadata (choices, lo, hi, help) of one field, for widgets and help text."""
    return dict(next(f for f in dataclasses.fields(cls) if f.name == name).metadata)
