"""Dataset registry: shapes, ranges, determinism, micro subsets, shapes factors, IDX/npz validation, MNIST."""

from __future__ import annotations

import gzip
import hashlib
import math
import struct

import numpy as np
import pytest

from vaeviz import data
from vaeviz.config import DataConfig
from vaeviz.data import DataError, load_dataset

TOY = ["gaussian_mixture", "lines", "circles", "moons", "pinwheel"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test touches the network; every test starts from an empty dataset cache."""
    monkeypatch.setenv("VAEVIZ_OFFLINE", "1")
    data.clear_cache()
    yield
    data.clear_cache()


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


def write_idx(path, array: np.ndarray, magic: int | None = None) -> None:
    """Write a gzipped uint8 IDX file (magic 0x0000 08 rank unless given)."""
    magic = (0x08 << 8 | array.ndim) if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_part(folder, part: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images, labels = rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10
    write_idx(folder / f"{part}-images-idx3-ubyte.gz", images)
    write_idx(folder / f"{part}-labels-idx1-ubyte.gz", labels)
    return images, labels


# ----------------------------------------------------------------------------- registry and built-ins


def test_registry_and_descriptions():
    expected = {*TOY, "digits", "shapes", "mnist", "fashion_mnist", "npz"}
    assert set(data.DATASETS) == expected
    described = dict(data.describe_datasets())
    assert set(described) == expected and all(len(d) > 10 for d in described.values())


def test_unknown_name_lists_known_ones():
    with pytest.raises(DataError, match="unknown dataset 'nope'") as e:
        load_dataset(cfg(name="nope"))
    assert "gaussian_mixture" in str(e.value) and "fashion_mnist" in str(e.value)


@pytest.mark.parametrize("name", TOY)
def test_toy_shapes_dtypes_ranges(name):
    ds = load_dataset(cfg(name=name))
    assert ds.x_train.shape == (4000, 2) and ds.x_eval.shape == (1000, 2)  # default 5000, eval 0.2
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    x = np.concatenate([ds.x_train, ds.x_eval])
    assert x.min() >= 0 and x.max() <= 1
    assert x.max(0).max() == pytest.approx(1.0) and x.min(0).min() == pytest.approx(0.0)  # longest axis spans [0, 1]
    assert ds.shape == (2,) and ds.dim == 2 and not ds.is_image
    y = np.concatenate([ds.y_train, ds.y_eval])
    assert sorted(np.unique(y)) == list(range(ds.n_classes)) and ds.n_classes == len(ds.class_names)
    assert np.bincount(y).min() > 5000 / ds.n_classes * 0.8  # classes roughly balanced


def test_gaussian_mixture_ring_geometry():
    ds = load_dataset(cfg(name="gaussian_mixture", k=8, noise=0.05, size=8000))
    x, y = ds.x_train, ds.y_train
    means = np.stack([x[y == c].mean(0) for c in range(8)])
    radii = np.linalg.norm(means - means.mean(0), axis=1)
    assert radii.std() / radii.mean() < 0.02  # modes on a circle
    stds = np.stack([x[y == c].std(0) for c in range(8)])
    assert stds.mean() / radii.mean() == pytest.approx(0.05, rel=0.1)  # noise relative to the ring radius 1
    angles = np.sort(np.arctan2(*(means - means.mean(0)).T[::-1]))
    assert np.diff(angles) == pytest.approx(np.full(7, 2 * np.pi / 8), abs=0.02)


def test_gaussian_mixture_grid_and_circles():
    grid = load_dataset(cfg(name="gaussian_mixture", k=9, layout="grid", noise=0.02))
    means = np.stack([grid.x_train[grid.y_train == c].mean(0) for c in range(9)])
    assert len(np.unique(means[:, 0].round(2))) == 3 and len(np.unique(means[:, 1].round(2))) == 3
    ring = load_dataset(cfg(name="circles", noise=0.0))
    r = np.linalg.norm(ring.x_train - 0.5, axis=1)
    assert r[ring.y_train == 0] == pytest.approx(0.5, abs=1e-5)  # outer circle touches the unit box
    assert r[ring.y_train == 1] == pytest.approx(0.25, abs=1e-5)  # inner radius half of the outer


def test_digits():
    ds = load_dataset(cfg(name="digits"))
    assert ds.x_eval.shape == (359, 1, 8, 8) and ds.x_train.shape == (1438, 1, 8, 8)  # 1797 in all
    assert ds.dim == 64 and ds.is_image and ds.n_classes == 10
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0  # 16 / 16
    assert set(np.unique(ds.x_train * 16)) <= set(range(17))  # exactly the 17 grey levels


def test_eval_fraction_and_size():
    ds = load_dataset(cfg(name="moons", size=100, eval_fraction=0.5))
    assert len(ds.x_train) == 50 and len(ds.x_eval) == 50


# ----------------------------------------------------------------------------- determinism and cache


@pytest.mark.parametrize("name", ["pinwheel", "shapes"])
def test_procedural_determinism(name):
    a = load_dataset(cfg(name=name, seed=3, size=500))
    data.clear_cache()
    b = load_dataset(cfg(name=name, seed=3, size=500))
    c = load_dataset(cfg(name=name, seed=4, size=500))
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_eval, b.y_eval)
    assert not np.array_equal(a.x_train, c.x_train)


def test_split_depends_on_seed_and_is_a_partition():
    a, b = load_dataset(cfg(name="digits", seed=0)), load_dataset(cfg(name="digits", seed=1))
    assert not np.array_equal(a.x_eval, b.x_eval)

    def rows(d):
        return sorted(r.tobytes() for r in np.concatenate([d.x_train, d.x_eval]))

    assert rows(a) == rows(b)  # both seeds split the same 1,797 images


def test_cache_returns_fresh_copies():
    a = load_dataset(cfg(name="lines"))
    a.x_train[:] = -1
    a.class_names.append("junk")
    b = load_dataset(cfg(name="lines"))
    assert b.x_train.min() >= 0 and len(b.class_names) == 4
    assert data.registry._load_cached.cache_info().hits == 1


# ----------------------------------------------------------------------------- micro subsets


def test_micro_n_keeps_first_train_rows_and_whole_eval():
    full, micro = load_dataset(cfg(name="digits")), load_dataset(cfg(name="digits", n=7))
    assert micro.x_train.shape == (7, 1, 8, 8) and len(micro.y_train) == 7
    assert np.array_equal(micro.x_train, full.x_train[:7])  # first 7 after the permutation
    assert np.array_equal(micro.x_eval, full.x_eval)


def test_micro_per_class():
    ds = load_dataset(cfg(name="digits", per_class=3))
    assert np.array_equal(np.bincount(ds.y_train), np.full(10, 3)) and len(ds.x_eval) == 359
    both = load_dataset(cfg(name="digits", per_class=3, n=7))
    assert len(both.x_train) == 7


def test_per_class_needs_labels(tmp_path):
    np.savez(tmp_path / "u.npz", x=np.zeros((10, 4), np.float32))
    with pytest.raises(DataError, match="per_class needs labels"):
        load_dataset(cfg(name="npz", path=str(tmp_path / "u.npz"), per_class=2))


# ----------------------------------------------------------------------------- shapes


def test_shapes_default_size_and_factors():
    ds = load_dataset(cfg(name="shapes"))
    assert ds.x_train.shape == (8000, 1, 32, 32) and ds.x_eval.shape == (2000, 1, 32, 32)
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert ds.factor_names == ["shape", "scale", "rotation", "x", "y"]
    assert ds.class_names == ["square", "ellipse", "triangle"]
    f = np.concatenate([ds.factors_train, ds.factors_eval])
    assert f.shape == (10_000, 5) and f.dtype == np.float32
    for j, (lo, hi) in enumerate(data.SHAPES_FACTOR_RANGES.values()):
        assert lo <= f[:, j].min() and f[:, j].max() <= hi
        assert f[:, j].max() - f[:, j].min() > 0.95 * (hi - lo)  # the whole range is covered
    assert np.array_equal(ds.y_train, ds.factors_train[:, 0].astype(np.int64))
    assert np.array_equal(np.unique(f[:, 0]), [0, 1, 2])


@pytest.mark.parametrize("shape, area", [(0, 128.0), (1, math.pi * 8 * 4), (2, 3 * math.sqrt(3) / 4 * 64)])
def test_shape_areas_match_geometry(shape, area):
    """Circumradius 8 px at scale 1: square side 8√2, ellipse axes 8 and 4, equilateral triangle."""
    rot = np.linspace(0, np.pi / 2, 5)
    factors = np.stack([np.full(5, shape), np.ones(5), rot, np.full(5, 0.5), np.full(5, 0.5)], 1)
    sums = data.render_shapes(factors).sum(axis=(1, 2, 3))
    assert sums == pytest.approx(np.full(5, area), rel=0.03)
    half = data.render_shapes(factors * [1, 0.5, 1, 1, 1]).sum(axis=(1, 2, 3))
    assert half == pytest.approx(np.full(5, area / 4), rel=0.06)  # scale halves the size


def test_each_shape_factor_changes_the_image():
    base = np.array([[1, 0.75, 0.3, 0.5, 0.5]], np.float32)
    image = data.render_shapes(base)
    for j, value in enumerate([2, 1.0, 1.2, 0.0, 1.0]):
        changed = base.copy()
        changed[0, j] = value
        assert np.abs(data.render_shapes(changed) - image).mean() > 0.01, f"factor {j}"
    cols = np.arange(32)
    left, right = (data.render_shapes(base * [1, 1, 1, 0, 1] + [0, 0, 0, x, 0])[0, 0] for x in (0.0, 1.0))
    shift = (right.sum(0) @ cols) / right.sum() - (left.sum(0) @ cols) / left.sum()
    assert shift == pytest.approx(14.0, abs=0.3)  # x in [0, 1] spans 32 - 1 - 2·8.5 columns


# ----------------------------------------------------------------------------- IDX files


def test_read_idx_round_trip(tmp_path):
    array = np.arange(24).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    out = data.read_idx(tmp_path / "a.gz", data.IMAGES_MAGIC)
    assert out.dtype == np.uint8 and np.array_equal(out, array)


def test_idx_truncated_gzip(tmp_path):
    write_idx(tmp_path / "a.gz", np.zeros((50, 28, 28)))
    blob = (tmp_path / "a.gz").read_bytes()
    (tmp_path / "a.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"a\.gz is truncated or not gzip"):
        data.read_idx(tmp_path / "a.gz")
    (tmp_path / "b.gz").write_bytes(b"plain text, not gzip at all")
    with pytest.raises(DataError, match=r"b\.gz is truncated or not gzip"):
        data.read_idx(tmp_path / "b.gz")


def test_idx_wrong_magic(tmp_path):
    write_idx(tmp_path / "a.gz", np.zeros((2, 3, 4)), magic=0x12340803)
    with pytest.raises(DataError, match=r"a\.gz has a wrong IDX magic number 0x12340803"):
        data.read_idx(tmp_path / "a.gz")
    write_idx(tmp_path / "labels.gz", np.zeros(5))
    with pytest.raises(DataError, match=r"wrong IDX magic number 0x00000801 \(expected 0x00000803\)"):
        data.read_idx(tmp_path / "labels.gz", data.IMAGES_MAGIC)


def test_idx_length_mismatch(tmp_path):
    with gzip.open(tmp_path / "a.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 10, 28, 28) + bytes(100))
    with pytest.raises(DataError, match=r"holds 100 data bytes but its header \(10, 28, 28\) needs 7840"):
        data.read_idx(tmp_path / "a.gz")


def test_idx_count_mismatch(tmp_path):
    folder = tmp_path / "mnist"
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(4))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz has 5 images but .*labels-idx1-ubyte\.gz has 4"):
        load_dataset(cfg(name="mnist"), tmp_path)


def test_idx_official_split_and_fashion_alias(tmp_path):
    images, labels = write_part(tmp_path / "fashion-mnist", "train", 20)
    test_images, test_labels = write_part(tmp_path / "fashion-mnist", "t10k", 6, seed=1)
    ds = load_dataset(cfg(name="fashion_mnist"), tmp_path)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.note is None
    assert np.array_equal(ds.x_eval[:, 0], (test_images / 255).astype(np.float32))  # t10k kept whole, in order
    assert np.array_equal(ds.y_eval, test_labels)
    assert sorted(ds.x_train.sum(axis=(1, 2, 3))) == pytest.approx(sorted(images.sum(axis=(1, 2)) / 255))
    assert ds.class_names[9] == "Ankle boot" and ds.n_classes == 10


def test_mnist_offline_empty_folder_names_files_and_folder(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(cfg(name="mnist"), tmp_path)
    message = str(e.value)
    for name in data.IDX_FILES:
        assert name in message
    assert str(tmp_path / "mnist") in message and "VAEVIZ_OFFLINE" in message and "Put the four" in message


def test_download_verifies_md5(tmp_path, monkeypatch):
    monkeypatch.delenv("VAEVIZ_OFFLINE")
    blobs = {name: name.encode() * 3 for name in data.IDX_FILES}
    good = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}
    src = data.IdxSource("toy", ("toy",), ("http://a.invalid/", "http://b.invalid/"), good, ("0",))
    fetched = []
    monkeypatch.setattr(data.idx, "_reachable", lambda url: True)
    monkeypatch.setattr(data.idx, "_fetch", lambda url: fetched.append(url) or blobs[url.rsplit("/", 1)[1]])
    data.download_idx(src, tmp_path / "toy")
    assert all((tmp_path / "toy" / n).read_bytes() == blobs[n] for n in data.IDX_FILES) and len(fetched) == 4
    bad = dict(good, **{data.IDX_FILES[0]: "0" * 32})
    (tmp_path / "toy" / data.IDX_FILES[0]).unlink()
    with pytest.raises(DataError, match=r"MD5 .* differs from the known 0{32}"):
        data.download_idx(data.IdxSource("toy", ("toy",), src.mirrors, bad, ("0",)), tmp_path / "toy")
    assert not (tmp_path / "toy" / data.IDX_FILES[0]).exists() and len(fetched) == 6  # both mirrors tried


def test_mnist_real_test_set(data_dir):
    ds = load_dataset(cfg(name="mnist"), data_dir)
    assert ds.x_train.shape == (8000, 1, 28, 28) and ds.x_eval.shape == (2000, 1, 28, 28)
    pool = np.concatenate([ds.x_train, ds.x_eval])
    assert pool.mean() == pytest.approx(33.79 / 255, abs=0.005)  # the known MNIST test-set mean
    assert np.array_equal(np.unique(np.concatenate([ds.y_train, ds.y_eval])), np.arange(10))
    assert "t10k" in ds.note and ds.n_classes == 10
    micro = load_dataset(cfg(name="mnist", n=7), data_dir)
    assert micro.x_train.shape == (7, 1, 28, 28) and len(micro.x_eval) == 2000


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VAEVIZ_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path
    monkeypatch.delenv("VAEVIZ_DATA_DIR")
    assert data.data_dir().parts[-2:] == (".vaeviz", "data")


# ----------------------------------------------------------------------------- user .npz


def npz_cfg(path) -> DataConfig:
    return cfg(name="npz", path=str(path))


def test_npz_valid_files(tmp_path):
    x = np.arange(6 * 4 * 5, dtype=np.uint8).reshape(6, 4, 5)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([3, 7, 3, 7, 3, 7]))
    ds = load_dataset(npz_cfg(tmp_path / "a.npz"))
    assert ds.shape == (1, 4, 5) and len(ds.x_train) == 5 and len(ds.x_eval) == 1  # round(6 · 0.2) = 1
    pooled = np.concatenate([ds.x_train, ds.x_eval])
    assert pooled.max() == pytest.approx(119 / 255) and pooled.dtype == np.float32
    assert ds.class_names == ["3", "7"] and set(ds.y_train) | set(ds.y_eval) == {0, 1}
    np.savez(tmp_path / "b.npz", x=np.full((4, 2, 3, 3), 0.5))
    xb, yb = data.load_npz(tmp_path / "b.npz")
    assert xb.shape == (4, 2, 3, 3) and xb.dtype == np.float32 and yb is None


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((4, 3)), "labels": np.zeros(4)}, r"has no array 'x' \(its keys: images, labels\)"),
        ({"x": np.zeros(5)}, r"x in .* has shape \(5,\); expected \(N, D\), \(N, H, W\) or \(N, C, H, W\)"),
        ({"x": np.zeros((2, 2, 2, 2, 2))}, r"has shape \(2, 2, 2, 2, 2\); expected"),
        ({"x": np.array([[0.1, np.nan], [0.2, np.inf]])}, r"has 2 NaN or infinite value\(s\)"),
        ({"x": np.array([[0.0, 1.5], [0.2, 0.3]])}, r"float values in \[0, 1.5\], outside \[0, 1\]"),
        ({"x": np.array([[0, 300], [2, 3]])}, r"integer with values in \[0, 300\]; integer pixels must lie in 0..255"),
        ({"x": np.zeros((4, 3)), "y": np.zeros(3)}, r"y in .* has 3 labels but x has 4 examples"),
        ({"x": np.zeros((4, 3)), "y": np.array([0.5, 1, 2, 3])}, r"y in .* has non-integer values"),
        ({"x": np.zeros((1, 3))}, r"has 1 example\(s\); at least 3 are needed"),
        ({"x": np.zeros((2, 3))}, r"has 2 example\(s\); at least 3 are needed \(1 to evaluate, 2 to train"),
    ],
)
def test_npz_bad_contents(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(npz_cfg(tmp_path / "bad.npz"))


def test_npz_bad_paths(tmp_path):
    with pytest.raises(DataError, match=r"needs data.path"):
        load_dataset(cfg(name="npz"))
    with pytest.raises(DataError, match=r"npz file .*missing\.npz does not exist"):
        load_dataset(npz_cfg(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match=r"npz path .* is not a file"):
        load_dataset(npz_cfg(tmp_path))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is no zip archive")
    with pytest.raises(DataError, match=r"junk\.npz is not a valid \.npz file"):
        load_dataset(npz_cfg(tmp_path / "junk.npz"))
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match=r"text\.npz is not a valid \.npz file"):
        load_dataset(npz_cfg(tmp_path / "text.npz"))
    np.save(tmp_path / "one.npy", np.zeros((3, 3)))
    with pytest.raises(DataError, match=r"one\.npy is not a valid \.npz file \(it holds one bare array"):
        load_dataset(npz_cfg(tmp_path / "one.npy"))


def test_npz_edit_is_reloaded(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.zeros((5, 2), np.float32))
    assert load_dataset(npz_cfg(path)).x_train.max() == 0
    np.savez(path, x=np.ones((5, 2), np.float32))
    assert load_dataset(npz_cfg(path)).x_train.min() == 1


# ----------------------------------------------------------------------------- bounded loading and hostile files


def npz_with_header(path, shape, descr="<f4", data=b"", member="x.npy", extra=None) -> None:
    """An .npz whose `member` holds a hand-written .npy header (any shape, true or not) and `data`."""
    import io
    import zipfile

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, head.getvalue() + data)
        for name, blob in (extra or {}).items():
            z.writestr(name, blob)


def peak_python_bytes(fn) -> int:
    """Peak bytes allocated (Python and numpy, via tracemalloc) while fn() raises DataError."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(DataError):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_fake_npz_header_of_a_terabyte_is_refused_before_allocating(tmp_path):
    path = tmp_path / "fake.npz"
    npz_with_header(path, (10**12, 784), data=bytes(64))
    with pytest.raises(DataError) as e:
        data.load_npz(path)
    message = str(e.value)
    assert str(path) in message and "(1000000000000, 784)" in message and "2 GB limit" in message
    assert "VAEVIZ_MAX_DATA_BYTES" in message and "\n" not in message
    assert peak_python_bytes(lambda: data.load_npz(path)) < 1_000_000


def test_npz_limit_is_configurable_and_counts_float32(tmp_path, monkeypatch):
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, x=np.zeros((1000, 1000), np.uint8))  # 1 MB stored, 4 MB as float32, ~1 kB on disk
    assert path.stat().st_size < 20_000
    monkeypatch.setenv("VAEVIZ_MAX_DATA_BYTES", "3000000")
    with pytest.raises(DataError, match=r"zeros\.npz .* needs 4 MB in memory, above the 3 MB limit"):
        data.load_npz(path)
    assert peak_python_bytes(lambda: data.load_npz(path)) < 500_000  # refused from the header alone
    monkeypatch.setenv("VAEVIZ_MAX_DATA_BYTES", "5000000")
    assert data.load_npz(path)[0].shape == (1000, 1000)
    for bad in ("abc", "-5", "0", "9" * 40):
        monkeypatch.setenv("VAEVIZ_MAX_DATA_BYTES", bad)
        with pytest.raises(DataError, match="VAEVIZ_MAX_DATA_BYTES=.* is not a positive whole number of bytes"):
            data.load_npz(path)


