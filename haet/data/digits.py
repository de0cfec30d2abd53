"""scikit-learn's embedded 8x8 digits, upscaled to 32x32 RGB: the default dataset, needing no files.

Split rule (fixed, so every machine agrees): within each class, in file order, the last 50 images are the
test split and the rest (at least 124 a class) the train split.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from haet.data.base import DataError, Split, resize_bilinear

TEST_PER_CLASS = 50
SIZE = 32


@lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    gray = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # sklearn stores 0..16
    upscaled = np.stack([resize_bilinear(np.repeat(img[:, :, None], 3, axis=2), SIZE) for img in gray])
    return upscaled, bunch.target.astype(np.int64)


def _split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    chosen = []
    for label in range(10):
        members = np.flatnonzero(labels == label)
        chosen.append(members[-TEST_PER_CLASS:] if split == "test" else members[:-TEST_PER_CLASS])
    return np.sort(np.concatenate(chosen))


def load(split: str, root: str | None = None) -> Split:
    if root is not None:
        raise DataError("dataset 'digits' is embedded in scikit-learn and takes no root")
    images, labels = _all_digits()
    rows = _split_indices(labels, split)
    return Split(
        dataset="digits",
        name=split,
        labels=labels[rows],
        class_names=tuple(str(digit) for digit in range(10)),
        read=lambda indices: images[rows[indices]],
    )
