"""Streamlit-free helpers behind the app: user text, progress and ETA, steps, Train form widget specs, user .npz
files, images.

The pages wrap these in `st.cache_*` calls (views/common.py); nothing here imports streamlit, so it is
tested and benchmarked like the rest of the library.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vaeviz.checkpoint import checkpoint_steps
from vaeviz.config import DEFAULT_OBJECTIVE, ConfigError, ObjectiveConfig, RunConfig, base_type, carry_knobs
from vaeviz.data import DataError, load_npz
from vaeviz.objectives import REGISTRY
from vaeviz.presets import PRESETS
from vaeviz.runs import RunRecord, RunStore

ACTIVE = ("queued", "running")
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character
_AUTOLINK = re.compile(r"(?<=:)(?=\\/\\/)|(?<=www)(?=\\\.)|(?=\\@)", re.IGNORECASE)  # escaped ://, www. and @


# -- user text ---------------------------------------------------------------------------------


def plain(text) -> str:
    """`text` shown literally by any st.* element that renders markdown (markdown, caption, error, toast, progress,
    widget labels): run names, error messages, anything a user typed or uploaded.

    Every ASCII punctuation character is backslash-escaped, which markdown renders as the character itself, so no
    image, link, HTML, emphasis, LaTeX or Streamlit directive survives; an invisible word joiner inside `://`,
    `www.` and `@` keeps a URL or an e-mail address from becoming a link.
    """
    return _AUTOLINK.sub("\u2060", _PUNCTUATION.sub(r"\\\1", str(text)))


def short(text, limit: int = 40) -> str:
    """`text` cut to `limit` characters (to echo a bad value back)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


# -- progress ----------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where a run stands: fraction done, speed and the time left (None while unknown)."""

    step: int
    total: int
    fraction: float
    steps_per_s: float | None
    eta_s: float | None

    @property
    def text(self) -> str:
        parts = [f"step {self.step:,}/{self.total:,}"]
        if self.steps_per_s:
            parts.append(f"{self.steps_per_s:,.0f} steps/s")
        if self.eta_s is not None:
            parts.append(f"ETA {format_seconds(self.eta_s)}")
        return " · ".join(parts)


def format_seconds(s: float) -> str:
    s = max(0, round(s))
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def progress(rec: RunRecord, now: float | None = None) -> Progress:
    """Progress of a run from its row: speed = steps since start / time since start (to the last heartbeat)."""
    total = rec.total_steps or rec.config.train.steps
    step = min(rec.step or 0, total)
    rate = eta = None
    if rec.started and rec.heartbeat and rec.heartbeat > rec.started and step > 0:
        rate = step / (rec.heartbeat - rec.started)
        if rec.status == "running":
            eta = (total - step) / rate
    if rec.status == "done":
        step, eta = total, 0.0
    return Progress(step, total, step / total if total else 0.0, rate, eta)


# -- steps -------------------------------------------------------------------------------------


def nearest(steps: list[int], want: int | None) -> int | None:
    """The step of `steps` closest to `want` (the last one when `want` is None)."""
    if not steps:
        return None
    if want is None:
        return steps[-1]
    return min(steps, key=lambda s: (abs(s - want), -s))


def parse_step(text: str | None) -> int | None:
    """A step from a link (`?step=`): a plain decimal number of at most 12 ASCII digits, else None."""
    return int(text) if text and re.fullmatch(r"[0-9]{1,12}", text) else None


def checkpoint_for(store: RunStore, run_id: str, step: int | None) -> int | None:
    """The latest saved weights at or before `step` (the earliest when all are later); None without any."""
    steps = checkpoint_steps(store.artifact_dir(run_id))
    if not steps:
        return None
    return max([s for s in steps if step is None or s <= step] or steps[:1])


# -- the Train page's widgets ------------------------------------------------------------------


@dataclass
class Knob:
    """One config field as a widget: dotted key, kind (select, bool, int, float, list, text) and limits."""

    key: str
    kind: str
    default: typing.Any
    choices: list | None = None
    lo: float | None = None
    hi: float | None = None
    optional: bool = False
    help: str = ""


