"""The dataset registry, the train/eval split every dataset shares, and the in-process cache.

`load_dataset(cfg)` builds the whole pool from `DATASETS[cfg.name].load`, then splits it the same way
for every dataset (`split_pool`):

1. a permutation of the pool from `cfg.seed`; the first round(N·eval_fraction) rows (at least 1)
   are the eval split, the rest the train split, in permutation order. A train split (after the
   micro subsets below) of fewer than 2 rows is refused: the ex-post GMM fitted at the end of
   training needs 2. MNIST with its official train files present keeps the t10k files as the
   eval split and only permutes the train rows.
2. micro subsets act on the train split only, the eval split stays whole: `cfg.per_class` keeps
   the first `per_class` train rows of each class, then `cfg.n` keeps the first `n` train rows.

Loads are cached in-process per config (and, for a user .npz, per file path, mtime and size); every
call returns fresh copies of the cached arrays, so callers may mutate what they get.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaeviz.config import DataConfig
from vaeviz.data import toy
from vaeviz.data.dataset import MIN_TRAIN_EXAMPLES, DataError, Dataset, Pool
from vaeviz.data.idx import FASHION_MNIST, MNIST, idx_loader
from vaeviz.data.images import load_digits, load_shapes
from vaeviz.data.npz import load_user_npz


@dataclass(frozen=True)
class DatasetInfo:
    description: str
    load: Callable[[DataConfig, Path], Pool]  # (config, data folder) -> pool


def data_dir() -> Path:
    """The folder searched for downloaded data: $VAEVIZ_DATA_DIR, default ~/.vaeviz/data."""
    env = os.environ.get("VAEVIZ_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".vaeviz" / "data"


_default_data_dir = data_dir  # load_dataset's argument shadows the name

DATASETS: dict[str, DatasetInfo] = {
    "gaussian_mixture": DatasetInfo("2-D mixture of data.k Gaussians on a ring or grid (data.layout, data.noise)",
                                    toy.toy_loader(toy.gaussian_mixture, 0.05)),
    "lines": DatasetInfo("2-D: four noisy line segments crossing at the centre", toy.toy_loader(toy.lines, 0.02)),
    "circles": DatasetInfo("2-D: two noisy concentric circles", toy.toy_loader(toy.circles, 0.04)),
    "moons": DatasetInfo("2-D: two interleaved noisy half circles", toy.toy_loader(toy.moons, 0.08)),
    "pinwheel": DatasetInfo("2-D: five curved pinwheel arms", toy.toy_loader(toy.pinwheel, 0.05)),
    "digits": DatasetInfo("8×8 handwritten digits shipped with scikit-learn (1,797 images, 10 classes)",
                          load_digits),
    "shapes": DatasetInfo("32×32 procedural shapes with known factors: shape, scale, rotation, x, y", load_shapes),
    "mnist": DatasetInfo("MNIST 28×28 digits from the IDX .gz files in the data folder", idx_loader(MNIST)),
    "fashion_mnist": DatasetInfo("Fashion-MNIST 28×28 clothes from the IDX .gz files in the data folder",
                                 idx_loader(FASHION_MNIST)),
    "npz": DatasetInfo("your own .npz (uploaded in the app; data.path on the command line): "
                       "x (N, H, W), (N, D) or (N, C, H, W), optional y",
                       load_user_npz),
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
