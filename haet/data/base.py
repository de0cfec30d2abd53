"""What every dataset loader returns, and the helpers the loaders share."""

from __future__ import annotations

import io
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from haet import HaetError


class DataError(HaetError):
    """A dataset is missing, malformed, or too small for what was asked of it."""


@dataclass(frozen=True)
class Split:
    """One split of a dataset: labels and class names up front, pixels read on demand.

    Reading on demand lets a 500-per-class subset of a 50,000-image folder decode only the images it uses.
    """

    dataset: str
    name: str
    labels: np.ndarray  # int64, shape N
    class_names: tuple[str, ...]
    read: Callable[[np.ndarray], np.ndarray]  # indices -> uint8 images k x H x W x 3

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """uint8 images k x H x W x 3 for the given indices (all of them when None)."""
        index_array = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        if index_array.size and (index_array.min() < 0 or index_array.max() >= len(self)):
            raise DataError(f"{self.dataset}/{self.name}: index out of range 0..{len(self) - 1}")
        images = self.read(index_array)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DataError(f"{self.dataset}/{self.name}: loader returned {images.dtype} {images.shape}")
        return images


def class_counts(labels: np.ndarray, class_names: tuple[str, ...]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(class_names))
    return {name: int(count) for name, count in zip(class_names, counts, strict=True)}


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """Resize one H x W x 3 uint8 image to size x size with PIL's bilinear filter.

    PIL is what torchvision's Resize uses on PIL images, i.e. what the HAET challenge's loader did.
    """
    if image.shape[0] == size and image.shape[1] == size:
        return image
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def decode_image(path: Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to H x W x 3 uint8, naming the file when it is corrupt or truncated."""
    try:
        with Image.open(path) as image:
            image.load()  # force a full decode now: a truncated file fails here, not later
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc}); the file is corrupt or truncated") from None
    return array if size is None else resize_bilinear(array, size)


class _NotPlainData(pickle.UnpicklingError):
    pass


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: dataset pickles never need to run code."""

    allowed = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # protocol-2 pickles of numpy arrays carry their bytes through it
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise _NotPlainData(f"refusing to load {module}.{name}: a dataset pickle holds plain data only")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def load_pickle(path: Path, what: str) -> object:
    """Load a dataset pickle (CIFAR batch, Mini-ImageNet cache) safely, naming the file on any failure."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc})") from None
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _NotPlainData as exc:
        raise DataError(f"{path}: {exc}") from None
    except Exception as exc:  # truncation and garbage raise many different exception types
        raise DataError(f"{path}: corrupt or truncated {what} ({type(exc).__name__}: {exc})") from None


def text_key(mapping: dict, key: str):
    """Look a key up as str or bytes: pickles written by Python 2 tools carry bytes keys."""
    if key in mapping:
        return mapping[key]
    return mapping.get(key.encode("ascii"))
