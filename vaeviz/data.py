"""Dataset registry: toy 2-D sets, sklearn digits, procedural shapes, MNIST/Fashion-MNIST and user .npz.

Every dataset follows the project convention: float32 in [0, 1], shape (N, D) for vectors or
(N, C, H, W) for images, int64 labels. `load_dataset(cfg)` builds the whole pool from
`DATASETS[cfg.name].load`, then splits it the same way for every dataset:

1. a permutation of the pool from `cfg.seed`; the first round(N·eval_fraction) rows (at least 1)
   are the eval split, the rest the train split, in permutation order. MNIST with its official
   train files present keeps the t10k files as the eval split and only permutes the train rows.
2. micro subsets act on the train split only, the eval split stays whole: `cfg.per_class` keeps
   the first `per_class` train rows of each class, then `cfg.n` keeps the first `n` train rows.

Procedural data (toy 2-D, shapes) is generated with numpy from `cfg.seed` (`cfg.size` rows).
Toy sets are min-max scaled into [0, 1] with one scale for both axes, so they keep their
aspect ratio; `cfg.noise` is in the units of the generator, before that scaling.

Loads are cached in-process per config; every call returns fresh copies of the cached arrays,
so callers may mutate what they get. Bad files raise `DataError` with a message that names
the file and the problem.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import logging
import math
import os
import socket
import struct
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaeviz.config import DataConfig

log = logging.getLogger(__name__)

TOY_SIZE = 5000  # default rows of the toy 2-D sets
SHAPES_SIZE = 10_000  # default rows of the shapes dataset
NET_TIMEOUT = 5.0  # seconds, for the reachability check and each download


class DataError(ValueError):
    """A dataset that cannot be loaded; the message names the file or setting and the problem."""


@dataclass
class Dataset:
    """A train/eval split. Images are (N, C, H, W), vectors (N, D); float32 in [0, 1]."""

    name: str
    x_train: np.ndarray
    x_eval: np.ndarray
    y_train: np.ndarray | None  # (N,) int64
    y_eval: np.ndarray | None
    factors_train: np.ndarray | None = None  # (N, F) float32, shapes dataset only
    factors_eval: np.ndarray | None = None
    factor_names: list[str] | None = None
    class_names: list[str] | None = None
    note: str | None = None  # how the data was found, e.g. "split from the t10k files only"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def n_classes(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        if self.y_train is None:
            return 0
        return int(max(self.y_train.max(initial=-1), self.y_eval.max(initial=-1))) + 1


@dataclass
class Pool:
    """What a loader returns: every example before the split (last `n_fixed_eval` rows: an official eval split)."""

    x: np.ndarray
    y: np.ndarray | None = None
    factors: np.ndarray | None = None
    factor_names: list[str] | None = None
    class_names: list[str] | None = None
    note: str | None = None
    n_fixed_eval: int = 0


@dataclass(frozen=True)
class DatasetInfo:
    description: str
    load: Callable[[DataConfig, Path], Pool]  # (config, data folder) -> pool


def data_dir() -> Path:
    """The folder searched for downloaded data: $VAEVIZ_DATA_DIR, default ~/.vaeviz/data."""
    env = os.environ.get("VAEVIZ_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".vaeviz" / "data"


_default_data_dir = data_dir  # load_dataset's argument shadows the name


# ----------------------------------------------------------------------------- toy 2-D sets


def _unit_scale(points: np.ndarray) -> np.ndarray:
    """Min-max scale (N, 2) points into [0, 1] with one scale for both axes, centred."""
    lo, hi = points.min(0), points.max(0)
    span = max(float((hi - lo).max()), 1e-12)
    return np.clip((points - (lo + hi) / 2) / span + 0.5, 0.0, 1.0).astype(np.float32)


def _gaussian_mixture(rng, n, noise, cfg):
    y = rng.integers(cfg.k, size=n)
    i = np.arange(cfg.k)
    if cfg.layout == "ring":
        angle = 2 * np.pi * i / cfg.k
        centres = np.stack([np.cos(angle), np.sin(angle)], 1)  # (k, 2) on the unit circle
    else:
        side = math.ceil(math.sqrt(cfg.k))
        centres = np.stack([i % side, i // side], 1).astype(np.float64)  # (k, 2), spacing 1
    return centres[y] + noise * rng.standard_normal((n, 2)), y, [f"mode {j}" for j in i]


def _lines(rng, n, noise, cfg):
    """Four segments of length 2 through the origin at 0°, 45°, 90°, 135°; noise across them."""
    y = rng.integers(4, size=n)
    angle = np.pi * y / 4
    along = rng.uniform(-1, 1, size=n)[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    across = noise * rng.standard_normal(n)[:, None] * np.stack([-np.sin(angle), np.cos(angle)], 1)
    return along + across, y, ["0°", "45°", "90°", "135°"]


def _circles(rng, n, noise, cfg):
    """Two concentric circles of radius 1 (class 0) and 0.5 (class 1)."""
    y = rng.integers(2, size=n)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    radius = np.where(y == 0, 1.0, 0.5)[:, None]
    points = radius * np.stack([np.cos(angle), np.sin(angle)], 1)
    return points + noise * rng.standard_normal((n, 2)), y, ["outer", "inner"]


def _moons(rng, n, noise, cfg):
    """Two interleaved half circles of radius 1."""
    y = rng.integers(2, size=n)
    angle = rng.uniform(0, np.pi, size=n)
    upper = np.stack([np.cos(angle), np.sin(angle)], 1)
    lower = np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], 1)
    points = np.where((y == 0)[:, None], upper, lower)
    return points + noise * rng.standard_normal((n, 2)), y, ["upper", "lower"]


def _pinwheel(rng, n, noise, cfg, arms=5, radial_std=0.3, rate=0.25):
    """Five arms: radius ~ N(1, radial_std), tangential noise `noise`, arm bent by rate·exp(radius)."""
    y = rng.integers(arms, size=n)
    f = rng.standard_normal((n, 2)) * [radial_std, noise] + [1.0, 0.0]  # (n, 2) radial, tangential
    angle = 2 * np.pi * y / arms + rate * np.exp(f[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    points = np.stack([c * f[:, 0] - s * f[:, 1], s * f[:, 0] + c * f[:, 1]], 1)
    return points, y, [f"arm {j}" for j in range(arms)]


def _toy(generate, default_noise: float):
    """A loader that draws `cfg.size` points from `generate` and scales them into [0, 1]."""

    def load(cfg: DataConfig, root: Path) -> Pool:
        rng = np.random.default_rng([cfg.seed, 0])
        noise = default_noise if cfg.noise is None else cfg.noise
        points, y, names = generate(rng, cfg.size or TOY_SIZE, noise, cfg)
        return Pool(_unit_scale(points), y.astype(np.int64), class_names=names)

    return load


# ----------------------------------------------------------------------------- digits


def _load_digits(cfg: DataConfig, root: Path) -> Pool:
    from sklearn.datasets import load_digits  # shipped with scikit-learn, no download

    d = load_digits()
    x = (d.images[:, None] / 16.0).astype(np.float32)  # (1797, 1, 8, 8)
    return Pool(x, d.target.astype(np.int64), class_names=[str(i) for i in range(10)])


# ----------------------------------------------------------------------------- shapes

SHAPE_NAMES = ["square", "ellipse", "triangle"]
SHAPES_SIDE = 32  # image side in pixels
SHAPES_FACTOR_RANGES = {  # declared range [lo, hi] of each factor, in factor_names order
    "shape": (0.0, 2.0),  # index into SHAPE_NAMES
    "scale": (0.5, 1.0),  # circumradius as a fraction of _RADIUS
    "rotation": (0.0, np.pi / 2),  # radians; below every shape's period except the square's
    "x": (0.0, 1.0),  # centre, 0 = leftmost column that keeps the largest shape inside
    "y": (0.0, 1.0),  # centre, 0 = top
}
_RADIUS = 8.0  # circumradius in pixels at scale 1


def _sdf_square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) - np.float32(1 / math.sqrt(2))


def _sdf_ellipse(u, v, a=1.0, b=0.5):
    q = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2) / np.maximum(q, 1e-6)  # |∇q|
    return (q - 1) / np.maximum(grad, 1e-6)  # first-order distance to the boundary


def _sdf_triangle(u, v):
    """Equilateral, circumradius 1: the largest signed distance to its three edge lines."""
    phi = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
    edges = [u * np.float32(np.cos(p)) + v * np.float32(np.sin(p)) for p in phi]
    return np.maximum(np.maximum(edges[0], edges[1]), edges[2]) - np.float32(0.5)


_SDFS = [_sdf_square, _sdf_ellipse, _sdf_triangle]  # by SHAPE_NAMES index


def sample_shape_factors(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 5) float32 factors, uniform over SHAPES_FACTOR_RANGES (shape uniform over its 3 values)."""
    lo, hi = np.array(list(SHAPES_FACTOR_RANGES.values()), dtype=np.float64).T
    factors = rng.uniform(lo, hi, size=(n, len(lo)))
    factors[:, 0] = rng.integers(len(SHAPE_NAMES), size=n)
    return factors.astype(np.float32)