@pytest.mark.parametrize(
    "shape, descr, payload, extra, message",
    [
        ((1000, 10), "<f4", bytes(10), None, r"x in .* declares shape \(1000, 10\) of float32 \(40 kB\) but holds 10"),
        ((5, 2), "|O", bytes(80), None, r"x in .* holds Python objects"),
        ((5, 2), "<c8", bytes(80), None, r"x in .* has dtype complex64; expected integers, floats or booleans"),
        ((5, 2), "<M8[s]", bytes(80), None, r"has dtype datetime64\[s\]; expected"),
        ((5, 2), "<U3", bytes(120), None, r"has dtype <U3; expected integers"),
        ((5, 2), "<f4", bytes(40), {"y.npy": b"not an npy"}, r"y in .* is not a \.npy array"),
        ((5, -2), "<f4", bytes(40), None, r"negative dimension"),
    ],
)
def test_npz_hostile_headers_and_dtypes(tmp_path, shape, descr, payload, extra, message):
    path = tmp_path / "h.npz"
    npz_with_header(path, shape, descr, payload, extra=extra)
    with pytest.raises(DataError, match=message):
        data.load_npz(path)


def test_npz_raw_member_and_object_arrays_are_refused(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as z:
        z.writestr("x", b"just bytes, no npy header")
    with pytest.raises(DataError, match=r"x in .*raw\.npz is not a \.npy array"):
        data.load_npz(tmp_path / "raw.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([[0.1, None]] * 4, dtype=object))
    with pytest.raises(DataError, match=r"holds Python objects \(dtype object\)"):
        data.load_npz(tmp_path / "obj.npz")


def test_npz_truncated_and_corrupted_archives(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).random((50, 8)))
    blob = path.read_bytes()
    for cut in (len(blob) // 3, len(blob) - 10, 30):
        path.write_bytes(blob[:cut])
        with pytest.raises(DataError, match=r"a\.npz is not a valid \.npz file"):
            data.load_npz(path)
    corrupt = bytearray(blob)
    corrupt[200:260] = bytes(60)  # inside the deflated data
    path.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match=r"a\.npz is not a valid \.npz file \(.*\)$"):
        data.load_npz(path)


def test_npz_zip_with_a_huge_directory_is_refused(tmp_path):
    import zipfile

    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"")
        for i in range(12_000):
            z.writestr(f"{i:0100d}", b"")
    with pytest.raises(DataError, match=r"many\.npz is not a valid \.npz file \(its zip directory has 1\.\d+ MB"):
        data.load_npz(path)


