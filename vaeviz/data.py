"""Dataset registry: toy 2-D sets, sklearn digits, procedural shapes, MNIST/Fashion-MNIST and user .npz.

Every dataset follows the project convention: float32 in [0, 1], shape (N, D) for vectors or
(N, C, H, W) for images, int64 labels. `load_dataset(cfg)` builds the whole pool from
`DATASETS[cfg.name].load`, then splits it the same way for every dataset:

1. a permutation of the pool from `cfg.seed`; the first round(N·eval_fraction) rows (at least 1)
   are the eval split, the rest the train split, in permutation order. A train split (after the
   micro subsets below) of fewer than 2 rows is refused: the ex-post GMM fitted at the end of
   training needs 2. MNIST with its official train files present keeps the t10k files as the
   eval split and only permutes the train rows.
2. micro subsets act on the train split only, the eval split stays whole: `cfg.per_class` keeps
   the first `per_class` train rows of each class, then `cfg.n` keeps the first `n` train rows.

Procedural data (toy 2-D, shapes) is generated with numpy from `cfg.seed` (`cfg.size` rows).
Toy sets are min-max scaled into [0, 1] with one scale for both axes, so they keep their
aspect ratio; `cfg.noise` is in the units of the generator, before that scaling.

Loads are cached in-process per config; every call returns fresh copies of the cached arrays,
so callers may mutate what they get. Bad files raise `DataError` with a message that names
the file and the problem.

Loading is bounded: what a file would take in memory (decompressed, and as float32) is read
from its headers (the .npy headers inside an .npz, the dims of an IDX header) and checked
against `max_data_bytes()` (2 GB, or `$VAEVIZ_MAX_DATA_BYTES`) before anything is allocated;
gzip streams are decompressed incrementally and never beyond what their header declares.
Paths that are not readable regular files (directories, fifos, devices, symlink loops) are
refused before they are opened for reading.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import gzip
import hashlib
import logging
import lzma
import math
import os
import socket
import stat
import struct
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vaeviz.config import DataConfig

log = logging.getLogger(__name__)

TOY_SIZE = 5000  # default rows of the toy 2-D sets
SHAPES_SIZE = 10_000  # default rows of the shapes dataset
NET_TIMEOUT = 5.0  # seconds, for the reachability check and each download
DEFAULT_MAX_DATA_BYTES = 2_000_000_000  # what one loaded file may take in memory, unless $VAEVIZ_MAX_DATA_BYTES
MIN_TRAIN_EXAMPLES = 2  # the ex-post GMM fitted at the end of training needs 2 codes
CHUNK_BYTES = 1 << 25  # rows converted or decompressed at a time


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


# ----------------------------------------------------------------------------- bounded reading


def max_data_bytes() -> int:
    """The most bytes one loaded file may take in memory: $VAEVIZ_MAX_DATA_BYTES, default 2 GB."""
    raw = os.environ.get("VAEVIZ_MAX_DATA_BYTES", "").strip()
    if not raw:
        return DEFAULT_MAX_DATA_BYTES
    try:
        limit = int(raw) if len(raw) <= 30 else -1
    except ValueError:
        limit = -1
    if limit <= 0:
        raise DataError(f"VAEVIZ_MAX_DATA_BYTES={raw[:40]!r} is not a positive whole number of bytes")
    return limit


def format_bytes(n: int) -> str:
    """Bytes in decimal units, 3 significant digits: '2 GB', '3.14 PB'."""
    for unit, scale in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def check_budget(nbytes: int, subject: str) -> None:
    """DataError when `subject` would take more than `max_data_bytes()` in memory."""
    limit = max_data_bytes()
    if nbytes > limit:
        raise DataError(f"{subject} needs {format_bytes(nbytes)} in memory, above the {format_bytes(limit)} limit "
                        "on loaded data (set VAEVIZ_MAX_DATA_BYTES to change it)")


class UnreadableFile(OSError):
    """A path that is not a readable regular file; `str()` is the problem ('does not exist', ...)."""

    def __init__(self, problem: str, not_a_file: bool = False):
        super().__init__(problem)
        self.not_a_file = not_a_file


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _open_problem(e: OSError) -> str:
    if e.errno == errno.ENOENT:
        return "does not exist"
    if e.errno == errno.ELOOP:
        return "is a symlink loop (or a chain of too many links)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "is not readable (permission denied)"
    return f"cannot be opened ({e.strerror or e})"


def open_regular(path) -> BinaryIO:
    """`path` opened for binary reading; UnreadableFile unless it is a readable regular file.
    The file is opened non-blocking and checked with fstat, so a fifo or device is never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UnreadableFile(_open_problem(e)) from None
    except ValueError:  # an embedded NUL character
        raise UnreadableFile("is not a valid path (it holds a NUL character)") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise UnreadableFile(f"is not a file (it is {kind})", not_a_file=True)
    return os.fdopen(fd, "rb")


