"""Seeded, stratified subsets and the manifests that pin them down.

A manifest names the dataset, the seed and the exact indices chosen, with sha256 of the chosen images and
labels, so a run made from it can prove it trained on exactly those pixels. The same spec and run index give
the same manifest byte for byte; run k uses a seed derived from (seed, k), so k runs see k different subsets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from haet import HaetError, __version__
from haet.data import SPLITS, DataError, Split, class_counts, load_split, resolved_options
from haet.files import canonical_json, check_schema, read_record, sha256_bytes, write_record

SCHEMA_ID = "haet/subset-manifest/v1"
TEST_SPLIT_NOTE = (
    "Validation images come from the dataset's test split, as the paper did. Accuracy on them is what the "
    "paper reported; selecting models or epochs on it makes that number optimistic."
)


@dataclass(frozen=True)
class SubsetSpec:
    """What a subset is drawn from and how: the 'subsets' part of a config."""

    dataset: str
    root: str | None = None
    options: dict = field(default_factory=dict)
    train_per_class: int = 500
    val_per_class: int = 100
    val_split: str = "test"  # the paper drew its validation images from CIFAR-10's test split
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_per_class", "val_per_class"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DataError(f"subset {name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise DataError(f"subset seed must be a non-negative integer, got {self.seed!r}")
        if self.val_split not in SPLITS:
            raise DataError(f"subset val_split must be one of {', '.join(SPLITS)}, got {self.val_split!r}")
        if not isinstance(self.options, dict):
            raise DataError(f"dataset options must be a mapping, got {self.options!r}")

    def sha256(self) -> str:
        return sha256_bytes(canonical_json(asdict(self)).encode("utf-8"))


@dataclass(frozen=True)
class LabeledImages:
    images: np.ndarray  # uint8 N x H x W x 3
    labels: np.ndarray  # int64 N
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class Subset:
    train: LabeledImages
    validation: LabeledImages
    manifest: dict


def derive_seed(seed: int, run: int) -> int:
    """The subset seed of run `run`: independent streams for every (seed, run) pair."""
    return int(np.random.SeedSequence([seed, run]).generate_state(1, dtype=np.uint32)[0])


def _images_digest(images: np.ndarray) -> str:
    header = f"uint8 {'x'.join(map(str, images.shape))}\n".encode()
    return sha256_bytes(header + np.ascontiguousarray(images).tobytes())


def _labels_digest(labels: np.ndarray) -> str:
    return sha256_bytes(labels.astype("<i8").tobytes())


def _pick(split: Split, rng: np.random.Generator, sizes: list[int], roles: str) -> list[np.ndarray]:
    """Per class, shuffle that class's indices once and cut consecutive slices of the given sizes.

    Slices of one shuffle are disjoint, which is how train and validation share a split without overlap.
    """
    slices: list[list[np.ndarray]] = [[] for _ in sizes]
    for label, name in enumerate(split.class_names):
        members = np.flatnonzero(split.labels == label)
        if len(members) < sum(sizes):
            raise DataError(
                f"{split.dataset}: class {name!r} has {len(members)} images in split {split.name!r} but the "
                f"subset needs {sum(sizes)} ({roles}); ask for fewer per class or use a larger dataset"
            )
        shuffled = rng.permutation(members)
        start = 0
        for position, size in enumerate(sizes):
            slices[position].append(shuffled[start : start + size])
            start += size
    return [np.sort(np.concatenate(parts)) for parts in slices]


def _part(split: Split, indices: np.ndarray) -> dict:
    images = split.images(indices)
    labels = split.labels[indices]
    return {
        "split": split.name,
        "count": int(len(indices)),
        "indices": [int(i) for i in indices],
        "class_counts": class_counts(labels, split.class_names),
        "image_shape": list(images.shape[1:]),
        "images_sha256": _images_digest(images),
        "labels_sha256": _labels_digest(labels),
    }


def make_manifest(spec: SubsetSpec, run: int = 0) -> dict:
    """Draw run `run`'s subset of spec and describe it (no file is written)."""
    if not isinstance(run, int) or run < 0:
        raise DataError(f"run index must be a non-negative integer, got {run!r}")
    subset_seed = derive_seed(spec.seed, run)
    rng = np.random.default_rng(subset_seed)
    train_split = load_split(spec.dataset, "train", spec.root, **spec.options)
    if spec.val_split == "train":
        train_indices, val_indices = _pick(
            train_split, rng, [spec.train_per_class, spec.val_per_class], "train + validation per class"
        )
        val_split = train_split
    else:
        val_split = load_split(spec.dataset, spec.val_split, spec.root, **spec.options)
        if val_split.class_names != train_split.class_names:
            raise DataError(
                f"{spec.dataset}: classes differ between train {list(train_split.class_names)} and "
                f"{spec.val_split} {list(val_split.class_names)}"
            )
        (train_indices,) = _pick(train_split, rng, [spec.train_per_class], "train per class")
        (val_indices,) = _pick(val_split, rng, [spec.val_per_class], "validation per class")
    from_test = spec.val_split == "test"
    return {
        "schema": SCHEMA_ID,
        "haet_version": __version__,
        "dataset": {"name": spec.dataset, "root": spec.root, "options": resolved_options(spec.dataset, spec.options)},
        "spec": asdict(spec),
        "spec_sha256": spec.sha256(),
        "seed": spec.seed,
        "run": run,
        "subset_seed": subset_seed,
        "class_names": list(train_split.class_names),
        "train": _part(train_split, train_indices),
        "validation": _part(val_split, val_indices),
        "validation_from_test_split": from_test,
        "notes": [TEST_SPLIT_NOTE] if from_test else [],
    }


