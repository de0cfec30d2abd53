"""Datasets behind one registry: load_split(name, split, root, **options) -> Split.

Every loader gives uint8 images N x H x W x 3, int64 labels and class names, for split 'train' or 'test'.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from haet.data import cifar10, digits, imagefolder, mini_imagenet
from haet.data.base import DataError, Split, class_counts

DATASETS: dict[str, Callable[..., Split]] = {
    "digits": digits.load,
    "cifar10": cifar10.load,
    "imagefolder": imagefolder.load,
    "mini-imagenet": mini_imagenet.load,
}
SPLITS = ("train", "test")


def dataset_options(name: str) -> list[str]:
    """The options a dataset takes besides split and root."""
    parameters = inspect.signature(DATASETS[name]).parameters
    return [p for p in parameters if p not in ("split", "root")]


def resolved_options(name: str, options: dict) -> dict:
    """The options a dataset loads with: the given ones over the loader's defaults, so a manifest names them all."""
    parameters = inspect.signature(DATASETS[name]).parameters
    defaults = {p: parameters[p].default for p in dataset_options(name)}
    return defaults | options


def load_split(name: str, split: str, root: str | None = None, **options: object) -> Split:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for dataset {name!r}; splits are {', '.join(SPLITS)}")
    unknown = sorted(set(options) - set(dataset_options(name)))
    if unknown:
        allowed = ", ".join(dataset_options(name)) or "none"
        raise DataError(f"dataset {name!r} takes no option {', '.join(unknown)} (its options: {allowed})")
    return DATASETS[name](split, root, **options)


__all__ = [
    "DATASETS",
    "SPLITS",
    "DataError",
    "Split",
    "class_counts",
    "dataset_options",
    "load_split",
    "resolved_options",
]
