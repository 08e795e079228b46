"""Property-based tests (hypothesis) of the two parsers that take outside input: the run config and user data.

- config: `RunConfig.from_dict`, `with_overrides` and `from_json` on generated dicts, strings and values
  (hostile numbers, unicode, nesting) raise nothing but `ConfigError`, and every config that parses
  round-trips through JSON to an equal config;
- npz and IDX: generated files (random shapes and dtypes, NaN/inf, wrong keys, label mismatches,
  corrupted and truncated bytes, fake headers) raise nothing but `DataError`, and whatever is
  accepted is float32 in [0, 1] with the shape the file declares.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vaeviz import data
from vaeviz.config import ConfigError, RunConfig
from vaeviz.data import DataError

MANY = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))

# ----------------------------------------------------------------------------- config

KEYS = {
    "data": ["name", "path", "n", "per_class", "eval_fraction", "seed", "size", "k", "layout", "noise"],
    "model": ["arch", "latent_dim", "hidden", "covariance"],
    "train": ["steps", "batch_size", "lr", "seed", "device", "eval_every", "checkpoint_every", "probe_size",
              "compile", "threads", "backward"],
    "objective": ["name", "beta", "decoder", "sigma", "kappa", "variance", "warmup_steps", "schedule", "variant",
                  "estimator", "dataset_size", "lambda_init"],
}
NUMERALS = ["1e400", "-1e400", "inf", "-inf", "nan", "NaN", "2.5e0", "2.0", "1e13", "1e3", "0x10", "1_000", "٣",
            "9" * 5000, "-0", "+5", " 7 ", "1e-400", "4294967296", "4294967295", "1e999999999", "0e999999", "",
            "none", "True", "false", "on", "8,16", "8,,16", "8, 2.5", ",", "vae", "beta_vae", "mlp", "conv"]

numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([0, 1, 2, 7, 64, 2**32 - 1, 2**32, 10**400, -(10**400), 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20), st.sampled_from(NUMERALS))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                           max_size=3), max_leaves=8)
plausible = st.sampled_from([None, 1, 2, 3, 8, 16, 64, 0.001, 0.5, 1.0, "2", "0.5", "1e-3", "vae", "beta_vae", "geco",
                             "rae", "mlp", "conv", "digits", "moons", "ring", "grid", "diag", "full", "cpu", "auto",
                             "on", "off", [8, 8], "16,16", "gaussian", "linear", "mws", "ünïcode ✓", "x.npz"])
knob_values = st.one_of(plausible, plausible, plausible, values)


@st.composite
def sections(draw, name: str):
    keys = st.sampled_from(KEYS[name]) | st.text(max_size=8)
    return draw(st.dictionaries(keys, knob_values, max_size=4))


@st.composite
def mutated_defaults(draw):
    """The default config of an objective as a dict, one or two knobs replaced by generated values."""
    name = draw(st.sampled_from(["vae", "beta_vae", "sigma_vae", "geco", "rae", "beta_tcvae"]))
    d = json.loads(RunConfig().with_overrides([f"objective.name={name}"]).to_json())
    for _ in range(draw(st.integers(1, 2))):
        section = draw(st.sampled_from(sorted(KEYS)))
        d[section][draw(st.sampled_from(sorted(d[section]) + KEYS[section]))] = draw(knob_values)
    return d


config_dicts = st.one_of(
    mutated_defaults(),
    mutated_defaults(),
    st.fixed_dictionaries({}, optional={"data": sections("data") | values, "model": sections("model"),
                                        "train": sections("train") | values, "objective": sections("objective"),
                                        "name": values}),
    st.dictionaries(st.text(max_size=6) | st.integers(), values, max_size=3),
    values,
)
dotted_keys = st.sampled_from([f"{s}.{k}" for s, ks in KEYS.items() for k in ks]) | st.text(max_size=12)


def assert_round_trips(cfg: RunConfig) -> None:
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg


def assert_refused_in_one_line_or_round_trips(parse) -> None:
    """`parse()` either raises the project's ConfigError with a one-line message, or gives a config that
    round-trips through JSON unchanged; any other exception fails the test."""
    try:
        cfg = parse()
    except ConfigError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000
        event("refused")
        return
    event("parsed")
    assert_round_trips(cfg)


@MANY
@given(config_dicts)
def test_from_dict_raises_only_config_error_and_round_trips(d):
    assert_refused_in_one_line_or_round_trips(lambda: RunConfig.from_dict(d))


@MANY
@given(st.lists(st.tuples(dotted_keys, st.sampled_from(NUMERALS) | st.text(max_size=12)), max_size=4),
       st.booleans(), st.dictionaries(dotted_keys | st.just("name"), knob_values, max_size=3))
def test_with_overrides_raises_only_config_error_and_round_trips(pairs, as_text, as_dict):
    overrides = [f"{k}={v}" for k, v in pairs] if as_text else as_dict
    assert_refused_in_one_line_or_round_trips(lambda: RunConfig().with_overrides(overrides))


json_texts = st.one_of(
    st.text(max_size=50),
    config_dicts.map(lambda d: json.dumps(d, allow_nan=True, default=str)),
    st.tuples(st.sampled_from(["[", "{\"a\":", "[[{\"train\":"]), st.integers(1, 3000)).map(lambda t: t[0] * t[1]),
    st.sampled_from(["1" * 5000, '{"train": {"steps": 1e400}}', '{"train": {"seed": 1e13}}', "null", "NaN",
                     '{"data": {"k": 2.5e0}}', '{"model": {"hidden": [1e400]}}', '{"name": "\\ud800"}']),
)


@MANY
@given(json_texts)
def test_from_json_raises_only_config_error_and_round_trips(text):
    assert_refused_in_one_line_or_round_trips(lambda: RunConfig.from_json(text))


def knob_values_within(f, tp):
    """A strategy of values that a knob's own metadata allows (choices, bounds, type)."""
    import typing

    from vaeviz.config import base_type, knob_meta

    meta, (base, optional) = knob_meta(f, tp), base_type(tp)
    if meta.get("choices") is not None:
        values = st.sampled_from(meta["choices"])
    elif typing.get_origin(base) is list:
        values = st.lists(st.integers(meta["lo"], min(meta["hi"], meta["lo"] + 10**4)), max_size=4)
    elif base is int:
        values = st.integers(meta.get("lo") or 0, meta["hi"])
    elif base is float:
        lo, hi = meta.get("lo") or 0.0, meta.get("hi") if meta.get("hi") is not None else 1e6
        values = st.floats(lo, hi, exclude_min=bool(meta.get("lo_open")), allow_nan=False)
    else:
        values = st.text(max_size=12)
    return values | st.none() if optional else values