def knobs(cls, prefix: str, skip: tuple[str, ...] = ()) -> list[Knob]:
    """The widgets of a config dataclass, with the bounds and choices its validation uses."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta = dict(f.metadata)
        base, optional = base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if meta.get("choices") is not None:
            kind = "select"
        elif base is bool:
            kind = "bool"
        elif base in (int, float):
            kind = base.__name__
        elif typing.get_origin(base) is list:
            kind = "list"
        else:
            kind = "text"
        out.append(Knob(f"{prefix}.{f.name}", kind, default, meta.get("choices"), meta.get("lo"), meta.get("hi"),
                        optional, meta.get("help", "")))
    return out


def objective_knobs(name: str) -> list[Knob]:
    """The Train form's widgets of an objective's knobs: all of its `Params` but its `hidden_knobs`."""
    cls = REGISTRY[name]
    return knobs(cls.Params, "objective", skip=cls.hidden_knobs)


def flat_config(cfg: RunConfig) -> dict[str, typing.Any]:
    """A config as dotted keys (`data.name`, `objective.beta`, ...), the form the Train page's widgets hold."""
    d = cfg.to_dict()
    return {f"{section}.{k}": v for section in ("data", "model", "objective", "train") for k, v in d[section].items()}


def build_config(values: dict[str, typing.Any], name: str | None = None) -> RunConfig:
    """The validated config of the Train page's widget values (raises ConfigError with the config's message)."""
    values = {k: (v.strip() or None) if isinstance(v, str) and k != "objective.name" else v for k, v in values.items()}
    if name:
        values["name"] = name.strip()
    return RunConfig().with_overrides(values)


def form_of(cfg: RunConfig) -> dict[str, typing.Any]:
    """A config as the Train form holds it: dotted keys, the objective's knobs scoped by objective
    (`geco:objective.kappa`), lists as text ("256,256")."""
    form = {}
    for key, value in flat_config(cfg).items():
        if key.startswith("objective.") and key != "objective.name":
            key = f"{cfg.objective.name}:{key}"
        form[key] = ",".join(map(str, value)) if isinstance(value, list) else value
    return form


def switch_objective(form: dict[str, typing.Any], old: str, new: str) -> list[str]:
    """Switch the Train form from objective `old` to `new` by the rule `--set objective.name=` follows
    (`vaeviz.config.carry_knobs`): `new`'s knobs are written into `form`; returns what to tell the user, the knobs
    kept (where they differ from `new`'s defaults), then a note on each knob changed or dropped."""
    prefix = f"{old}:objective."
    before = {k.removeprefix(prefix): v for k, v in form.items() if k.startswith(prefix)}
    values, notes = carry_knobs(old, before, new)
    defaults = ObjectiveConfig.build({"name": new}).to_dict()
    for name, value in values.items():
        form[f"{new}:objective.{name}"] = value
    kept = [f"objective.{k} = {v:g}" if isinstance(v, float) else f"objective.{k} = {v}"
            for k, v in values.items() if k in before and v == before[k] and v != defaults[k]]
    return ([f"Kept from {old}: " + ", ".join(kept) + "."] if kept else []) + [str(n) for n in notes]


FORM_SKIP = ("data.path",)  # never in a link: a server path (uploads and data-folder files are picked, not typed)


def form_params(values: dict[str, typing.Any], preset: str | None = None) -> dict[str, str]:
    """The Train form's values that differ from the defaults (of the chosen objective), as query parameters:
    `{"objective.name": "beta_vae", "objective.sigma": "0.05", "preset": "mixture-2d"}`."""
    name = values.get("objective.name", DEFAULT_OBJECTIVE)
    base = RunConfig(objective=ObjectiveConfig.build({"name": name if name in REGISTRY else DEFAULT_OBJECTIVE}))
    defaults = {k.split(":")[-1]: v for k, v in form_of(base).items()} | {"objective.name": DEFAULT_OBJECTIVE}
    out = {k: _param_text(v) for k, v in values.items()
           if k not in FORM_SKIP and k in defaults and _param_text(v) != _param_text(defaults[k])}
    if preset in PRESETS:
        out["preset"] = preset
    return out


def _param_text(value: typing.Any) -> str:
    return "" if value is None else ",".join(map(str, value)) if isinstance(value, list) else str(value)


