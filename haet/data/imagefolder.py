"""Images in the ImageFolder layout: root/<split>/<class>/*.{png,jpg,jpeg}.

Classes are the sorted folder names, files within a class are taken in sorted order, and images are decoded
only when read. The real CIFAR-10 at ../shared/data/cifar10 is in this layout.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from haet.data.base import DataError, Split, decode_image

EXTENSIONS = {".png", ".jpg", ".jpeg"}
SPLITS = ("train", "test")


def list_classes(folder: Path) -> list[str]:
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    stray = sorted(entry.name for entry in entries if not entry.is_dir())
    if stray:  # a class "folder" that is a file would silently drop a class
        raise DataError(f"{folder / stray[0]} is a file where ImageFolder expects only class folders; move it away")
    return sorted(entry.name for entry in entries)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def decode_all(paths: list[Path], size: int | None) -> np.ndarray:
    """Decode files in parallel (PIL releases the GIL) and check they agree in size."""
    if not paths:
        return np.zeros((0, size or 32, size or 32, 3), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=4) as pool:
        images = list(pool.map(lambda p: decode_image(p, size), paths))
    first_shape = images[0].shape
    for path, image in zip(paths, images, strict=True):
        if image.shape != first_shape:
            raise DataError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} but {paths[0].name} is "
                f"{first_shape[1]}x{first_shape[0]}; set the dataset option size to resize them all"
            )
    return np.stack(images)


def load(split: str, root: str | None = None, size: int | None = None) -> Split:
    if root is None:
        raise DataError("dataset 'imagefolder' needs a root: the folder holding train/ and test/")
    root_path = Path(root)
    folder = root_path / split
    if not folder.is_dir():
        raise DataError(
            f"{folder}: missing split folder. An imagefolder dataset is laid out as "
            f"{root_path}/<split>/<class>/<image>.jpg|png with splits {', '.join(SPLITS)}."
        )
    class_names = list_classes(folder)
    if not class_names:
        raise DataError(f"{folder}: no class folders inside")
    for other in SPLITS:
        other_folder = root_path / other
        if other != split and other_folder.is_dir():
            other_classes = list_classes(other_folder)
            if other_classes != class_names:
                only_here = sorted(set(class_names) - set(other_classes))
                only_there = sorted(set(other_classes) - set(class_names))
                raise DataError(
                    f"{root_path}: class folders differ between splits: only in {split}/: {only_here}; "
                    f"only in {other}/: {only_there}"
                )
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        files = list_images(folder / name)
        if not files:
            raise DataError(f"{folder / name}: class folder holds no .png/.jpg/.jpeg images")
        paths.extend(files)
        labels.extend([label] * len(files))
    return Split(
        dataset="imagefolder",
        name=split,
        labels=np.asarray(labels, dtype=np.int64),
        class_names=tuple(class_names),
        read=lambda indices: decode_all([paths[i] for i in indices], size),
    )
