"""Datasets: toy 2-D sets, sklearn digits, procedural shapes, MNIST/Fashion-MNIST and user .npz.

Every dataset is float32 in [0, 1], shape (N, D) for vectors or (N, C, H, W) for images, with int64
labels; `load_dataset(cfg)` returns its train/eval split. Bad files raise `DataError` with a message
that names the file and the problem, and loading is bounded by `max_data_bytes()`.

One idea per module:
- `dataset.py`: `Dataset` (a split), `Pool` (what a loader returns), `DataError`.
- `toy.py`: the 2-D generators (Gaussian mixture, lines, circles, moons, pinwheel).
- `images.py`: sklearn's 8×8 digits and the procedural shapes with known factors.
- `idx.py`: MNIST / Fashion-MNIST IDX files: reading, lookup, MD5-verified download.
- `npz.py`: the user's own .npz, read defensively.
- `files.py`: bounded, safe reading shared by the file formats (memory limit, regular files only).
- `registry.py`: the `DATASETS` registry, the split every dataset shares, the cache, `load_dataset`.
"""

from vaeviz.data.dataset import MIN_TRAIN_EXAMPLES, DataError, Dataset, Pool
from vaeviz.data.files import UnreadableFile, check_budget, format_bytes, max_data_bytes, open_regular
from vaeviz.data.idx import (
    FASHION_MNIST,
    IDX_FILES,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    MNIST,
    IdxSource,
    download_idx,
    read_idx,
)
from vaeviz.data.images import SHAPE_NAMES, SHAPES_FACTOR_RANGES, render_shapes, sample_shape_factors
from vaeviz.data.npz import load_npz
from vaeviz.data.registry import (
    DATASETS,
    DatasetInfo,
    clear_cache,
    data_dir,
    describe_datasets,
    load_dataset,
    split_pool,
)

__all__ = [
    "DATASETS", "FASHION_MNIST", "IDX_FILES", "IMAGES_MAGIC", "LABELS_MAGIC", "MIN_TRAIN_EXAMPLES", "MNIST",
    "SHAPES_FACTOR_RANGES", "SHAPE_NAMES", "DataError", "Dataset", "DatasetInfo", "IdxSource", "Pool",
    "UnreadableFile", "check_budget", "clear_cache", "data_dir", "describe_datasets", "download_idx",
    "format_bytes", "load_dataset", "load_npz", "max_data_bytes", "open_regular", "read_idx", "render_shapes",
    "sample_shape_factors", "split_pool",
]
