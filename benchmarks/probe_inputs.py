"""Probe vaeviz with hostile inputs: .npz and IDX files, configs, and the real `vaeviz train` program.

    python benchmarks/probe_inputs.py

Builds its own cases in a temporary folder (nothing is downloaded; VAEVIZ_HOME and VAEVIZ_DATA_DIR
point into it) and runs each:

- npz (>= 60) and IDX (>= 30) files: valid ones, wrong dtypes/shapes/keys, NaN, truncated and
  corrupted archives, fake headers, zip and gzip bombs with lying headers. Small files load in this
  process; every big refused file loads in its own child process, whose peak RSS (ru_maxrss, via
  wait4) is the figure `peak_rss_refused_mb`.
- configs (>= 300) through the CLI's own pre-run path (`cli.checked_config` / `cli.checked_sweep`:
  --set/--config/--preset parsing, then `preflight`), without spawning a process per case;
- a handful of real `python -m vaeviz train ...` processes on hostile inputs, for exit codes,
  tracebacks and runs left behind;
- the app's cases (`probe_app.py`): hostile run names and error messages on every page, and hostile
  `?run=` / `?step=` values, rendered by the real pages through Streamlit's AppTest.

Prints `name: value` lines: cases per kind, tracebacks (exceptions other than the project's own
errors; must be 0), trainings of files that should be refused (must be 0) and the peak RSS of any
refused file (must stay below 300 MB).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from probe_app import run_app_cases  # noqa: E402

from vaeviz import cli, data  # noqa: E402
from vaeviz.config import ConfigError  # noqa: E402

RSS_LIMIT_MB = 300
CASE_SECONDS = 60  # a case that takes longer counts as a hang


@dataclass
class Case:
    kind: str  # "npz" or "idx"
    name: str
    path: str
    refuse: bool | None  # whether a correct loader must refuse it (None: harmless either way)
    big: bool = False  # load in a child process and measure its peak RSS


# ----------------------------------------------------------------------------- building hostile files


def npy_bytes(shape, descr="<f4", payload=b"", fortran=False, version=(1, 0)) -> bytes:
    """An .npy header for any (true or false) shape, then `payload`."""
    head = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}
    writer = np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0
    writer(head, header)
    return head.getvalue() + payload


def write_zip(path: Path, members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return path


def write_npz(path: Path, compressed=False, **arrays) -> Path:
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def zero_stream_npz(path: Path, shape, descr: str) -> Path:
    """A compressed .npz whose x is all zeros, written 1 MB at a time (never held in memory)."""
    header = npy_bytes(shape, descr)
    total = int(np.prod(shape)) * np.dtype(descr).itemsize
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            f.write(header)
            for start in range(0, total, 1 << 20):
                f.write(bytes(min(1 << 20, total - start)))
    return path


def lie_about_size(blob: bytes, size: int) -> bytes:
    """Patch the uncompressed size of the first member in its local and central headers."""
    out = bytearray(blob)
    local, central = out.find(b"PK\x03\x04"), out.find(b"PK\x01\x02")
    out[local + 22 : local + 26] = struct.pack("<I", size)
    out[central + 24 : central + 28] = struct.pack("<I", size)
    return bytes(out)


def corrupt(blob: bytes, how: str, at: float) -> bytes:
    i = int(len(blob) * at)
    if how == "truncate":
        return blob[:i]
    if how == "flip":
        return blob[:i] + bytes([blob[i] ^ 0xFF]) + blob[i + 1 :]
    return blob + b"\x00garbage" * 20


def valid_npz_cases(folder: Path) -> list[Case]:
    rng = np.random.default_rng(0)
    arrays = {
        "uint8_images": dict(x=rng.integers(0, 256, (12, 5, 5), dtype=np.uint8)),
        "float32_vectors": dict(x=rng.random((12, 16), dtype=np.float32)),
        "float16": dict(x=rng.random((12, 6)).astype(np.float16)),
        "bool": dict(x=rng.random((12, 6)) > 0.5),
        "nchw_with_int_labels": dict(x=rng.random((12, 2, 4, 4)), y=np.arange(12) % 3),
        "string_labels": dict(x=rng.random((12, 4)), y=np.array(list("abcabcabcabc"))),
        "big_endian": dict(x=rng.random((12, 4)).astype(">f8")),
        "fortran_order": dict(x=np.asfortranarray(rng.random((12, 4)))),
        "three_examples": dict(x=rng.random((3, 4))),
        "extra_members": dict(x=rng.random((12, 4)), notes=np.zeros(3)),
    }
    cases = [Case("npz", n, str(write_npz(folder / f"{n}.npz", **a)), False) for n, a in arrays.items()]
    for method, label in ((zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "lzma")):
        blob = npy_bytes((12, 4), "<f8", rng.random((12, 4)).tobytes())
        cases.append(Case("npz", label, str(write_zip(folder / f"{label}.npz", {"x.npy": blob}, method)), False))
    return cases


def bad_content_npz_cases(folder: Path) -> list[Case]:
    x = np.full((12, 4), 0.5)
    arrays = {
        "nan": dict(x=np.where(np.eye(12, 4) > 0, np.nan, x)), "inf": dict(x=x + np.inf),
        "negative_float": dict(x=x - 1), "above_one": dict(x=x + 1), "int_300": dict(x=np.full((12, 4), 300)),
        "negative_int": dict(x=np.full((12, 4), -1)), "complex": dict(x=x.astype(complex)),
        "object": dict(x=np.array([[0.1, None]] * 12, dtype=object)), "datetime": dict(x=np.zeros((12, 4), "M8[s]")),
        "unicode_x": dict(x=np.full((12, 4), "a")), "structured": dict(x=np.zeros(12, "f4,f4")),
        "zero_d": dict(x=np.float64(0.5)), "one_d": dict(x=np.zeros(12)), "five_d": dict(x=np.zeros((12, 1, 1, 1, 1))),
        "empty_feature": dict(x=np.zeros((12, 0))), "no_rows": dict(x=np.zeros((0, 4))), "one_row": dict(x=x[:1]),
        "two_rows": dict(x=x[:2]), "y_short": dict(x=x, y=np.arange(11)), "y_2d": dict(x=x, y=np.zeros((12, 2))),
        "y_fraction": dict(x=x, y=np.full(12, 0.5)), "y_nan": dict(x=x, y=np.full(12, np.nan)),
        "y_complex": dict(x=x, y=np.zeros(12, complex)), "y_object": dict(x=x, y=np.array([None] * 12)),
        "no_x": dict(images=x), "capital_x": dict(X=x), "only_y": dict(y=np.arange(12)),
    }
    cases = [Case("npz", n, str(write_npz(folder / f"{n}.npz", **a)), True) for n, a in arrays.items()]
    return cases


def bad_archive_npz_cases(folder: Path) -> list[Case]:
    good = io.BytesIO()
    np.savez_compressed(good, x=np.random.default_rng(1).random((50, 8)), y=np.arange(50) % 5)
    blob = good.getvalue()
    files = {f"truncate_{at}": corrupt(blob, "truncate", at) for at in (0.02, 0.3, 0.6, 0.97)}
    files["empty_file"] = b""
    files["text"] = b"x,y\n0.1,1\n"
    files["bare_npy"] = npy_bytes((12, 4), "<f8", bytes(12 * 4 * 8))
    files["pickle"] = pickle.dumps({"x": np.zeros((12, 4))})
    files["zip_magic_only"] = b"PK\x03\x04" + bytes(100)
    # intact data behind a flipped byte, trailing garbage or an overstated member size may load: harmless
    either = {f"flip_{at}": corrupt(blob, "flip", at) for at in (0.02, 0.3, 0.6, 0.97)}
    either.update(appended_garbage=corrupt(blob, "append", 0), overstated_member_size=lie_about_size(blob, 10**9))
    cases = []
    for name, content in {**files, **either}.items():
        (folder / f"{name}.npz").write_bytes(content)
        cases.append(Case("npz", name, str(folder / f"{name}.npz"), True if name in files else None))
    members = {
        "empty_zip": {}, "raw_x_member": {"x": b"not an npy"},
        "header_version_9": {"x.npy": b"\x93NUMPY\x09\x00" + bytes(64)},
        "header_too_long": {"x.npy": b"\x93NUMPY\x01\x00\xff\xff" + b" " * 65535},
        "negative_dim": {"x.npy": npy_bytes((12, -4), "<f4", bytes(64))},
        "short_data": {"x.npy": npy_bytes((1000, 10), "<f4", bytes(10))},
        "fake_terabyte": {"x.npy": npy_bytes((10**12, 784), "<f4", bytes(64))},
        "fake_2_40_rows": {"x.npy": npy_bytes((2**40,), "<u1", bytes(64))},
        "object_header": {"x.npy": npy_bytes((12, 4), "|O", bytes(64))},
        "zero_rows_huge_columns": {"x.npy": npy_bytes((0, 2**62), "<f4")},
        "duplicate_x": {"x.npy": npy_bytes((12, 4), "<f8", bytes(384)), "x": b"shadow"},
    }
    for name, content in members.items():
        cases.append(Case("npz", name, str(write_zip(folder / f"{name}.npz", content)), True))
    return cases


def special_path_cases(folder: Path, kind: str, ext: str) -> list[Case]:
    """Paths that are no readable regular file: a symlink loop, a fifo, a directory, a device, ..."""
    loop_a, loop_b, fifo = folder / f"loop_a.{ext}", folder / f"loop_b.{ext}", folder / f"fifo.{ext}"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    os.mkfifo(fifo)
    dangling = folder / f"dangling.{ext}"
    dangling.symlink_to(folder / "nowhere")
    paths = {"symlink_loop": loop_a, "fifo": fifo, "directory": folder, "dev_zero": "/dev/zero",
             "missing": folder / f"missing.{ext}", "dangling_link": dangling, "nul_in_path": f"{folder}/a\x00b"}
    return [Case(kind, name, str(p), True) for name, p in paths.items()]


def big_npz_cases(folder: Path) -> list[Case]:
    """Files that would take gigabytes; each loads in its own process."""
    bomb = zero_stream_npz(folder / "bool_bomb.npz", (700_000, 784), "|b1")  # 549 MB stored, 2.2 GB as float32
    declared = folder / "declared_3gb.npz"
    write_zip(declared, {"x.npy": npy_bytes((1_000_000, 784), "<f4", bytes(4096))})
    lying = io.BytesIO()
    with zipfile.ZipFile(lying, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", npy_bytes((600_000, 784), "<f4", bytes(4096)))  # 1.9 GB declared, 4 kB held
    (folder / "lying_1_9gb.npz").write_bytes(lie_about_size(lying.getvalue(), 600_000 * 784 * 4 + 128))
    many = folder / "many_members.npz"
    with zipfile.ZipFile(many, "w") as z:
        z.writestr("x.npy", npy_bytes((12, 4), "<f8", bytes(384)))
        for i in range(30_000):
            z.writestr(f"{i:0100d}", b"")
    paths = {"bool_zeros_2_2gb_as_float32": bomb, "declared_3gb_holds_4kb": declared,
             "zip_sizes_lie_1_9gb": folder / "lying_1_9gb.npz", "fake_terabyte_header": folder / "fake_terabyte.npz",
             "zip_directory_30000_entries": many}
    return [Case("npz", name, str(p), True, big=True) for name, p in paths.items()]


def npz_cases(folder: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    cases = valid_npz_cases(folder) + bad_content_npz_cases(folder) + bad_archive_npz_cases(folder)
    return cases + special_path_cases(folder, "npz", "npz") + big_npz_cases(folder)


def write_gz(path: Path, header: bytes, payload: bytes = b"", zeros: int = 0, level: int = 1) -> Path:
    with gzip.open(path, "wb", compresslevel=level) as f:
        f.write(header + payload)
        for start in range(0, zeros, 1 << 20):
            f.write(bytes(min(1 << 20, zeros - start)))
    return path


def idx_header(type_code: int, dims, magic_hi: int = 0) -> bytes:
    return struct.pack(">HBB", magic_hi, type_code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def idx_cases(folder: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    ok = {"uint8_images": (8, (5, 4, 4), 1), "labels": (8, (5,), 1), "int16": (0x0B, (5, 3), 2),
          "int32": (0x0C, (4, 2), 4), "float32": (0x0D, (3, 3), 4), "float64": (0x0E, (2, 2), 8),
          "int8": (0x09, (4,), 1), "zero_rows": (8, (0, 28, 28), 1)}
    cases = []
    for name, (code, dims, size) in ok.items():
        payload = bytes(int(np.prod(dims)) * size)
        cases.append(Case("idx", name, str(write_gz(folder / f"{name}.gz", idx_header(code, dims), payload)), False))
    multi = folder / "multi_member.gz"
    multi.write_bytes(gzip.compress(idx_header(8, (4,))) + gzip.compress(bytes(4)))
    cases.append(Case("idx", "multi_member_gzip", str(multi), False))
    bad = {
        "wrong_magic": idx_header(8, (5,), magic_hi=0x1234) + bytes(5), "bad_type": idx_header(0x07, (5,)) + bytes(5),
        "rank_zero": idx_header(8, ()), "rank_255_short": struct.pack(">HBB", 0, 8, 255) + bytes(12),
        "short_by_one": idx_header(8, (5, 2)) + bytes(9), "long_by_one": idx_header(8, (5, 2)) + bytes(11),
        "header_only": idx_header(8, (5, 2)), "three_bytes": b"\x00\x00\x08",
        "zero_and_huge_dims": idx_header(8, (0, 2**31, 2**31, 2**31)),
        "huge_honest_header": idx_header(8, (4_000_000_000, 28, 28)) + bytes(64),
        "max_dims": idx_header(0x0E, (2**32 - 1,) * 4) + bytes(64),
    }
    cases += [Case("idx", n, str(write_gz(folder / f"{n}.gz", h)), True) for n, h in bad.items()]
    raw = {"not_gzip": b"hello, not gzip", "plain_idx": idx_header(8, (5,)) + bytes(5), "empty": b"",
           "truncated_gzip": gzip.compress(idx_header(8, (500,)) + bytes(500))[:-12],
           "bad_crc": gzip.compress(idx_header(8, (5,)) + bytes(5))[:-8] + b"\xff" * 8,
           "trailing_garbage": gzip.compress(idx_header(8, (5,)) + bytes(5)) + b"garbage"}
    for name, blob in raw.items():
        (folder / f"{name}.gz").write_bytes(blob)
        cases.append(Case("idx", name, str(folder / f"{name}.gz"), True))
    cases += special_path_cases(folder, "idx", "gz")
    return cases + big_idx_cases(folder)


def big_idx_cases(folder: Path) -> list[Case]:
    """Gzip bombs: a lying header over 300 MB (and 1 GB) of zeros, an honest header above the limit."""
    files = {
        "bomb_300mb_header_says_10": write_gz(folder / "bomb300.gz", idx_header(8, (10, 28, 28)), zeros=300_000_000),
        "bomb_1gb_header_says_1000": write_gz(folder / "bomb1g.gz", idx_header(8, (1000, 28, 28)),
                                              zeros=1_000_000_000),
        "honest_3_7gb_header": write_gz(folder / "honest.gz", idx_header(8, (1_200_000, 28, 28)), zeros=10_000_000),
        "bomb_labels_header_says_5": write_gz(folder / "labels_bomb.gz", idx_header(8, (5,)), zeros=200_000_000),
    }
    return [Case("idx", name, str(p), True, big=True) for name, p in files.items()]


# ----------------------------------------------------------------------------- running file cases

CHILD = """
import json, resource, sys
from vaeviz import data
kind, path = sys.argv[1], sys.argv[2]
try:
    data.load_npz(path) if kind == "npz" else data.read_idx(path)
    outcome = "accepted"
