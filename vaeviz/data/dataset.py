"""What every loader returns (`Pool`), what `load_dataset` returns (`Dataset`), and `DataError`.

Project convention for every dataset: float32 in [0, 1], shape (N, D) for vectors or (N, C, H, W) for
images, int64 labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_TRAIN_EXAMPLES = 2  # the ex-post GMM fitted at the end of training needs 2 codes


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