def validate_manifest(manifest: dict, where: str = "manifest") -> None:
    check_schema(manifest, "subset-manifest.schema.json", "subset manifest", where)


def write_manifest(manifest: dict, path: str | Path) -> dict:
    validate_manifest(manifest)
    return write_record(path, manifest)


def read_manifest(path: str | Path) -> dict:
    manifest = read_record(path)
    validate_manifest(manifest, str(path))
    return manifest


def derivation_problem(manifest: dict, root: str | None = None) -> str | None:
    """Why a manifest is not the draw its own spec, seed and run make (None: it is). A manifest is a function of
    (dataset, spec, seed, run), so one crafted by hand, its hashes recomputed, is caught by drawing it again."""
    try:
        spec = SubsetSpec(**manifest["spec"])
    except (HaetError, TypeError) as exc:
        return f"its spec describes no draw ({exc})"
    if spec.sha256() != manifest["spec_sha256"]:
        return "its spec does not hash to its spec_sha256"
    again = make_manifest(dataclasses.replace(spec, root=root) if root is not None else spec, manifest["run"])
    for key in ("subset_seed", "class_names"):
        if again[key] != manifest[key]:
            return f"its {key} is not what spec, seed and run {manifest['run']} give"
    for role in ("train", "validation"):
        if again[role]["indices"] != manifest[role]["indices"]:
            return f"its {role} indices are not the ones spec, seed and run {manifest['run']} draw"
    return None


def _edited_selection(manifest: dict, root: str | None) -> bool:
    """Whether the manifest's indices or seeds differ from what its own spec draws for its run (a hand edit), as
    opposed to the same draw now hashing differently (the data changed). Run only on the error path."""
    try:
        if SubsetSpec(**manifest["spec"]).sha256() != manifest["spec_sha256"]:
            return True
        again = make_manifest(SubsetSpec(**(manifest["spec"] | {"root": root})), manifest["run"])
    except (HaetError, TypeError):
        return True  # the spec itself no longer describes a draw
    return any(again[key] != manifest[key] for key in ("subset_seed", "class_names")) or any(
        again[role]["indices"] != manifest[role]["indices"] for role in ("train", "validation")
    )


def load_subset(manifest: dict, root: str | None = None) -> Subset:
    """The images a manifest names, checked against its sha256: stale or changed data is refused.

    root overrides the manifest's dataset root (the same data moved to another machine).
    """
    dataset = manifest["dataset"]
    data_root = dataset["root"] if root is None else root
    class_names = tuple(manifest["class_names"])
    parts = []
    for role in ("train", "validation"):
        part = manifest[role]
        split = load_split(dataset["name"], part["split"], data_root, **dataset["options"])
        indices = np.asarray(part["indices"], dtype=np.int64)
        images, labels = split.images(indices), split.labels[indices]
        if _images_digest(images) != part["images_sha256"] or _labels_digest(labels) != part["labels_sha256"]:
            if _edited_selection(manifest, data_root):
                raise DataError(
                    f"the {role} part of this manifest is not what its spec and run draw: the manifest was edited "
                    "by hand (and its hash recomputed); make it again with `haet data subset`"
                )
            raise DataError(
                f"the {role} images of {dataset['name']} at {data_root} are not the ones this manifest was "
                "made from (sha256 differs): the data changed since; make the manifest again"
            )
        parts.append(LabeledImages(images=images, labels=labels, class_names=class_names))
    return Subset(train=parts[0], validation=parts[1], manifest=manifest)