except data.DataError:
    outcome = "refused"
except BaseException as e:
    outcome = "traceback " + type(e).__name__ + ": " + str(e)[:200]
try:  # this program's own peak: ru_maxrss would also count the parent's pages at fork time
    hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
except OSError:
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps([outcome, hwm / 1024]))
"""


def _timeout(signum, frame):
    raise TimeoutError(f"case took more than {CASE_SECONDS} s")


def load_here(case: Case) -> str:
    """Load a small case in this process: 'accepted', 'refused' or 'traceback <type>: <message>'."""
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(CASE_SECONDS)
    try:
        data.load_npz(case.path) if case.kind == "npz" else data.read_idx(case.path)
        return "accepted"
    except data.DataError:
        return "refused"
    except BaseException as e:  # noqa: BLE001 - the probe counts whatever escapes
        return f"traceback {type(e).__name__}: {str(e)[:200]}"
    finally:
        signal.alarm(0)


def load_in_child(case: Case) -> tuple[str, float]:
    """Load a case in a fresh process; its outcome and its peak RSS in MB (the child's VmHWM, which counts
    the whole program: interpreter, numpy and the load)."""
    res = subprocess.run([sys.executable, "-c", CHILD, case.kind, case.path], capture_output=True, text=True,
                         cwd=REPO, env=os.environ, timeout=300)
    try:
        outcome, rss = json.loads(res.stdout.splitlines()[-1])
    except (ValueError, IndexError):
        outcome, rss = f"traceback (child exit {res.returncode}): {res.stderr[-300:]}", 0.0
    return outcome, rss


def run_file_cases(cases: list[Case], stats: dict) -> None:
    for case in cases:
        if case.big:
            outcome, rss = load_in_child(case)
            if outcome == "refused" and rss > stats["peak_rss_refused_mb"]:
                stats["peak_rss_refused_mb"], stats["peak_rss_refused_case"] = rss, f"{case.kind}:{case.name}"
            stats["big_refused_files_measured"] += outcome == "refused"
        else:
            outcome = load_here(case)
        stats[f"{case.kind}_{outcome.split()[0]}"] = stats.get(f"{case.kind}_{outcome.split()[0]}", 0) + 1
        if outcome.startswith("traceback"):
            stats["tracebacks"] += 1
            print(f"  traceback in {case.kind} case {case.name}: {outcome}", file=sys.stderr)
        if case.refuse and outcome == "accepted":
            stats["trainings_of_refused_files"] += 1
            print(f"  accepted a file that should be refused: {case.kind} {case.name}", file=sys.stderr)
        if case.refuse is False and outcome != "accepted":
            stats["valid_files_refused"] += 1
            print(f"  refused a valid file: {case.kind} {case.name}: {outcome}", file=sys.stderr)


# ----------------------------------------------------------------------------- configs through the CLI's pre-run path

HOSTILE_VALUES = ["1e400", "-1e400", "inf", "-inf", "nan", "2.5e0", "2.5", "1e13", "4294967296", "-1", "0", "True",
                  "9" * 5000, "0x10", "", "1e-400", "٣", "none", "[]", "\x00", "ü" * 1000, "8,8,8", "1e3"]
KEYS = ["train.seed", "train.steps", "train.eval_every", "train.batch_size", "train.lr", "train.probe_size",
        "train.threads", "train.checkpoint_every", "train.device", "data.size", "data.n", "data.per_class", "data.k",
        "data.seed", "data.eval_fraction", "data.noise", "data.path", "model.latent_dim", "model.hidden",
        "objective.name"]
BASE = ["--set", "train.steps=5", "--set", "model.hidden=16", "--set", "train.probe_size=10"]


def config_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    contents = [b"5", b'"abc"', b"[]", b"null", b'{"train": 5}', b'{"train": {"steps": "1e400"}}',
                b'{"train": {"steps": 1e400}}', b'{"train": {"seed": 1e13}}', b'{"train": {"steps": true}}',
                b"\xff\xfe\x00\x01", b"[" * 200_000, b"9" * 5000, b" " * (2 << 20), b'{"model": {"hidden": [1e9]}}',
                b'{"name": {"a": 1}}', b'{"objective": {"name": ["vae"]}}', b'{"data": {"name": "npz"}}']
    paths = []
    for i, content in enumerate(contents):
        (folder / f"c{i}.json").write_bytes(content)
        paths.append(folder / f"c{i}.json")
    return paths + [folder, folder / "missing.json", Path("/dev/zero")]


def config_cases(folder: Path) -> list[list[str]]:
    """argv lists of `vaeviz train` / `vaeviz sweep`: every hostile value for every key, then files and presets."""
    cases = []
    for key in KEYS:
        context = ["--set", "data.name=gaussian_mixture"] if key in ("data.size", "data.k", "data.noise") else []
        context = ["--set", "data.name=npz"] if key == "data.path" else context
        cases += [["train", *BASE, *context, "--set", f"{key}={v}"] for v in HOSTILE_VALUES]
    cases += [["train", "--config", str(p)] for p in config_files(folder)]
    cases += [["train", "--preset", p] for p in ("nope", "", "vae-digits\x00", "geco-digits")]
    cases += [["sweep", *BASE, "--vary", v] for v in ("train.seed=1e400,1", "=", "x", "train.seed=,",
                                                        "train.seed=" + ",".join(map(str, range(300))),
                                                        "name=a,b", "objective.name=vae,nope")]
    return cases


def run_config_cases(cases: list[list[str]], stats: dict) -> None:
    parser = cli.build_parser()
    clean = (cli.UserError, ConfigError, data.DataError)
    for argv in cases:
        try:
            args = parser.parse_args(argv)
            (cli.checked_sweep if args.command == "sweep" else cli.checked_config)(args)
            stats["config_accepted"] += 1
        except (SystemExit, *clean):
            stats["config_refused"] += 1
        except BaseException as e:  # noqa: BLE001 - the probe counts whatever escapes
            stats["tracebacks"] += 1
            print(f"  traceback for {[a[:40] for a in argv]}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
            traceback.print_exc(limit=3)


# ----------------------------------------------------------------------------- the real program


def cli_cases(npz_dir: Path, idx_dir: Path) -> list[list[str]]:
    train = ["train", "--set", "train.steps=5", "--set", "model.hidden=16"]
    return [
        [*train, "--set", "data.name=npz", "--set", f"data.path={npz_dir / 'bool_bomb.npz'}"],
        [*train, "--set", "data.name=npz", "--set", f"data.path={npz_dir / 'fake_terabyte.npz'}"],
        [*train, "--set", "data.name=npz", "--set", f"data.path={npz_dir / 'two_rows.npz'}"],
        [*train, "--set", "data.name=mnist", "--set", "data.n=5"],  # the data folder holds a gzip bomb
        [*train, "--set", "train.seed=1e400"],
        [*train, "--set", "train.device=cuda"] if not _has_cuda() else [*train, "--set", "train.device=mps"],
        ["train", "--config", str(npz_dir.parent / "configs" / "c10.json")],  # 200,000 nested brackets
    ]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_cli_cases(cases: list[list[str]], stats: dict) -> None:
    from vaeviz.runs import RunStore

    for argv in cases:
        before = len(RunStore().list_runs())
        res = subprocess.run([sys.executable, "-m", "vaeviz", *argv], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
        created = len(RunStore().list_runs()) - before
        lines = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
        if "Traceback" in res.stderr + res.stdout:
            stats["tracebacks"] += 1
            print(f"  traceback from `vaeviz {' '.join(argv)[:120]}`:\n{res.stderr[-1500:]}", file=sys.stderr)
        if res.returncode != 2 or created or len(lines) != 1:
            stats["cli_unexpected"] += 1
            print(f"  `vaeviz {' '.join(argv)[:120]}`: exit {res.returncode}, {created} run(s), {res.stderr[-300:]}",
                  file=sys.stderr)
        stats["trainings_of_refused_files"] += created


def mnist_bomb_folder(root: Path) -> None:
    """$VAEVIZ_DATA_DIR/mnist with the t10k pair, whose images are a 300 MB gzip bomb behind a 10-image header."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    os.link(root.parent / "idx" / "bomb300.gz", folder / "t10k-images-idx3-ubyte.gz")
    write_gz(folder / "t10k-labels-idx1-ubyte.gz", struct.pack(">II", 0x801, 10), bytes(10))


