"""Mini-ImageNet under the HAET 2021 evaluation protocol.

The first num_classes classes; within each class the first train_per_class images are the train split and the last
test_per_class the test split; every image resized to size x size (bilinear), or kept at 84x84 with size None, so
that the training resizes each batch inside its budget (the challenge's transform list did that; the paper blames
its cost for part of the gap to its CIFAR-10 numbers).

Which classes are "the first": class_order cache (default) takes them in the order of the cache's class_dict, which
is what the challenge's "first 10 classes of the cache" means; sorted takes them by class id. The manifest names
the order used (its dataset options and its class_names).

Two source formats:
- the pickled cache mini-imagenet-cache-train.pkl: a dict with 'image_data' (uint8 N x 84 x 84 x 3) and
  'class_dict' (class id -> list of row indices); root is the file or the folder holding it;
- an ImageFolder of 84x84 images: root/<class id>/<image>, images taken in sorted file-name order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from haet.data.base import DataError, Split, load_pickle, resize_bilinear, text_key
from haet.data.imagefolder import decode_all, list_classes, list_images

CACHE_FILE = "mini-imagenet-cache-train.pkl"
CLASS_ORDERS = ("cache", "sorted")


def _protocol_positions(count: int, split: str, train_per_class: int, test_per_class: int, where: str) -> range:
    if count < train_per_class + test_per_class:
        raise DataError(
            f"{where}: {count} images, fewer than the protocol's {train_per_class} train + "
            f"{test_per_class} test, so the splits would overlap"
        )
    return range(train_per_class) if split == "train" else range(count - test_per_class, count)


def _checked_class_dict(path: Path, class_dict: dict, rows: int) -> dict[str, list[int]]:
    """class_dict as class id -> row indices, each an integer row of image_data, no row in two places: a negative
    index would quietly take another image, a repeated one train on its own test image."""
    checked, owner = {}, {}
    for key, members in class_dict.items():
        class_id = key.decode() if isinstance(key, bytes) else key
        if not isinstance(class_id, str) or not isinstance(members, list | tuple | np.ndarray):
            raise DataError(f"{path}: class_dict maps {key!r} to {type(members).__name__}, not a list of rows")
        indices = []
        for member in members:
            integral = isinstance(member, int | np.integer) and not isinstance(member, bool | np.bool_)
            if not integral or not 0 <= int(member) < rows:
                raise DataError(
                    f"{path}: class {class_id} lists row {member!r}; rows are integers in [0, {rows}) of image_data"
                )
            if int(member) in owner:
                raise DataError(
                    f"{path}: row {int(member)} is listed by class {owner[int(member)]} and again by class "
                    f"{class_id}: each image belongs to one class, once"
                )
            owner[int(member)] = class_id
            indices.append(int(member))
        checked[class_id] = indices
    return checked


def _from_cache(
    path: Path, split: str, num_classes: int, train_n: int, test_n: int, size: int | None, class_order: str
) -> Split:
    cache = load_pickle(path, "Mini-ImageNet cache")
    image_data = text_key(cache, "image_data") if isinstance(cache, dict) else None
    class_dict = text_key(cache, "class_dict") if isinstance(cache, dict) else None
    if not isinstance(image_data, np.ndarray) or not isinstance(class_dict, dict):
        raise DataError(f"{path}: not a Mini-ImageNet cache (expected a dict with 'image_data' and 'class_dict')")
    if image_data.dtype != np.uint8 or image_data.ndim != 4 or image_data.shape[-1] != 3:
        raise DataError(f"{path}: image_data is {image_data.dtype} {image_data.shape}, expected uint8 N x H x W x 3")
    class_dict = _checked_class_dict(path, class_dict, len(image_data))
    class_ids = list(class_dict)  # the pickle's order
    if class_order == "sorted":
        class_ids.sort()
    if len(class_ids) < num_classes:
        raise DataError(f"{path}: {len(class_ids)} classes, fewer than the {num_classes} asked for")
    rows, labels = [], []
    for label, class_id in enumerate(class_ids[:num_classes]):
        members = class_dict[class_id]
        positions = _protocol_positions(len(members), split, train_n, test_n, f"{path} class {class_id}")
        rows.extend(members[p] for p in positions)
        labels.extend([label] * len(positions))
    chosen = image_data[np.asarray(rows)]
    images = chosen if size is None else np.stack([resize_bilinear(image, size) for image in chosen])
    return Split(
        dataset="mini-imagenet",
        name=split,
        labels=np.asarray(labels, dtype=np.int64),
        class_names=tuple(class_ids[:num_classes]),
        read=lambda indices: images[indices],
    )


def _from_folder(root: Path, split: str, num_classes: int, train_n: int, test_n: int, size: int | None) -> Split:
    class_ids = list_classes(root)
    if len(class_ids) < num_classes:
        raise DataError(f"{root}: {len(class_ids)} class folders, fewer than the {num_classes} asked for")
    paths, labels = [], []
    for label, class_id in enumerate(class_ids[:num_classes]):
        files = list_images(root / class_id)
        positions = _protocol_positions(len(files), split, train_n, test_n, str(root / class_id))
        paths.extend(files[p] for p in positions)
        labels.extend([label] * len(positions))
    return Split(
        dataset="mini-imagenet",
        name=split,
        labels=np.asarray(labels, dtype=np.int64),
        class_names=tuple(class_ids[:num_classes]),
        read=lambda indices: decode_all([paths[i] for i in indices], size),
    )


def load(
    split: str,
    root: str | None = None,
    num_classes: int = 10,
    train_per_class: int = 500,
    test_per_class: int = 100,
    size: int | None = 32,
    class_order: str = "cache",
) -> Split:
    if class_order not in CLASS_ORDERS:
        raise DataError(
            f"mini-imagenet option class_order must be one of {', '.join(CLASS_ORDERS)}, got {class_order!r}"
        )
    if root is None:
        raise DataError(f"dataset 'mini-imagenet' needs a root: {CACHE_FILE}, or a folder of class folders")
    for name, value in (
        ("num_classes", num_classes),
        ("train_per_class", train_per_class),
        ("test_per_class", test_per_class),
    ):
        if not isinstance(value, int) or value < 1:
            raise DataError(f"mini-imagenet option {name} must be a positive integer, got {value!r}")
    root_path = Path(root)
    if root_path.is_dir() and (root_path / CACHE_FILE).is_file():
        root_path = root_path / CACHE_FILE
    if root_path.is_file():
        return _from_cache(root_path, split, num_classes, train_per_class, test_per_class, size, class_order)
    if root_path.is_dir() and list_classes(root_path):
        if class_order != "sorted":
            raise DataError(
                f"{root_path}: a folder of class folders has no cache order; set the option class_order: sorted "
                f"(by class id), or point root at {CACHE_FILE} to take the cache's order"
            )
        return _from_folder(root_path, split, num_classes, train_per_class, test_per_class, size)
    raise DataError(
        f"{root_path}: no Mini-ImageNet data. Put {CACHE_FILE} there (dict with image_data and class_dict), "
        "or point root at a folder of class-id folders (n01532829/, ...) holding the 84x84 images."
    )
