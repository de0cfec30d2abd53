"""The official CIFAR-10 python batches, in torchvision's layout.

root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}; root may also be that folder itself.
Downloading is an explicit opt-in (download=True) and never happens by default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from haet.data.base import DataError, Split, load_pickle, text_key

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _batch_folder(root: Path) -> Path | None:
    for candidate in (root / FOLDER, root):
        if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
            return candidate
    return None


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(root=str(root), train=True, download=True)  # fetches and md5-checks the official archive


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: missing CIFAR-10 batch file")
    batch = load_pickle(path, "CIFAR-10 batch")
    data = text_key(batch, "data") if isinstance(batch, dict) else None
    labels = text_key(batch, "labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: not a CIFAR-10 batch (expected a dict with 'data' and 'labels')")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise DataError(f"{path}: malformed CIFAR-10 batch (data {data.dtype} {data.shape}, {len(labels)} labels)")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def load(split: str, root: str | None = None, download: bool = False) -> Split:
    if root is None:
        raise DataError("dataset 'cifar10' needs a root: the folder holding cifar-10-batches-py")
    root_path = Path(root)
    folder = _batch_folder(root_path)
    if folder is None and download:
        _download(root_path)
        folder = _batch_folder(root_path)
    if folder is None:
        raise DataError(
            f"{root_path}: no CIFAR-10 python batches found. Extract the official cifar-10-python.tar.gz "
            f"there (giving {root_path / FOLDER}/data_batch_1..5 and test_batch), or set the dataset option "
            "download: true (CLI: --option download=true) to fetch it once (about 170 MB)."
        )
    parts = [_read_batch(folder / name) for name in (TRAIN_FILES if split == "train" else TEST_FILES)]
    images = np.concatenate([part[0] for part in parts])
    labels = np.concatenate([part[1] for part in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise DataError(f"{folder}: labels outside 0..9")
    return Split(dataset="cifar10", name=split, labels=labels, class_names=CLASS_NAMES, read=lambda idx: images[idx])