# ----------------------------------------------------------------------------- main


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="vaeviz-probe-") as tmp:
        root = Path(tmp)
        os.environ.update(VAEVIZ_HOME=str(root / "home"), VAEVIZ_DATA_DIR=str(root / "data"), VAEVIZ_OFFLINE="1")
        os.environ.pop("VAEVIZ_MAX_DATA_BYTES", None)
        stats = {"tracebacks": 0, "trainings_of_refused_files": 0, "valid_files_refused": 0, "cli_unexpected": 0,
                 "peak_rss_refused_mb": 0.0, "peak_rss_refused_case": "-", "big_refused_files_measured": 0,
                 "config_accepted": 0, "config_refused": 0}
        files = npz_cases(root / "npz") + idx_cases(root / "idx")
        mnist_bomb_folder(root / "data")
        configs = config_cases(root / "configs")
        programs = cli_cases(root / "npz", root / "idx")
        run_file_cases(files, stats)
        run_config_cases(configs, stats)
        run_cli_cases(programs, stats)
        apps = run_app_cases(root / "apphome", stats)
        counts = {"npz_cases": sum(c.kind == "npz" for c in files), "idx_cases": sum(c.kind == "idx" for c in files),
                  "config_cases": len(configs), "app_cases": apps, "cli_subprocess_cases": len(programs)}
        for name, value in {**counts, **stats}.items():
            print(f"{name}: {value:.1f}" if isinstance(value, float) else f"{name}: {value}")
        ok = (stats["tracebacks"] == 0 and stats["trainings_of_refused_files"] == 0 and stats["cli_unexpected"] == 0
              and stats["app_unescaped"] == 0
              and stats["valid_files_refused"] == 0 and stats["peak_rss_refused_mb"] < RSS_LIMIT_MB)
        print(f"ok: {ok}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