def is_form_param(key: str) -> bool:
    """Whether a query parameter is one the Train form writes (a dotted config key, or `preset`)."""
    return key == "preset" or key.split(".")[0] in ("data", "model", "objective", "train")


def form_from_params(params: dict[str, str]) -> tuple[dict[str, typing.Any], list[str]]:
    """The Train form of a link's query parameters (`form_params`): each known key whose value the config accepts
    (the objective first); returns the form and the `key=value` pairs refused."""
    cfg, refused = RunConfig(), []
    pairs = sorted(((k, v) for k, v in params.items() if is_form_param(k) and k != "preset" and k not in FORM_SKIP),
                   key=lambda kv: kv[0] != "objective.name")
    for key, value in pairs:
        try:
            cfg = cfg.with_overrides({key: value})
        except ConfigError:
            refused.append(f"{key}={value}")
    return form_of(cfg), refused


def preset_run_name(preset: str, objective: str, taken) -> str:
    """The name of a run launched from `preset`: the preset's name (with the objective when it was switched),
    and `-2`, `-3`, ... when a run of that name exists."""
    base = preset if PRESETS[preset].overrides.get("objective.name", DEFAULT_OBJECTIVE) == objective \
        else f"{preset}-{objective}"
    taken, i, name = set(taken), 1, base
    while name in taken:
        i += 1
        name = f"{base}-{i}"
    return name


def distortion_kind(cfg: RunConfig) -> str:
    """What the run's distortion D measures; D of runs of different kinds are not on one scale."""
    return REGISTRY[cfg.objective.name].distortion_kind(cfg.objective.params)


def runs_that_log(*terms: str) -> str:
    """Which runs log every one of `terms`, as a page's hint: "a run of `geco` (presets `geco-digits`, ...)"."""
    names = [name for name, cls in REGISTRY.items() if cls.logs(*terms)]
    if not names:
        return "a run whose objective logs " + ", ".join(terms)
    presets = [p for p, preset in PRESETS.items() if preset.overrides.get("objective.name") in names]
    text = "a run of " + " or ".join(f"`{name}`" for name in names)
    if presets:
        text += f" (preset{'s' * (len(presets) > 1)} {', '.join(f'`{p}`' for p in presets)})"
    return text


MEASURE_STEPS = 100  # without a held-out MSE, `measured_error` averages the training MSE of this many last steps


def measured_error(store: RunStore, run_id: str, dim: int) -> dict:
    """What a run measured of its data, for the knobs other objectives suggest on it (`Objective.suggested`):
    {"mse": its reconstruction MSE per data dimension, "dim": `dim` (the data dimension d), "split", "step"}. The
    MSE is the last held-out one (split "eval": one fixed model), else the mean of the training MSE over the last
    MEASURE_STEPS logged steps (split "train", at the last of them); {} while the run has logged none."""
    df = store.metrics(run_id, names=["mse"])
    for split in ("eval", "train"):
        rows = df[df["split"] == split].sort_values("step")
        if len(rows):
            tail = rows.tail(1 if split == "eval" else MEASURE_STEPS)
            return {"mse": float(tail["value"].mean()), "dim": int(dim), "split": split,
                    "step": int(tail["step"].iloc[-1])}
    return {}


@dataclass
class Planned:
    """One run of a comparison: its config, the objective knobs it keeps from the selected run (those that differ
    from the objective's defaults) and those chosen for the run's data (`Objective.suggested`)."""

    config: RunConfig
    kept: dict
    suggested: dict


