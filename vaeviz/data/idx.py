"""MNIST and Fashion-MNIST from their IDX files: bounded reading, lookup in the data folder, MD5-checked download.

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): a big-endian header of two zero bytes, a type
code (0x08 uint8 ... 0x0E float64) and the rank, then one uint32 per dimension, then the data, row-major.
The files are gzipped. `read_idx` checks the gzip stream, the magic number, the size the header
declares (against the memory limit of `files.py`, before decompressing the data) and the length, and
decompresses incrementally, never beyond what the header declares.

A dataset is looked up in `$VAEVIZ_DATA_DIR/<name>/` (and the other folders of its `IdxSource`), then
in the data folder itself; when its four files are missing it is downloaded from the first reachable
mirror whose copy has the official MD5. Offline, the two t10k (or train) files alone make a pool that
is split like any other; with no file at all the error names the missing files and the folder.
"""

from __future__ import annotations

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
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaeviz.config import DataConfig
from vaeviz.data import files
from vaeviz.data.dataset import DataError, Pool
from vaeviz.data.files import check_budget, open_data_file

log = logging.getLogger(__name__)

NET_TIMEOUT = 5.0  # seconds, for the reachability check and each download
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # uint8, 3 dims / uint8, 1 dim


def read_idx(path, magic: int | None = None) -> np.ndarray:
    """Read a gzipped IDX file into an array; check the gzip stream, the magic number, the size its
    header declares (against `max_data_bytes()`, before decompressing the data) and the length."""
    path = Path(path)
    with open_data_file(path, "IDX") as raw_file:
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
        n = f.readinto(view[got : got + files.CHUNK_BYTES])
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


def idx_loader(src: IdxSource):
    """A registry loader: the pool of `src` from the data folder `root` (downloaded when missing)."""

    def load(cfg: DataConfig, root: Path) -> Pool:
        return _load_idx(src, root)

    return load