def test_npz_conversion_in_chunks_equals_the_whole(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    x8, xf = rng.integers(0, 256, (50, 3, 4), dtype=np.uint8), rng.random((50, 6))
    np.savez(tmp_path / "u8.npz", x=x8)
    np.savez(tmp_path / "f.npz", x=xf)
    monkeypatch.setattr(data.files, "CHUNK_BYTES", 40)
    got8, gotf = data.load_npz(tmp_path / "u8.npz")[0], data.load_npz(tmp_path / "f.npz")[0]
    assert np.array_equal(got8, (x8[:, None] / np.float32(255)).astype(np.float32))
    assert np.array_equal(gotf, xf.astype(np.float32))
    xf[49, 5] = np.nan
    np.savez(tmp_path / "f.npz", x=xf)
    with pytest.raises(DataError, match=r"has 1 NaN or infinite value\(s\)"):
        data.load_npz(tmp_path / "f.npz")


def test_bad_paths_are_named(tmp_path):
    import os

    os.symlink(tmp_path / "b.npz", tmp_path / "a.npz")
    os.symlink(tmp_path / "a.npz", tmp_path / "b.npz")
    os.mkfifo(tmp_path / "pipe.npz")
    cases = {
        tmp_path / "a.npz": r"npz file .*a\.npz is a symlink loop",
        tmp_path / "pipe.npz": r"npz path .*pipe\.npz is not a file \(it is a fifo\)",
        "/dev/null": r"npz path /dev/null is not a file \(it is a character device\)",
        tmp_path: r"npz path .* is not a file \(it is a directory\)",
        tmp_path / "gone" / "x.npz": r"npz file .*x\.npz does not exist",
        str(tmp_path / "nul\x00.npz"): r"is not a valid path \(it holds a NUL character\)",
        "~no_such_user_vaeviz/x.npz": r"npz path ~no_such_user_vaeviz/x\.npz names an unknown home directory",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=message):
            load_dataset(npz_cfg(path))
    (tmp_path / "pipe.gz").symlink_to(tmp_path / "pipe.npz")
    with pytest.raises(DataError, match=r"IDX path .*pipe\.gz is not a file \(it is a fifo\)"):
        data.read_idx(tmp_path / "pipe.gz")


def test_unreadable_file_is_named(tmp_path, monkeypatch):
    import errno
    import os

    path = tmp_path / "secret.npz"
    np.savez(path, x=np.zeros((4, 2)))
    path.chmod(0)
    if os.geteuid() == 0:  # root reads every file: make open() answer as it would for anyone else
        real_open = os.open

        def refuse(p, *args, **kw):
            if str(p) == str(path):
                raise PermissionError(errno.EACCES, "Permission denied", str(p))
            return real_open(p, *args, **kw)

        monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(DataError, match=r"npz file .*secret\.npz is not readable \(permission denied\)"):
        data.load_npz(path)


def write_gzip_stream(path, header: bytes, zeros: int, chunk: int = 1 << 20) -> None:
    """A gzip file of `header` then `zeros` zero bytes, written a chunk at a time."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header)
        for start in range(0, zeros, chunk):
            f.write(bytes(min(chunk, zeros - start)))


def test_idx_gzip_bomb_with_a_lying_header_is_refused_without_inflating(tmp_path):
    path = tmp_path / "bomb.gz"
    write_gzip_stream(path, struct.pack(">IIII", 0x803, 10, 28, 28), 30_000_000)
    assert path.stat().st_size < 200_000
    with pytest.raises(DataError, match=r"bomb\.gz holds more than 7840 data bytes but its header \(10, 28, 28\)"):
        data.read_idx(path)
    assert peak_python_bytes(lambda: data.read_idx(path)) < 2_000_000


def test_idx_header_above_the_limit_is_refused_before_decompressing(tmp_path, monkeypatch):
    path = tmp_path / "big.gz"
    write_gzip_stream(path, struct.pack(">IIII", 0x803, 4_000_000_000, 28, 28), 1000)
    with pytest.raises(DataError) as e:
        data.read_idx(path)
    message = str(e.value)
    assert str(path) in message and "(4000000000, 28, 28)" in message and "2 GB limit" in message
    write_gzip_stream(path, struct.pack(">IIII", 0x803, 1000, 28, 28), 784_000)  # honest: 3.1 MB as float32
    monkeypatch.setenv("VAEVIZ_MAX_DATA_BYTES", "1000000")
    with pytest.raises(DataError, match=r"needs 3\.14 MB in memory, above the 1 MB limit"):
        data.read_idx(path)
    assert peak_python_bytes(lambda: data.read_idx(path)) < 500_000
    monkeypatch.delenv("VAEVIZ_MAX_DATA_BYTES")
    assert data.read_idx(path).shape == (1000, 28, 28)


def test_idx_one_byte_too_many_is_refused(tmp_path):
    write_gzip_stream(tmp_path / "a.gz", struct.pack(">II", 0x801, 5), 6)
    with pytest.raises(DataError, match=r"holds more than 5 data bytes but its header \(5,\) needs 5"):
        data.read_idx(tmp_path / "a.gz")
    write_gzip_stream(tmp_path / "b.gz", struct.pack(">II", 0x801, 0), 0)
    assert data.read_idx(tmp_path / "b.gz").shape == (0,)
    with gzip.open(tmp_path / "c.gz", "wb") as f:
        f.write(struct.pack(">I", 0x803) + bytes(5))
    with pytest.raises(DataError, match=r"c\.gz is shorter than its IDX header \(9 bytes\)"):
        data.read_idx(tmp_path / "c.gz")


# ----------------------------------------------------------------------------- splits large enough to train


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(name="moons", size=8, eval_fraction=0.9), ["'moons'", "1 example(s)", "8 examples, 7 held out",
                                                        "data.eval_fraction=0.9", "at least 2", "ex-post GMM"]),
        (dict(name="digits", n=1), ["'digits'", "1 example(s)", "data.n=1", "at least 2"]),
        (dict(name="digits", per_class=1, n=1), ["data.per_class=1", "data.n=1"]),
    ],
)
def test_train_split_too_small_for_the_ex_post_gmm(kw, words):
    with pytest.raises(DataError) as e:
        load_dataset(cfg(**kw))
    for w in words:
        assert w in str(e.value), str(e.value)


def test_three_images_are_the_smallest_npz(tmp_path):
    np.savez(tmp_path / "three.npz", x=np.full((3, 4), 0.5))
    ds = load_dataset(npz_cfg(tmp_path / "three.npz"))
    assert len(ds.x_train) == 2 and len(ds.x_eval) == 1
    np.savez(tmp_path / "one_class.npz", x=np.full((6, 4), 0.5), y=np.zeros(6))
    with pytest.raises(DataError, match=r"train split has 1 example\(s\) .*data\.per_class=1"):
        load_dataset(cfg(name="npz", path=str(tmp_path / "one_class.npz"), per_class=1))


def test_procedural_shapes_are_bounded():
    with pytest.raises(DataError, match=r"'shapes' with data\.size=1000000 .* needs 4\.1 GB in memory, above the 2 GB"):
        load_dataset(cfg(name="shapes", size=1_000_000))