def plan_comparison(cfg: RunConfig, objectives: list[str], measured: dict | None = None,
                    taken=()) -> list[Planned]:
    """The same data, network, seed and training under each objective. Objective knobs that mean the same thing
    carry over from `cfg` (`--set objective.name=`'s rule, `ObjectiveConfig.switched_to`); of the others, those the
    objective suggests for data on which `cfg`'s run measured `measured` (`measured_error`) take that value, the
    rest its default. An objective that is `cfg`'s own keeps every knob of `cfg`. Runs are named
    `<objective>-<data>-cmp`, with `-2`, `-3`, ... where a name is `taken` (a comparison launched again)."""
    if not objectives:
        raise ConfigError("pick at least one objective to compare")
    out, taken = [], set(taken)
    for name in objectives:
        run_name = _unused(f"{name}-{cfg.data.name}-cmp", taken)
        taken.add(run_name)
        switched = cfg.with_overrides({"objective.name": name, "name": run_name})
        kept = _kept_knobs(cfg.objective, switched.objective)
        wanted = {} if name == cfg.objective.name else REGISTRY[name].suggested(switched.objective.params,
                                                                                 measured or {})
        wanted = {k: v for k, v in wanted.items() if k not in kept}
        try:
            planned = switched.with_overrides({f"objective.{k}": v for k, v in wanted.items()})
        except ConfigError:  # a suggestion outside a knob's bounds (data reconstructed almost exactly): defaults
            planned, wanted = switched, {}
        out.append(Planned(planned, kept, wanted))
    return out


def _unused(name: str, taken: set[str]) -> str:
    i, unused = 1, name
    while unused in taken:
        i += 1
        unused = f"{name}-{i}"
    return unused


def _kept_knobs(old: ObjectiveConfig, new: ObjectiveConfig) -> dict:
    """The knobs of `new` whose values it took over from `old` and that differ from `new`'s defaults."""
    before, after = old.to_dict(), new.to_dict()
    defaults = ObjectiveConfig.build({"name": new.name}).to_dict()
    return {k: v for k, v in after.items() if k != "name" and k in before and before[k] == v and v != defaults[k]}


def comparison_configs(cfg: RunConfig, objectives: list[str], measured: dict | None = None,
                       taken=()) -> list[RunConfig]:
    """The configs of `plan_comparison`."""
    return [p.config for p in plan_comparison(cfg, objectives, measured, taken)]


# -- β sweeps ----------------------------------------------------------------------------------

BETA_OBJECTIVE = "beta_vae"  # what a β sweep trains when the base run's objective has no β weighing the rate
MAX_SWEEP_BETAS = 16  # runs of one β sweep from the app (they train together as one batched model)
_SWEEP_TAIL = re.compile(r"(\s+(β|beta)=\S+)+")  # the varying value in a sweep run's name
_COPY_TAIL = re.compile(r"\s+#\d+$")  # the suffix that tells a second sweep of one base from the first


def _beta_knob(objective: str) -> Knob | None:
    """The objective's knob `beta`, or None."""
    return next((k for k in knobs(REGISTRY[objective].Params, "objective") if k.key == "objective.beta"), None)


def has_rate_beta(objective: str) -> bool:
    """Whether `objective` has a β that weighs the rate: a knob `beta` meaning what β-VAE's means (same help text;
    RAE's β weighs ½‖z‖² and β-TCVAE's the total correlation, so they have none)."""
    knob_ = _beta_knob(objective)
    return knob_ is not None and knob_.help == _beta_knob(BETA_OBJECTIVE).help


def log_betas(lo: float = 0.1, hi: float = 10.0, n: int = 8) -> list[float]:
    """`n` log-spaced β from `lo` to `hi`, rounded to 3 significant digits: the β sweep's default."""
    return [float(f"{b:.3g}") for b in np.geomspace(lo, hi, n)]


def beta_text(beta: float) -> str:
    """β as a run name and the β field show it: `0.316`, `10`, `1000`."""
    return f"{beta:g}"


def parse_betas(text: str) -> list[float]:
    """The β values of the β sweep's text field (separated by commas or spaces), sorted; ConfigError naming the
    first bad one: not a number, not positive, above β-VAE's bound, listed twice, fewer than 2 or more than
    MAX_SWEEP_BETAS values."""
    hi = _beta_knob(BETA_OBJECTIVE).hi
    parts = [p for p in re.split(r"[,\s;]+", str(text)) if p]
    if len(parts) < 2:
        raise ConfigError("list at least two β values, e.g. 0.1, 1, 10")
    if len(parts) > MAX_SWEEP_BETAS:
        raise ConfigError(f"{len(parts)} β values: a sweep has at most {MAX_SWEEP_BETAS}")
    betas = {}
    for part in parts:
        try:
            beta = float(part) if len(part) <= 40 else math.nan
        except ValueError:
            raise ConfigError(f"β {short(part)!r} is not a number") from None
        if not 0 < beta <= hi:  # (also NaN)
            raise ConfigError(f"β = {short(part)} is not in (0, {hi:g}]: β must be positive (its axis is "
                              "logarithmic) and at most β-VAE's bound")
        if beta_text(beta) in betas:
            raise ConfigError(f"β = {beta_text(beta)} is listed twice")
        betas[beta_text(beta)] = beta
    return sorted(betas.values())