def _user_path(path, kind: str) -> Path:
    """`path` with ~ expanded; DataError for a ~user that does not exist."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise DataError(f"{kind} path {path} names an unknown home directory") from None


def _open_data_file(path: Path, kind: str) -> BinaryIO:
    """open_regular, with the problem as a DataError naming the file ('npz file X does not exist')."""
    try:
        return open_regular(path)
    except UnreadableFile as e:
        raise DataError(f"{kind} {'path' if e.not_a_file else 'file'} {path} {e}") from None


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
    n = cfg.size or SHAPES_SIZE
    check_budget(n * SHAPES_SIDE**2 * 4, f"dataset 'shapes' with data.size={n} ({SHAPES_SIDE}×{SHAPES_SIDE} images)")
    rng = np.random.default_rng([cfg.seed, 0])
    factors = sample_shape_factors(rng, n)
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
    """Read a gzipped IDX file into an array; check the gzip stream, the magic number, the size its
    header declares (against `max_data_bytes()`, before decompressing the data) and the length."""
    path = Path(path)
    with _open_data_file(path, "IDX") as raw_file:
        try:
            with gzip.GzipFile(fileobj=raw_file, mode="rb") as f:
                dims, dtype = _idx_header(f, path, magic)
                return _idx_data(f, path, dims, dtype)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise DataError(f"file {path} is truncated or not gzip ({e})") from None
        except OSError as e:
            raise DataError(f"cannot read file {path} ({e.strerror or e})") from None


def _read_upto(f, n: int) -> bytes:
    """Up to n bytes of a stream (fewer only at its end)."""
    parts, left = [], n
    while left > 0:
        part = f.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _idx_header(f, path: Path, magic: int | None) -> tuple[tuple[int, ...], np.dtype]:
    """Dims and dtype from the magic number and dims of an IDX stream; the data is checked against the limit."""
    raw = _read_upto(f, 4)
    found = int.from_bytes(raw, "big") if len(raw) == 4 else None
    valid = found is not None and raw[0] == raw[1] == 0 and raw[2] in _IDX_DTYPES and raw[3] > 0
    if not valid or (magic is not None and found != magic):
        want = f"0x{magic:08x}" if magic is not None else "0x0000 followed by a type code and the rank"
        got = f"0x{raw.hex()}" if len(raw) == 4 else f"{len(raw)} bytes"
        raise DataError(f"file {path} has a wrong IDX magic number {got} (expected {want})")
    rest = _read_upto(f, 4 * raw[3])
    if len(rest) < 4 * raw[3]:
        raise DataError(f"file {path} is shorter than its IDX header ({4 + len(rest)} bytes)")
    dims = struct.unpack(f">{raw[3]}I", rest)
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    values = math.prod(dims)
    check_budget(values * max(dtype.itemsize, 4), f"IDX file {path} (header dims {dims}, {dtype.name}, as float32)")
    return dims, dtype


def _idx_data(f, path: Path, dims: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The data after the header, decompressed chunk by chunk into a buffer of the declared size;
    a stream longer than its header says is refused after reading one byte more."""
    need = math.prod(dims) * dtype.itemsize
    buf = bytearray(need)
    view, got = memoryview(buf), 0
    while got < need:
        n = f.readinto(view[got : got + CHUNK_BYTES])
        if not n:
            break
        got += n
    view.release()
    if got < need:
        raise DataError(f"file {path} holds {got} data bytes but its header {dims} needs {need}")
    if f.read(1):
        raise DataError(f"file {path} holds more than {need} data bytes but its header {dims} needs {need}")
    try:
        return np.frombuffer(buf, dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)
    except ValueError:  # e.g. (0, 2**31, 2**31, 2**31): no data, but more elements per row than numpy indexes
        raise DataError(f"file {path} has header dims {dims}, which no array can have") from None


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