@st.composite
def valid_configs(draw):
    """A config dict whose every knob is drawn within its declared choices and bounds."""
    import dataclasses
    import typing

    from vaeviz.config import DataConfig, ModelConfig, TrainConfig
    from vaeviz.objectives import REGISTRY

    name = draw(st.sampled_from(list(REGISTRY)))
    classes = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "objective": REGISTRY[name].Params}
    d = {}
    for section, cls in classes.items():
        hints = typing.get_type_hints(cls)
        d[section] = {f.name: draw(knob_values_within(f, hints[f.name])) for f in dataclasses.fields(cls)}
    d["objective"]["name"] = name
    return d


def as_text(value) -> str:
    """How a value is written on the command line (floats exactly, lists comma-separated)."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "none" if value is None else repr(value) if isinstance(value, float) else str(value)


@MANY
@given(valid_configs())
def test_every_value_within_the_declared_bounds_parses_and_round_trips(d):
    cfg = RunConfig.from_dict(d)
    assert_round_trips(cfg)
    flat = [f"{s}.{k}={as_text(v)}" for s, knobs in d.items() for k, v in knobs.items() if k != "name"]
    text_cfg = RunConfig().with_overrides([f"objective.name={d['objective']['name']}", *flat])
    assert text_cfg.to_dict() == {**cfg.to_dict(), "data": {**cfg.to_dict()["data"],
                                                            "path": text_cfg.data.path, "name": text_cfg.data.name}}


# ----------------------------------------------------------------------------- npz

DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "int64", "uint64", "float16", "float32", "float64",
          "complex64", "<U3", "S2", "datetime64[s]", "longdouble", "object"]


@st.composite
def pixels(draw):
    """Mostly valid x: 3-6 examples of a few values each, in [0, 1] (floats, bools) or 0..255 (ints)."""
    dtype = np.dtype(draw(st.sampled_from(["uint8", "float32", "float64", "float16", "bool", "int64"])))
    shape = (draw(st.integers(3, 6)), *draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)))
    if dtype.kind == "f":
        return draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=dtype.itemsize * 8)))
    if dtype.kind in "iu":
        return draw(hnp.arrays(dtype, shape, elements=st.integers(0, 255)))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def arrays(draw, ndim=None):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0 if ndim is None else ndim, max_dims=5 if ndim is None else ndim,
                                  min_side=0, max_side=5))
    if dtype.kind == "O":
        return np.array(draw(st.lists(st.integers(), min_size=math.prod(shape), max_size=math.prod(shape))),
                        dtype=object).reshape(shape)
    if dtype.kind == "f" and dtype.itemsize <= 8 and draw(st.booleans()):  # mostly valid pixels
        elements = st.floats(0, 1, width=dtype.itemsize * 8)
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


def mutate(blob: bytes, how: str, at: int, byte: int) -> bytes:
    """Corrupt an .npz: cut it short, flip a byte, append garbage or fake a huge .npy header."""
    at = at % max(1, len(blob))
    if how == "truncate":
        return blob[:at]
    if how == "flip":
        return blob[:at] + bytes([blob[at] ^ (byte or 1)]) + blob[at + 1 :] if blob else blob
    if how == "append":
        return blob + bytes([byte]) * 64
    if how == "fake header":
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 784)})
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("x.npy", head.getvalue() + blob[:64])
        return out.getvalue()
    return blob


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
    return tmp_path_factory.mktemp("npz") / "case.npz"


@MANY
@given(x=pixels() | arrays(), y=st.none() | arrays(ndim=1) | st.builds(np.arange, st.integers(3, 6)),
       key=st.sampled_from(["x", "x", "x", "images", "X"]),
       how=st.sampled_from(["none", "none", "none", "truncate", "flip", "append", "fake header"]),
       at=st.integers(0, 10**6), byte=st.integers(0, 255), compressed=st.booleans())
def test_npz_loader_raises_only_data_error(npz_path, x, y, key, how, at, byte, compressed):
    buf = io.BytesIO()
    arrays_ = {key: x} if y is None else {key: x, "y": y}
    (np.savez_compressed if compressed else np.savez)(buf, **arrays_)
    npz_path.write_bytes(mutate(buf.getvalue(), how, at, byte))
    try:
        got_x, got_y = data.load_npz(npz_path)
    except DataError as e:
        assert "\n" not in str(e)
        event("refused")
        return
    event("accepted")
    assert got_x.dtype == np.float32 and got_x.min() >= 0 and got_x.max() <= 1
    if how == "none":  # an intact file keeps its shape: (N, H, W) gains a channel axis
        want = (x.shape[0], 1, *x.shape[1:]) if x.ndim == 3 else x.shape
        assert got_x.shape == want and key == "x"
    assert got_x.ndim in (2, 4) and len(got_x) >= 3
    assert got_y is None or (got_y.dtype == np.int64 and got_y.shape == (len(got_x),) and got_y.min() >= 0)


# ----------------------------------------------------------------------------- IDX


@pytest.fixture(scope="module")
def idx_path(tmp_path_factory):
    return tmp_path_factory.mktemp("idx") / "case.gz"


@MANY
@given(type_code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0x00]),
       dims=st.lists(st.integers(0, 6) | st.sampled_from([2**31, 2**32 - 1]), min_size=0, max_size=4),
       extra=st.just(0) | st.integers(-8, 8), payload=st.binary(min_size=1, max_size=64) | st.just(b""),
       gzipped=st.booleans(), cut=st.integers(0, 200))
def test_idx_reader_raises_only_data_error(idx_path, type_code, dims, extra, payload, gzipped, cut):
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(type_code, 1)
    need = math.prod(dims) * itemsize if math.prod(dims) < 10**6 else 0
    header = struct.pack(">BBBB", 0, 0, type_code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    body = (payload * (need // max(1, len(payload)) + 1))[: max(0, need + extra)]
    blob = gzip.compress(header + body) if gzipped else header + body
    truncated = cut % 3 == 0 and cut % 4 > 0
    idx_path.write_bytes(blob[: len(blob) - cut % 4] if truncated else blob)
    try:
        got = data.read_idx(idx_path)
    except DataError as e:
        assert "\n" not in str(e)
        event("refused")
        return
    event("accepted")
    assert gzipped and not truncated and len(body) == need  # only an intact file whose data fits its header
    assert got.shape == tuple(dims) and got.dtype.isnative