def sweep_stem(name: str) -> str:
    """A run name without a sweep's value and copy number: the stem of the names of a sweep based on that run
    (`vae-digits β=0.316 #2` → `vae-digits`)."""
    return _COPY_TAIL.sub("", _SWEEP_TAIL.sub("", str(name))).strip() or str(name)


def unique_names(names: list[str], taken) -> list[str]:
    """`names` (distinct) as they are when none is taken, else all with one suffix ` #n`, the smallest n ≥ 2 that
    makes every one of them new: a batch keeps one copy number, so two sweeps never list identical runs."""
    taken = set(taken)
    if len(set(names)) != len(names):
        raise ConfigError("the runs of one sweep need distinct names")
    n = 1
    while any((name if n == 1 else f"{name} #{n}") in taken for name in names):
        n += 1
    return names if n == 1 else [f"{name} #{n}" for name in names]


@dataclass
class BetaSweepPlan:
    """The runs of a β sweep: configs and names (one per β), the objective trained, the notes of the switch to it
    (knobs the base run had that it drops or changes; empty when the base objective has a β of the rate)."""

    configs: list[RunConfig]
    names: list[str]
    objective: str
    switched: bool  # the base run's objective had no β of the rate
    notes: list[str]


def plan_beta_sweep(cfg: RunConfig, base_name: str, betas: list[float], taken) -> BetaSweepPlan:
    """A β sweep of the run with config `cfg` and name `base_name`: the same data, network, seed, training and
    objective knobs, with each β of `betas`; an objective without a β of the rate is switched to BETA_OBJECTIVE
    (`--set objective.name=` 's rule keeps the knobs that mean the same thing). Runs are named `<stem> β=<β>`
    (`sweep_stem`), with ` #n` when a name is `taken`."""
    objective = cfg.objective.name if has_rate_beta(cfg.objective.name) else BETA_OBJECTIVE
    names = unique_names([f"{sweep_stem(base_name)} β={beta_text(b)}" for b in betas], taken)
    notes: list = []
    configs = [cfg.with_overrides({"objective.name": objective, "objective.beta": b, "name": name}, notes)
               for b, name in zip(betas, names, strict=True)]
    notes = list(dict.fromkeys(map(str, notes)))  # once each, however many runs
    return BetaSweepPlan(configs, names, objective, objective != cfg.objective.name, notes)


@dataclass
class Sweep:
    """A β sweep in the store: one batch whose runs differ only in β (sorted by β)."""

    batch: str
    runs: list[RunRecord]

    @property
    def betas(self) -> list[float]:
        return [r.config.objective.beta for r in self.runs]

    @property
    def label(self) -> str:
        """`vae-digits #2 · β 0.1 … 10 · 8 runs · batch 1a2b3c4d` (a picker's option: never markdown)."""
        stem = _SWEEP_TAIL.sub("", self.runs[0].name).strip() or self.runs[0].name
        return (f"{stem} · β {beta_text(self.betas[0])} … {beta_text(self.betas[-1])} · {len(self.runs)} runs"
                f" · batch {self.batch}")

    @property
    def active(self) -> bool:
        return any(r.status in ACTIVE for r in self.runs)


def beta_sweeps(runs: list[RunRecord]) -> list[Sweep]:
    """The β sweeps among `runs`, in the order of their newest runs (`RunStore.list_runs` is newest first): each
    batch of at least two runs whose objective has a β of the rate and whose configs differ only in β and name
    (the app's β sweeps and `vaeviz sweep --vary objective.beta=...`)."""
    batches: dict[str, list[RunRecord]] = {}
    for r in runs:
        if r.batch:
            batches.setdefault(r.batch, []).append(r)
    return [Sweep(b, sorted(members, key=lambda r: r.config.objective.beta))
            for b, members in batches.items() if _varies_only_beta(members)]


