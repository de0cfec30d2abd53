"""scikit-learn's embedded 8x8 digits, upscaled to 32x32 RGB: the default dataset, needing no files.

Split rule (fixed, so every machine agrees): within each class, in file order, the last 50 images are the
test split and the rest (at least 124 a class) the train split.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from haet.data.base import DataError, Split, resize_bilinear

TEST_PER_CLASS = 50
SIZE = 32


def _digits_8x8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits.csv.gz read straight from its package: importing sklearn costs every training
    process about 2 s, more than a demo epoch. load_digits reads the same file, should its place ever move."""
    sklearn = importlib.util.find_spec("sklearn")
    csv = Path(next(iter(sklearn.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not csv.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    table = np.loadtxt(csv, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1]


@lru_cache(maxsize=2)
def _all_digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _digits_8x8()
    gray = np.round(images * (255.0 / 16.0)).astype(np.uint8)  # sklearn stores 0..16
    upscaled = np.stack([resize_bilinear(np.repeat(img[:, :, None], 3, axis=2), size) for img in gray])
    return upscaled, labels.astype(np.int64)


def _split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    chosen = []
    for label in range(10):
        members = np.flatnonzero(labels == label)
        chosen.append(members[-TEST_PER_CLASS:] if split == "test" else members[:-TEST_PER_CLASS])
    return np.sort(np.concatenate(chosen))


def load(split: str, root: str | None = None, size: int = SIZE) -> Split:
    """size: the side in pixels the 8x8 digits are upscaled to (16 loses nothing and costs a quarter of 32)."""
    if root is not None:
        raise DataError("dataset 'digits' is embedded in scikit-learn and takes no root")
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 256:
        raise DataError(f"dataset 'digits': size must be a whole number of pixels from 8 to 256, not {size!r}")
    images, labels = _all_digits(size)
    rows = _split_indices(labels, split)
    return Split(
        dataset="digits",
        name=split,
        labels=labels[rows],
        class_names=tuple(str(digit) for digit in range(10)),
        read=lambda indices: images[rows[indices]],
    )
