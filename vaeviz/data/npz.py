"""A user's own data as an `.npz` (np.savez): `x` (N, D), (N, H, W) or (N, C, H, W), optional labels `y`.

The archive is read defensively, as it may come from anyone: the zip directory must be small, each
member's .npy header (NumPy format 1.0/2.0: magic, version, a dict of dtype, order and shape) is read
before its data and checked against the memory limit of `files.py` and against the member's stored
size; Python objects are refused (no pickle). `x` becomes float32 in [0, 1] (integer pixels 0..255 are
scaled by 1/255, floats must already lie in [0, 1]), a chunk of rows at a time; `y` (integers or
strings) becomes int64 codes 0..K-1 with the original values as class names.
"""

from __future__ import annotations

import lzma
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vaeviz.config import DataConfig
from vaeviz.data.dataset import MIN_TRAIN_EXAMPLES, DataError, Pool
from vaeviz.data.files import check_budget, format_bytes, open_data_file, row_chunks, user_path

MIN_POOL = 1 + MIN_TRAIN_EXAMPLES  # one eval example and the train minimum
MAX_ZIP_DIRECTORY = 1 << 20  # bytes of an .npz's zip directory (np.savez writes ~100 per array)
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, RuntimeError,
               NotImplementedError, struct.error, OverflowError)  # what zipfile and numpy raise on a bad file


def _x_stats(x: np.ndarray) -> tuple[int, float, float]:
    """(non-finite count, min, max) of x, computed a chunk of rows at a time (no array-sized temporaries)."""
    bad, lo, hi = 0, math.inf, -math.inf
    for rows in row_chunks(x):
        part = x[rows]
        if part.dtype.kind == "f":
            bad += int(part.size - np.count_nonzero(np.isfinite(part)))
        if not bad:  # with a bad value the range is not reported
            lo, hi = min(lo, part.min().item()), max(hi, part.max().item())
    return bad, lo, hi


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
    for rows in row_chunks(x):
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
    path = user_path(path, "npz")
    with open_data_file(path, "npz") as f:
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


def load_user_npz(cfg: DataConfig, root: Path) -> Pool:
    x, y, names = _read_npz(cfg.path)
    return Pool(x, y, class_names=names)


