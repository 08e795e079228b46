"""Bounded, safe reading of data files: the memory limit, regular files only, rows in chunks.

What a file would take in memory (decompressed, and as float32) is read from its headers by the
format readers (`idx.py`, `npz.py`) and checked here with `check_budget` against `max_data_bytes()`
(2 GB, or `$VAEVIZ_MAX_DATA_BYTES`) before anything is allocated. Paths that are not readable regular
files (directories, fifos, devices, symlink loops) are refused by `open_regular` before they are
opened for reading, so a fifo or a device is never read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vaeviz.data.dataset import DataError

DEFAULT_MAX_DATA_BYTES = 2_000_000_000  # what one loaded file may take in memory, unless $VAEVIZ_MAX_DATA_BYTES
CHUNK_BYTES = 1 << 25  # rows converted or decompressed at a time


def bytes_limit(variable: str, default: int) -> int:
    """A size limit in bytes from the environment variable `variable` (default when unset); ValueError
    with a one-line message when it is not a positive whole number."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        limit = int(raw) if len(raw) <= 30 else -1
    except ValueError:
        limit = -1
    if limit <= 0:
        raise ValueError(f"{variable}={raw[:40]!r} is not a positive whole number of bytes")
    return limit


def max_data_bytes() -> int:
    """The most bytes one loaded file may take in memory: $VAEVIZ_MAX_DATA_BYTES, default 2 GB."""
    try:
        return bytes_limit("VAEVIZ_MAX_DATA_BYTES", DEFAULT_MAX_DATA_BYTES)
    except ValueError as exc:
        raise DataError(str(exc)) from None


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


def row_chunks(x: np.ndarray):
    """Slices of rows of x of about CHUNK_BYTES each."""
    step = max(1, CHUNK_BYTES // max(1, x[:1].nbytes))
    return (slice(i, i + step) for i in range(0, len(x), step))


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


def user_path(path, kind: str) -> Path:
    """`path` with ~ expanded; DataError for a ~user that does not exist."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise DataError(f"{kind} path {path} names an unknown home directory") from None


def open_data_file(path: Path, kind: str) -> BinaryIO:
    """open_regular, with the problem as a DataError naming the file ('npz file X does not exist')."""
    try:
        return open_regular(path)
    except UnreadableFile as e:
        raise DataError(f"{kind} {'path' if e.not_a_file else 'file'} {path} {e}") from None