MIN_POOL = 1 + MIN_TRAIN_EXAMPLES  # one eval example and the train minimum
MAX_ZIP_DIRECTORY = 1 << 20  # bytes of an .npz's zip directory (np.savez writes ~100 per array)
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, RuntimeError,
               NotImplementedError, struct.error, OverflowError)  # what zipfile and numpy raise on a bad file


def _x_stats(x: np.ndarray) -> tuple[int, float, float]:
    """(non-finite count, min, max) of x, computed a chunk of rows at a time (no array-sized temporaries)."""
    bad, lo, hi = 0, math.inf, -math.inf
    for rows in _row_chunks(x):
        part = x[rows]
        if part.dtype.kind == "f":
            bad += int(part.size - np.count_nonzero(np.isfinite(part)))
        if not bad:  # with a bad value the range is not reported
            lo, hi = min(lo, part.min().item()), max(hi, part.max().item())
    return bad, lo, hi


def _row_chunks(x: np.ndarray):
    """Slices of rows of x of about CHUNK_BYTES each."""
    step = max(1, CHUNK_BYTES // max(1, x[:1].nbytes))
    return (slice(i, i + step) for i in range(0, len(x), step))


def _check_x(x: np.ndarray, where: str) -> np.ndarray:
    """Validate x and return it as float32 in [0, 1], (N, D) or (N, C, H, W)."""
    if x.ndim not in (2, 3, 4) or 0 in x.shape[1:]:
        raise DataError(f"x in {where} has shape {x.shape}; expected (N, D), (N, H, W) or (N, C, H, W)")
    if x.dtype.kind not in "biuf":
        raise DataError(f"x in {where} has dtype {x.dtype}; expected integers, floats or booleans")
    bad, lo, hi = _x_stats(x)
    if bad:
        raise DataError(f"x in {where} has {bad} NaN or infinite value(s)")
    if x.dtype.kind in "iu" and (lo < 0 or hi > 255):
        raise DataError(f"x in {where} is integer with values in [{lo}, {hi}]; integer pixels must lie "
                        "in 0..255 (they are scaled by 1/255), or save floats in [0, 1]")
    if x.dtype.kind == "f" and (lo < 0 or hi > 1):
        raise DataError(f"x in {where} has float values in [{lo:.4g}, {hi:.4g}], outside [0, 1]; "
                        "rescale it (e.g. x / 255 for 8-bit pixels)")
    if len(x) < MIN_POOL:
        raise DataError(f"x in {where} has {len(x)} example(s); at least {MIN_POOL} are needed (1 to evaluate, "
                        f"{MIN_TRAIN_EXAMPLES} to train and fit the ex-post GMM)")
    out = np.empty(x.shape, np.float32)
    for rows in _row_chunks(x):
        part = x[rows]
        out[rows] = part.astype(np.float32) / np.float32(255) if x.dtype.kind in "iu" else part
    return out[:, None] if out.ndim == 3 else out


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


def _zip_directory_size(f: BinaryIO) -> int:
    """Bytes of a zip's central directory, from its end record (ZIP64 aware); 0 when there is none."""
    end = f.seek(0, os.SEEK_END)
    f.seek(max(0, end - 22 - 65535))
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        return 0  # zipfile refuses it
    entries, size = struct.unpack("<HI", tail[at + 10 : at + 16])
    locator = tail[at - 20 : at] if at >= 20 else b""
    if (entries == 0xFFFF or size == 0xFFFFFFFF) and locator[:4] == b"PK\x06\x07":
        f.seek(struct.unpack("<Q", locator[8:16])[0])
        record = f.read(56)
        if record[:4] == b"PK\x06\x06" and len(record) == 56:
            size = struct.unpack("<Q", record[40:48])[0]
    return size


def _open_zip(f: BinaryIO, path: Path) -> zipfile.ZipFile:
    """The .npz as a zip archive, refused when it is a bare .npy, not a zip, or has an outsized directory."""
    if f.read(6) == b"\x93NUMPY":
        raise DataError(f"{path} is not a valid .npz file (it holds one bare array; use np.savez(path, x=x, y=y))")
    size = _zip_directory_size(f)
    if size > MAX_ZIP_DIRECTORY:
        raise DataError(f"{path} is not a valid .npz file (its zip directory has {format_bytes(size)}, more than the "
                        f"{format_bytes(MAX_ZIP_DIRECTORY)} an .npz of a few arrays needs)")
    f.seek(0)
    return zipfile.ZipFile(f)


@dataclass
class _Member:
    """One .npy inside an .npz, as its header declares it."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int  # bytes of the .npy header
    where: str  # "x in FILE"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def check_length(self) -> None:
        """DataError when the member's declared size cannot hold the data its header declares."""
        held = max(0, self.info.file_size - self.offset)
        if self.nbytes > held:
            raise DataError(f"{self.where} declares shape {self.shape} of {self.dtype} ({format_bytes(self.nbytes)}) "
                            f"but holds {held} data bytes")


def _npy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> _Member:
    """Read and check one member's .npy header (no data): a shape without negative dims, no Python objects."""
    with archive.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError:
            raise DataError(f"{where} is not a .npy array") from None
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        offset = f.tell()
    if any(d < 0 for d in shape):
        raise DataError(f"{where} declares a negative dimension in its shape {shape}")
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects (dtype {dtype}); save numbers or strings")
    return _Member(info, tuple(shape), dtype, offset, where)


def _npz_members(archive: zipfile.ZipFile, path: Path) -> tuple[_Member, _Member | None]:
    """The headers of x and y (None when absent), checked against the memory limit and the members' sizes
    before any data is read."""
    infos = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
    if "x" not in infos:
        raise DataError(f"{path} has no array 'x' (its keys: {', '.join(sorted(infos))[:200] or 'none'})")
    x = _npy_member(archive, infos["x"], f"x in {path}")
    y = _npy_member(archive, infos["y"], f"y in {path}") if "y" in infos else None
    n, values = (x.shape[0] if x.shape else 0), math.prod(x.shape)
    total = max(x.nbytes, 4 * values) + (0 if y is None else y.nbytes + 8 * n)  # as stored, then as float32
    check_budget(total, f"{path} (x of shape {x.shape}, {x.dtype}, as float32{'' if y is None else ', and y'})")
    for member in (x, y):
        if member is not None:
            member.check_length()
    return x, y


def _read_member(archive: zipfile.ZipFile, member: _Member) -> np.ndarray:
    with archive.open(member.info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _read_npz(path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    if path is None:
        raise DataError("data.name=npz needs data.path, a .npz file with x and optional y")
    path = _user_path(path, "npz")
    with _open_data_file(path, "npz") as f:
        try:
            with _open_zip(f, path) as archive:
                xm, ym = _npz_members(archive, path)
                x = _read_member(archive, xm)
                y = None if ym is None else _read_member(archive, ym)
        except DataError:
            raise
        except _NPZ_ERRORS as e:
            raise DataError(f"{path} is not a valid .npz file ({_one_line(e)})") from None
    x = _check_x(x, str(path))
    if y is None:
        return x, None, None
    y, names = _check_y(y, len(x), str(path))
    return x, y, names


def _one_line(e: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, at most `limit` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

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
    "npz": DatasetInfo("your own .npz (uploaded in the app; data.path on the command line): "
                       "x (N, H, W), (N, D) or (N, C, H, W), optional y",
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


def _split_story(n: int, n_eval: int, n_train: int, cfg: DataConfig) -> str:
    """How the train split got its size, for the message of a split that is too small."""
    story = f"{n} examples, {n_eval} held out for eval (data.eval_fraction={cfg.eval_fraction}), {n_train} left"
    if cfg.per_class is not None:
        story += f", data.per_class={cfg.per_class}"
    if cfg.n is not None:
        story += f", data.n={cfg.n}"
    return story


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
    kept = _train_rows(train, pool.y, cfg)
    if len(kept) < MIN_TRAIN_EXAMPLES:
        raise DataError(f"dataset '{cfg.name}': the train split has {len(kept)} example(s) "
                        f"({_split_story(n, len(held), len(train), cfg)}); at least {MIN_TRAIN_EXAMPLES} are needed "
                        "to fit the ex-post GMM at the end of training")
    train = kept
    return Dataset(
        cfg.name, pool.x[train], pool.x[held], _take(pool.y, train), _take(pool.y, held),
        _take(pool.factors, train), _take(pool.factors, held), pool.factor_names, pool.class_names, pool.note,
    )


def _stamp(cfg: DataConfig) -> tuple | None:
    """Identity of the user file (resolved path, mtime, size), so an edited .npz is reloaded."""
    if cfg.name != "npz" or not cfg.path:
        return None
    try:
        path = Path(cfg.path).expanduser().resolve()
        st = path.stat()
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, ~nouser, a NUL: the loader says which
        return None
    return (str(path), st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None


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
