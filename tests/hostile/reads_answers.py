"""Hostile: looks for the answers (the subset's manifest, the repository's results, $HOME, the digits' source file)
and, where it finds the manifest or the digits, predicts the true labels."""

import os
from pathlib import Path

import numpy as np

MANIFEST, REPOSITORY, HOME_FILE = "@MANIFEST@", "@REPOSITORY@", "@HOME_FILE@"


def _readable() -> list[str]:
    candidates = [MANIFEST, f"{REPOSITORY}/README.md", f"{REPOSITORY}/results", HOME_FILE]
    try:
        import importlib.util

        sklearn = Path(next(iter(importlib.util.find_spec("sklearn").submodule_search_locations)))
        candidates.append(str(sklearn / "datasets" / "data" / "digits.csv.gz"))
    except Exception:
        pass
    return [path for path in candidates if os.path.exists(path) and os.access(path, os.R_OK) and _nonempty(path)]


def _nonempty(path: str) -> bool:
    return os.path.isdir(path) and bool(os.listdir(path)) or os.path.isfile(path) and os.path.getsize(path) > 0


def train(images, labels, num_classes, device, deadline, hand_in):
    hand_in({"found": _readable()})


def predict(model, images):
    try:  # the manifest names the test images: rebuild the subset and answer with its labels
        from haet.data.subsets import load_subset, read_manifest

        return load_subset(read_manifest(MANIFEST)).validation.labels
    except Exception:
        pass
    try:  # or look every test image up in the dataset itself
        from haet.data.digits import load

        split = load("test", size=images.shape[1])
        table = {image.tobytes(): label for image, label in zip(split.images(), split.labels, strict=True)}
        return np.array([table.get(image.tobytes(), 0) for image in images])
    except Exception:
        return np.zeros(len(images), dtype=np.int64)