def _varies_only_beta(runs: list[RunRecord]) -> bool:
    if len(runs) < 2 or not all(has_rate_beta(r.objective) for r in runs):
        return False
    rest = {_without_beta(r.config) for r in runs}
    return len(rest) == 1 and len({r.config.objective.beta for r in runs}) == len(runs)


def _without_beta(cfg: RunConfig) -> str:
    d = cfg.to_dict()
    d["name"] = None
    d["objective"].pop("beta")
    return json.dumps(d, sort_keys=True)


POINT_COLUMNS = ["id", "run", "beta", "status", "step", "split", "rate", "distortion", "neg_elbo", "active_units"]


def sweep_points(store: RunStore, runs: list[RunRecord]) -> pd.DataFrame:
    """One row per run that has logged rate and distortion (columns POINT_COLUMNS): its latest held-out (split
    "eval") rate R, distortion D, −ELBO = D + R and active units, else its last logged training batch's."""
    rows = [row for r in runs if (row := _latest_point(store, r)) is not None]
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def _latest_point(store: RunStore, rec: RunRecord) -> dict | None:
    names = ["rate", "distortion", "active_units"]
    last = store.last_step(rec.id)
    for split, since in (("eval", None), ("train", None if last is None else last - 1)):
        df = store.metrics(rec.id, split=split, names=names, since_step=since)
        w = df.pivot_table(index="step", columns="name", values="value", aggfunc="last")
        if {"rate", "distortion"} <= set(w.columns) and len(w := w.dropna(subset=["rate", "distortion"])):
            row = w.iloc[-1]
            r, d = float(row["rate"]), float(row["distortion"])
            return {"id": rec.id, "run": rec.name, "beta": rec.config.objective.beta, "status": rec.status,
                    "step": int(w.index[-1]), "split": split, "rate": r, "distortion": d, "neg_elbo": d + r,
                    "active_units": float(row.get("active_units", math.nan))}
    return None


# -- user .npz files ----------------------------------------------------------------------------

UPLOAD_MAX_MB = 200  # default of $VAEVIZ_UPLOAD_MAX_MB, the largest .npz the app accepts


def upload_limit_mb() -> int:
    """The upload cap in MB: $VAEVIZ_UPLOAD_MAX_MB (a positive integer), else 200."""
    value = os.environ.get("VAEVIZ_UPLOAD_MAX_MB", "")
    return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else UPLOAD_MAX_MB


def save_upload(data: bytes, home: Path) -> Path:
    """Store uploaded bytes as `home/uploads/<sha256 prefix>.npz` (the name never comes from the client)."""
    path = Path(home) / "uploads" / f"{hashlib.sha256(data).hexdigest()[:32]}.npz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a concurrent reader sees the whole file or none
    return path


def check_npz(path: Path, shown: str) -> int:
    """Validate a user .npz with the data loader; its number of examples. The DataError's message names the file
    `shown`, never its server path."""
    try:
        return len(load_npz(path)[0])
    except DataError as exc:
        raise DataError(str(exc).replace(str(path), shown)) from None


def npz_files(folder: Path) -> list[str]:
    """The names of the .npz files in `folder` (none when it does not exist)."""
    folder = Path(folder)
    return sorted(p.name for p in folder.glob("*.npz") if p.is_file()) if folder.is_dir() else []


# -- images ------------------------------------------------------------------------------------


def as_images(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Flat decoded data (N, D) -> images (N, H, W) or (N, H, W, 3); None for data that are not images."""
    if len(shape) != 3:
        return None
    c, h, w = shape
    imgs = np.asarray(x, dtype=np.float32).reshape(-1, c, h, w)
    imgs = imgs[:, 0] if c == 1 else np.moveaxis(imgs[:, :3], 1, -1)
    return np.clip(imgs, 0.0, 1.0)


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so 8×8 digits stay crisp in the browser."""
    return np.repeat(np.repeat(img, factor, 0), factor, 1)


def png_bytes(img: np.ndarray, scale: int = 1) -> bytes:
    """A [0, 1] image (H, W) or (H, W, 3) as PNG bytes, enlarged `scale` times."""
    from PIL import Image

    arr = (np.clip(upscale(img, scale), 0, 1) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
