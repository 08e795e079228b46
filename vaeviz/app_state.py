"""Streamlit-free helpers behind the app: user text, progress and ETA, steps, Train form widget specs, user .npz
files, images.

The pages wrap these in `st.cache_*` calls (views/common.py); nothing here imports streamlit, so it is
tested and benchmarked like the rest of the library.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaeviz.checkpoint import checkpoint_steps
from vaeviz.config import ConfigError, RunConfig, base_type
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


def comparison_configs(cfg: RunConfig, objectives: list[str]) -> list[RunConfig]:
    """The same data, network, seed and training under each objective (objective knobs at their defaults)."""
    if not objectives:
        raise ConfigError("pick at least one objective to compare")
    return [cfg.with_overrides({"objective.name": name, "name": f"{name}-{cfg.data.name}-cmp"}) for name in objectives]


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
