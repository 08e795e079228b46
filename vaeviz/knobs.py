"""Knobs: config fields that carry their own validation, and the strict parsing every config value goes through.

A knob is a dataclass field declared with `knob(default, choices=..., lo=..., hi=..., help=...)`; its
metadata drives both validation (`check`) and the app's widget ranges. Values are parsed strictly
(`coerce`): an int knob takes an int, a whole float or a numeral that is exactly whole (`2.0`, `1e3`;
not `2.5e0`, `True`, `inf` or `1e400`), and every int knob is bounded (`INT_LIMIT` when it declares no
`hi`); a float knob takes numbers and numerals, and `check` refuses inf and nan; sections are dicts with
text keys, lists have at most `MAX_ITEMS` entries. Anything else raises `ConfigError`, whose message is
one line naming the key and value.

A torch-free leaf: the run config (`vaeviz.config`) and the objectives' knobs (`vaeviz.objective_params`)
are built from it.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import numbers
import reprlib
import types
import typing
from dataclasses import field
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


MAX_NUMBER_TEXT = 64  # characters of a number written as text
INT_LIMIT = 10**9  # the bound of an int knob that declares no `hi`
MAX_ITEMS = 32  # entries of a list knob
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = _SHOW.maxlong = 60
_SHOW.maxlevel = 3


def show(value: Any) -> str:
    """A short repr for messages: long strings, numbers and nested lists are elided, never an exception."""
    try:
        return _SHOW.repr(value)
    except (ValueError, RecursionError):  # an int too long to print, a list nested too deeply
        return f"<{type(value).__name__}>"


def _number_text(text: str) -> str:
    text = text.strip()
    if len(text) > MAX_NUMBER_TEXT:
        raise ValueError(text)
    return text


def _to_int(value: Any) -> int:
    """An int from an int, a whole float or a numeral ('12', '1e3', '2.0'); ValueError for anything else
    (2.5, '2.5e0', True, inf, nan, '1e400', lists). Values beyond 10**18 are refused here, not truncated."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        try:
            number = decimal.Decimal(_number_text(value))
        except decimal.InvalidOperation:
            raise ValueError(value) from None
    elif isinstance(value, numbers.Real) and math.isfinite(value):
        number = decimal.Decimal(float(value))
    else:
        raise ValueError(value)
    if not number.is_finite() or number != number.to_integral_value() or number.adjusted() > 18:
        raise ValueError(value)
    return int(number)


def _to_float(value: Any) -> float:
    """A float from a number or a numeral; inf and nan come through (check() refuses them); not bools."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, str):
        return float(_number_text(value))
    if isinstance(value, numbers.Real):
        return float(value)  # OverflowError for an int beyond the float range
    raise ValueError(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    if isinstance(value, (bool, numbers.Integral)) and value in (0, 1):
        return bool(value)
    raise ValueError(value)


def _to_str(value: Any) -> str:
    if isinstance(value, bool):  # an on/off knob stored as a bool
        return "on" if value else "off"
    if isinstance(value, str):
        return value
    raise ValueError(value)


_SCALARS = {int: _to_int, float: _to_float, bool: _to_bool, str: _to_str}


def _to_list(value: Any, inner) -> list:
    """A list knob from 'a,b,c' or a list/tuple, each entry converted like a scalar knob of type `inner`."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(value)
    items = [v for v in items if not (isinstance(v, str) and not v.strip())]
    if len(items) > MAX_ITEMS:
        raise ValueError(value)
    convert = _SCALARS.get(inner, inner)
    return [convert(v.strip() if isinstance(v, str) else v) for v in items]


def coerce(key: str, value: Any, tp, meta: dict | None = None) -> Any:
    """Convert `value` (possibly a string from the command line) to the field type `tp`, strictly: a
    number that is not exactly of the type, a bool for a number, a list for a scalar are refused."""
    base, optional = base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"invalid value for '{key}': None (a value is required)")
    try:
        if typing.get_origin(base) is list:
            return _to_list(value, typing.get_args(base)[0])
        return _SCALARS.get(base, base)(value)
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        name = getattr(base, "__name__", str(base))
        if typing.get_origin(base) is list:
            name = f"a list of at most {MAX_ITEMS} {getattr(typing.get_args(base)[0], '__name__', '')} values"
        elif base is int and meta is not None and _bounded(meta):
            name = f"int; allowed: {_allowed(meta)}"
        raise ConfigError(f"invalid value for '{key}': {show(value)} (expected {name})") from None


def _bounded(meta: dict) -> bool:
    return meta.get("lo") is not None or meta.get("hi") is not None


def knob_meta(f: dataclasses.Field, tp) -> dict:
    """A field's knob metadata, with the implicit bound INT_LIMIT for int knobs that declare no `hi`."""
    meta = dict(f.metadata)
    base, _ = base_type(tp)
    is_int = base is int or (typing.get_origin(base) is list and typing.get_args(base)[0] is int)
    if is_int and meta.get("hi") is None and meta.get("choices") is None:
        meta["hi"] = INT_LIMIT
    return meta


def check(key: str, value: Any, meta: dict) -> None:
    """Raise ConfigError when `value` violates the choices or bounds in `meta`."""
    if value is None:
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ConfigError(f"invalid value for '{key}': {show(value)} (allowed: {_allowed(meta)})")
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        lo, hi = meta.get("lo"), meta.get("hi")
        bad = (isinstance(v, float) and not math.isfinite(v)) or (
            lo is not None and (v <= lo if meta.get("lo_open") else v < lo)
        ) or (hi is not None and v > hi)
        if bad:
            raise ConfigError(f"invalid value for '{key}': {show(value)} (allowed: {_allowed(meta)})")


def validate_dataclass(obj, prefix: str) -> None:
    """Coerce every field of `obj` to its declared type and check it against its knob metadata."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key, meta = f"{prefix}.{f.name}", knob_meta(f, hints[f.name])
        value = coerce(key, getattr(obj, f.name), hints[f.name], meta)
        check(key, value, meta)
        object.__setattr__(obj, f.name, value)


def as_section(value: Any, where: str, none_ok: bool = True) -> dict:
    """A config section as a dict with text keys (None: empty, when `none_ok`); ConfigError for anything else."""
    if value is None and none_ok:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be an object of key: value pairs, not {type(value).__name__} {show(value)}")
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"{where} has a key that is not text: {show(k)}")
    return value


def build_dataclass(cls, values: dict, prefix: str):
    """Instantiate `cls` from a dict, refusing unknown keys with the list of known ones."""
    values = as_section(values, f"config section '{prefix}'")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key '{prefix}.{show(unknown[0])[1:-1]}' (known: {', '.join(sorted(names))})")
    obj = cls(**values)
    validate_dataclass(obj, prefix)
    return obj