def render_shapes(factors: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """(N, 5) factors -> (N, 1, 32, 32) float32 images, edges anti-aliased by their signed distance."""
    factors = np.asarray(factors, dtype=np.float32)
    side, margin = SHAPES_SIDE, _RADIUS + 0.5
    pix = np.arange(side, dtype=np.float32)
    out = np.empty((len(factors), 1, side, side), np.float32)
    for start in range(0, len(factors), chunk):
        f = factors[start : start + chunk]
        shape, scale, rot, x, y = (f[:, j, None, None] for j in range(5))  # each (B, 1, 1)
        dx = pix[None, None, :] - (margin + x * (side - 1 - 2 * margin))  # (B, 1, W)
        dy = pix[None, :, None] - (margin + y * (side - 1 - 2 * margin))  # (B, H, 1)
        radius = scale * _RADIUS
        u = (np.cos(rot) * dx + np.sin(rot) * dy) / radius  # (B, H, W) in units of the circumradius
        v = (np.cos(rot) * dy - np.sin(rot) * dx) / radius
        dist = np.zeros_like(u)
        for s, sdf in enumerate(_SDFS):
            rows = np.rint(shape[:, 0, 0]) == s
            dist[rows] = sdf(u[rows], v[rows]) * radius[rows]  # pixels
        out[start : start + chunk, 0] = np.clip(0.5 - dist, 0.0, 1.0)
    return out


def _load_shapes(cfg: DataConfig, root: Path) -> Pool:
    rng = np.random.default_rng([cfg.seed, 0])
    factors = sample_shape_factors(rng, cfg.size or SHAPES_SIZE)
    return Pool(
        render_shapes(factors),
        factors[:, 0].astype(np.int64),
        factors=factors,
        factor_names=list(SHAPES_FACTOR_RANGES),
        class_names=list(SHAPE_NAMES),
    )


# ----------------------------------------------------------------------------- IDX files (MNIST, Fashion-MNIST)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # uint8, 3 dims / uint8, 1 dim


def read_idx(path, magic: int | None = None) -> np.ndarray:
    """Read a gzipped IDX file into an array; check the gzip stream, the magic number and the length."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"file {path} is truncated or not gzip ({e})") from None
    except OSError as e:
        raise DataError(f"cannot read file {path} ({e.strerror or e})") from None
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    valid = found is not None and raw[0] == raw[1] == 0 and raw[2] in _IDX_DTYPES and raw[3] > 0
    if not valid or (magic is not None and found != magic):
        want = f"0x{magic:08x}" if magic is not None else "0x0000 followed by a type code and the rank"
        got = f"0x{raw[:4].hex()}" if len(raw) >= 4 else f"{len(raw)} bytes"
        raise DataError(f"file {path} has a wrong IDX magic number {got} (expected {want})")
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise DataError(f"file {path} is shorter than its IDX header ({len(raw)} bytes)")
    dims = struct.unpack(f">{raw[3]}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = math.prod(dims) * dtype.itemsize
    if len(raw) - header != need:
        raise DataError(f"file {path} holds {len(raw) - header} data bytes but its header {dims} needs {need}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX dataset is looked up and downloaded from."""

    name: str
    folders: tuple[str, ...]  # sub-folders of the data folder, searched before the data folder itself
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # file name -> MD5 of the official file
    class_names: tuple[str, ...]


def _part(part: str) -> tuple[str, str]:
    return f"{part}-images-idx3-ubyte.gz", f"{part}-labels-idx1-ubyte.gz"


IDX_FILES = _part("train") + _part("t10k")

MNIST = IdxSource(
    "mnist",
    ("mnist",),
    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    dict(zip(IDX_FILES, ["f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                         "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"], strict=True)),
    tuple(str(i) for i in range(10)),
)
FASHION_MNIST = IdxSource(
    "fashion_mnist",
    ("fashion_mnist", "fashion-mnist"),
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
     "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    dict(zip(IDX_FILES, ["8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                         "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"], strict=True)),
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)


def _locate(src: IdxSource, root: Path, names) -> Path | None:
    """The first searched folder that holds every file in `names`."""
    for folder in [root / sub for sub in src.folders] + [root]:
        if all((folder / name).is_file() for name in names):
            return folder
    return None


def _read_part(folder: Path, part: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64 of one IDX part (train or t10k)."""
    image_file, label_file = (folder / name for name in _part(part))
    images = read_idx(image_file, IMAGES_MAGIC)
    labels = read_idx(label_file, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels")
    if labels.size and labels.max() >= n_classes:
        raise DataError(f"{label_file} has label {labels.max()}, outside 0..{n_classes - 1}")
    return (images[:, None] / np.float32(255)).astype(np.float32), labels.astype(np.int64)


def _offline() -> bool:
    return os.environ.get("VAEVIZ_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=16)
def _reachable(url: str) -> bool:
    """Whether a TCP connection to the url's host opens within NET_TIMEOUT (checked once per process)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=NET_TIMEOUT):
            return True
    except OSError:
        return False


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=NET_TIMEOUT) as response:
        return response.read()


def _fetch_verified(name: str, md5: str, mirrors: list[str], folder: Path) -> None:
    """Download `name` from the first mirror whose copy has the right MD5, into `folder`."""
    errors = []
    for mirror in mirrors:
        try:
            blob = _fetch(mirror + name)
        except OSError as e:  # URLError, timeouts, connection resets
            errors.append(f"{mirror + name}: {e}")
            continue
        digest = hashlib.md5(blob).hexdigest()
        if digest != md5:
            errors.append(f"{mirror + name}: MD5 {digest} differs from the known {md5}")
            continue
        try:
            (folder / (name + ".part")).write_bytes(blob)
            (folder / (name + ".part")).replace(folder / name)
        except OSError as e:
            raise DataError(f"cannot write {folder / name} ({e.strerror or e})") from None
        log.info("downloaded %s (MD5 verified)", mirror + name)
        return
    raise DataError(f"download of {name} failed: " + "; ".join(errors))


def download_idx(src: IdxSource, folder: Path) -> Path:
    """Download the missing IDX files of `src` into `folder`, verifying each MD5; DataError when impossible."""
    if _offline():
        raise DataError("no download: VAEVIZ_OFFLINE is set")
    mirrors = [m for m in src.mirrors if _reachable(m)]
    if not mirrors:
        raise DataError("no download: no network reaches " + ", ".join(src.mirrors))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"no download: cannot create {folder} ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK):
        raise DataError(f"no download: {folder} is not writable")
    for name in IDX_FILES:
        if not (folder / name).is_file():
            _fetch_verified(name, src.md5[name], mirrors, folder)
    return folder


def _missing_message(src: IdxSource, root: Path, why: str) -> str:
    home = root / src.folders[0]
    missing = [name for name in IDX_FILES if not (home / name).is_file()]
    others = ", ".join(str(p) for p in [root / sub for sub in src.folders[1:]] + [root])
    return (
        f"{src.name} files not found: {', '.join(missing)} missing in {home} (also looked in {others}). "
        f"Put the four IDX .gz files {', '.join(IDX_FILES)} in {home} (the two t10k files alone give a "
        f"10,000-image pool), or point VAEVIZ_DATA_DIR at the folder that holds them ({why})."
    )


def _load_idx(src: IdxSource, root: Path) -> Pool:
    """All four files: train rows then the official t10k eval rows; else one complete part as the pool."""
    k = len(src.class_names)
    folder, why = _locate(src, root, IDX_FILES), ""
    if folder is None:
        try:
            folder = download_idx(src, root / src.folders[0])
        except DataError as e:
            why = str(e)
    if folder is not None:
        (x, y), (xe, ye) = _read_part(folder, "train", k), _read_part(folder, "t10k", k)
        return Pool(np.concatenate([x, xe]), np.concatenate([y, ye]), class_names=list(src.class_names),
                    n_fixed_eval=len(xe))
    for part in ("t10k", "train"):
        folder = _locate(src, root, _part(part))
        if folder is not None:
            x, y = _read_part(folder, part, k)
            note = (f"{src.name}: only the {part} files were found (in {folder}); train and eval are split "
                    f"from their {len(x)} images ({why})")
            log.info(note)
            return Pool(x, y, class_names=list(src.class_names), note=note)
    raise DataError(_missing_message(src, root, why))


def _idx_loader(src: IdxSource):
    def load(cfg: DataConfig, root: Path) -> Pool:
        return _load_idx(src, root)

    return load


# ----------------------------------------------------------------------------- user .npz


def _check_x(x: np.ndarray, where: str) -> np.ndarray:
    """Validate x and return it as float32 in [0, 1], (N, D) or (N, C, H, W)."""
    if x.ndim not in (2, 3, 4) or 0 in x.shape[1:]:
        raise DataError(f"x in {where} has shape {x.shape}; expected (N, D), (N, H, W) or (N, C, H, W)")
    if len(x) < 2:
        raise DataError(f"x in {where} has {len(x)} example(s); at least 2 are needed (train and eval)")
    if x.dtype == np.bool_:
        x = x.astype(np.float32)
    elif np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(f"x in {where} is integer with values in [{lo}, {hi}]; integer pixels must lie "
                            "in 0..255 (they are scaled by 1/255), or save floats in [0, 1]")
        x = x.astype(np.float32) / np.float32(255)
    elif np.issubdtype(x.dtype, np.floating):
        bad = int((~np.isfinite(x)).sum())
        if bad:
            raise DataError(f"x in {where} has {bad} NaN or infinite value(s)")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise DataError(f"x in {where} has float values in [{lo:.4g}, {hi:.4g}], outside [0, 1]; "
                            "rescale it (e.g. x / 255 for 8-bit pixels)")
        x = x.astype(np.float32)
    else:
        raise DataError(f"x in {where} has dtype {x.dtype}; expected integers, floats or booleans")
    return np.ascontiguousarray(x[:, None] if x.ndim == 3 else x)


def _check_y(y: np.ndarray, n: int, where: str) -> tuple[np.ndarray, list[str]]:
    """Validate labels; return them as int64 codes 0..K-1 and the K original values as class names."""
    if y.ndim != 1:
        raise DataError(f"y in {where} has shape {y.shape}; expected one label per example, shape ({n},)")
    if len(y) != n:
        raise DataError(f"y in {where} has {len(y)} labels but x has {n} examples")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(f"y in {where} has non-integer values; labels must be integers or strings")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuUS":
        raise DataError(f"y in {where} has dtype {y.dtype}; labels must be integers or strings")
    values, codes = np.unique(y, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), [str(v) for v in values]


def _read_npz(path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    if path is None:
        raise DataError("data.name=npz needs data.path, a .npz file with x and optional y")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"npz file {path} does not exist")
    if not path.is_file():
        raise DataError(f"npz path {path} is not a file")
    bad = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        archive = np.load(path, allow_pickle=False)
    except bad as e:
        raise DataError(f"{path} is not a valid .npz file ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path} is not a valid .npz file (it holds one bare array; use np.savez(path, x=x, y=y))")
    with archive:
        keys = list(archive.keys())
        if "x" not in keys:
            raise DataError(f"{path} has no array 'x' (its keys: {', '.join(keys) or 'none'})")
        try:
            x, y = archive["x"], archive["y"] if "y" in keys else None
        except bad as e:
            raise DataError(f"{path} is not a valid .npz file ({e})") from None
    x = _check_x(x, str(path))
    if y is None:
        return x, None, None
    y, names = _check_y(y, len(x), str(path))
    return x, y, names


def load_npz(path) -> tuple[np.ndarray, np.ndarray | None]:
    """A validated user file: x float32 in [0, 1], (N, D) or (N, C, H, W); y int64 codes 0..K-1 or None."""
    x, y, _ = _read_npz(path)
    return x, y


def _load_user_npz(cfg: DataConfig, root: Path) -> Pool:
    x, y, names = _read_npz(cfg.path)
    return Pool(x, y, class_names=names)


# ----------------------------------------------------------------------------- registry, split, cache

DATASETS: dict[str, DatasetInfo] = {
    "gaussian_mixture": DatasetInfo("2-D mixture of data.k Gaussians on a ring or grid (data.layout, data.noise)",
                                    _toy(_gaussian_mixture, 0.05)),
    "lines": DatasetInfo("2-D: four noisy line segments crossing at the centre", _toy(_lines, 0.02)),
    "circles": DatasetInfo("2-D: two noisy concentric circles", _toy(_circles, 0.04)),
    "moons": DatasetInfo("2-D: two interleaved noisy half circles", _toy(_moons, 0.08)),
    "pinwheel": DatasetInfo("2-D: five curved pinwheel arms", _toy(_pinwheel, 0.05)),
    "digits": DatasetInfo("8×8 handwritten digits shipped with scikit-learn (1,797 images, 10 classes)",
                          _load_digits),
    "shapes": DatasetInfo("32×32 procedural shapes with known factors: shape, scale, rotation, x, y", _load_shapes),
    "mnist": DatasetInfo("MNIST 28×28 digits from the IDX .gz files in the data folder", _idx_loader(MNIST)),
    "fashion_mnist": DatasetInfo("Fashion-MNIST 28×28 clothes from the IDX .gz files in the data folder",
                                 _idx_loader(FASHION_MNIST)),
    "npz": DatasetInfo("your own .npz (data.path): x (N, H, W), (N, D) or (N, C, H, W), optional y",
                       _load_user_npz),
}


def describe_datasets() -> list[tuple[str, str]]:
    """(name, description) of every registered dataset, for `vaeviz datasets`."""
    return [(name, info.description) for name, info in DATASETS.items()]


def _take(a: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if a is None else a[rows]


def _train_rows(rows: np.ndarray, y: np.ndarray | None, cfg: DataConfig) -> np.ndarray:
    """Micro subsets: the first `per_class` rows of each class, then the first `n` rows (order kept)."""
    if cfg.per_class is not None:
        if y is None:
            raise DataError(f"data.per_class needs labels, and dataset '{cfg.name}' has none")
        labels, keep = y[rows], np.zeros(len(rows), bool)
        for c in np.unique(labels):
            keep[np.flatnonzero(labels == c)[: cfg.per_class]] = True
        rows = rows[keep]
    return rows if cfg.n is None else rows[: cfg.n]


def split_pool(pool: Pool, cfg: DataConfig) -> Dataset:
    """Permute from cfg.seed, hold out the eval split, then apply the micro subsets to the train split."""
    rng = np.random.default_rng([cfg.seed, 1])
    n = len(pool.x)
    if pool.n_fixed_eval:
        train, held = rng.permutation(n - pool.n_fixed_eval), np.arange(n - pool.n_fixed_eval, n)
    else:
        if n < 2:
            raise DataError(f"dataset '{cfg.name}' has {n} example(s); at least 2 are needed (train and eval)")
        n_eval = min(n - 1, max(1, round(n * cfg.eval_fraction)))
        perm = rng.permutation(n)
        train, held = perm[n_eval:], perm[:n_eval]
    train = _train_rows(train, pool.y, cfg)
    return Dataset(
        cfg.name, pool.x[train], pool.x[held], _take(pool.y, train), _take(pool.y, held),
        _take(pool.factors, train), _take(pool.factors, held), pool.factor_names, pool.class_names, pool.note,
    )


def _stamp(cfg: DataConfig) -> tuple | None:
    """Identity of the user file (resolved path, mtime, size), so an edited .npz is reloaded."""
    path = Path(cfg.path).expanduser().resolve() if cfg.name == "npz" and cfg.path else None
    if path is None or not path.is_file():
        return None
    st = path.stat()
    return (str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _load_cached(fields: tuple, root: str, stamp) -> Dataset:
    cfg = DataConfig(*fields)
    return split_pool(DATASETS[cfg.name].load(cfg, Path(root)), cfg)


def _copy(value):
    return value.copy() if isinstance(value, (np.ndarray, list)) else value


def clear_cache() -> None:
    _load_cached.cache_clear()


def load_dataset(cfg: DataConfig, data_dir: Path | None = None) -> Dataset:
    """Load, split and subset the dataset named by `cfg` (cached per config; returns fresh copies)."""
    if cfg.name not in DATASETS:
        raise DataError(f"unknown dataset '{cfg.name}' (known: {', '.join(DATASETS)})")
    root = Path(data_dir).expanduser() if data_dir is not None else _default_data_dir()
    ds = _load_cached(dataclasses.astuple(cfg), str(root), _stamp(cfg))
    return Dataset(**{f.name: _copy(getattr(ds, f.name)) for f in dataclasses.fields(ds)})
