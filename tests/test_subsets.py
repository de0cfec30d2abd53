"""Subsets: seeded, stratified, byte-stable manifests that refuse stale data and edits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CIFAR_FOLDER, needs_real_cifar, write_imagefolder

from haet import HaetError
from haet.cli import main
from haet.data import DataError
from haet.data.subsets import (
    SubsetSpec,
    derive_seed,
    load_subset,
    make_manifest,
    read_manifest,
    write_manifest,
)

DIGITS = SubsetSpec("digits", train_per_class=40, val_per_class=10)


def test_same_seed_gives_the_same_manifest_byte_for_byte(tmp_path):
    first = tmp_path / "a.json"
    second = tmp_path / "b.json"
    write_manifest(make_manifest(DIGITS, run=3), first)
    write_manifest(make_manifest(DIGITS, run=3), second)
    assert first.read_bytes() == second.read_bytes()


def test_runs_and_seeds_draw_different_subsets():
    runs = [make_manifest(DIGITS, run=k) for k in range(3)]
    train_sets = [tuple(m["train"]["indices"]) for m in runs]
    assert len(set(train_sets)) == 3
    assert len({m["subset_seed"] for m in runs}) == 3
    other_seed = make_manifest(SubsetSpec("digits", train_per_class=40, val_per_class=10, seed=1), run=0)
    assert other_seed["train"]["indices"] != runs[0]["train"]["indices"]
    assert derive_seed(0, 1) == runs[1]["subset_seed"]


def test_subsets_are_stratified_and_record_what_they_hold():
    manifest = make_manifest(DIGITS, run=0)
    assert manifest["train"]["class_counts"] == {str(d): 40 for d in range(10)}
    assert manifest["validation"]["class_counts"] == {str(d): 10 for d in range(10)}
    assert manifest["train"]["count"] == 400 and manifest["validation"]["split"] == "test"
    assert manifest["validation_from_test_split"] is True
    assert "test split" in manifest["notes"][0]


def test_validation_from_the_train_split_is_disjoint_from_train():
    spec = SubsetSpec("digits", train_per_class=100, val_per_class=24, val_split="train")
    manifest = make_manifest(spec, run=0)
    train, val = set(manifest["train"]["indices"]), set(manifest["validation"]["indices"])
    assert not train & val and len(val) == 240
    assert manifest["validation_from_test_split"] is False and manifest["notes"] == []


def test_loaded_subset_matches_the_manifest():
    manifest = make_manifest(DIGITS, run=0)
    subset = load_subset(manifest)
    assert subset.train.images.shape == (400, 32, 32, 3)
    assert np.bincount(subset.validation.labels).tolist() == [10] * 10


def test_changed_data_is_refused(tmp_path):
    write_imagefolder(tmp_path, {"a": 6, "b": 6})
    write_imagefolder(tmp_path, {"a": 3, "b": 3}, split="test", seed=1)
    spec = SubsetSpec("imagefolder", root=str(tmp_path), train_per_class=4, val_per_class=2)
    manifest = make_manifest(spec)
    load_subset(manifest)  # unchanged data loads
    chosen = manifest["train"]["indices"][0]
    victim = sorted((tmp_path / "train" / "a").iterdir())[chosen]
    write_imagefolder(tmp_path / "new", {"a": 1}, seed=7)
    (tmp_path / "new" / "train" / "a" / "0000.png").replace(victim)
    with pytest.raises(DataError, match=r"not the ones this manifest was made from"):
        load_subset(manifest)


def test_edited_manifest_is_refused(tmp_path):
    path = tmp_path / "m.json"
    write_manifest(make_manifest(DIGITS), path)
    manifest = json.loads(path.read_text())
    manifest["train"]["indices"][0] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(HaetError, match=r"edited after it was written"):
        read_manifest(path)


def test_a_hand_edited_manifest_with_a_recomputed_hash_is_called_edited_not_changed_data(tmp_path):
    manifest = make_manifest(DIGITS)
    taken = set(manifest["train"]["indices"])
    manifest["train"]["indices"][0] = next(i for i in range(1000) if i not in taken)  # another image
    path = tmp_path / "m.json"
    write_manifest(manifest, path)  # the hash recomputed, as a careful forger would
    with pytest.raises(DataError, match=r"not what its spec and run draw: the manifest was edited by hand"):
        load_subset(read_manifest(path))


def test_too_few_images_is_a_clear_error_and_writes_nothing(tmp_path):
    out = tmp_path / "m.json"
    code = main(["data", "subset", "--dataset", "digits", "--train-per-class", "126", "--out", str(out)])
    assert code == 2 and not out.exists()
    with pytest.raises(DataError, match=r"class '8' has 124 images in split 'train' but the subset needs 126"):
        make_manifest(SubsetSpec("digits", train_per_class=126))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("train_per_class", 0, "positive integer"),
        ("seed", -1, "non-negative"),
        ("val_split", "val", "one of"),
    ],
)
def test_bad_specs_are_refused(field, value, message):
    with pytest.raises(DataError, match=message):
        SubsetSpec("digits", **{field: value})


def test_cli_writes_a_manifest_from_a_config(tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text("data: {dataset: digits}\nsubsets: {train_per_class: 20, val_per_class: 5, seed: 4}\n")
    out = tmp_path / "subsets" / "run1.json"
    assert main(["data", "subset", "--config", str(config), "--run", "1", "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert manifest["seed"] == 4 and manifest["run"] == 1 and manifest["train"]["count"] == 200
    assert main(["data", "verify", str(out)]) == 0
    assert "match their sha256" in capsys.readouterr().out


def test_cli_names_an_unknown_config_key(tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text("data: {dataset: digits}\nsubsets: {train_per_clas: 20}\n")
    assert main(["data", "subset", "--config", str(config), "--out", str(tmp_path / "m.json")]) == 2
    assert "subsets.train_per_clas is not known" in capsys.readouterr().err


@needs_real_cifar
def test_paper_sized_subset_of_real_cifar10(tmp_path):
    spec = SubsetSpec("imagefolder", root=str(CIFAR_FOLDER), train_per_class=500, val_per_class=100)
    manifest = write_manifest(make_manifest(spec, run=0), tmp_path / "m.json")
    assert manifest["train"]["count"] == 5000 and manifest["validation"]["count"] == 1000
    subset = load_subset(read_manifest(tmp_path / "m.json"))
    assert subset.train.images.shape == (5000, 32, 32, 3)
    assert subset.train.class_names[-1] == "truck"


def test_data_verify_draws_the_manifest_again_and_refuses_a_crafted_one_whose_hashes_all_agree(tmp_path, capsys):
    """issue 21: one image a class repeated, images, labels, counts and the content hash recomputed, verified ok
    and trained. A manifest is a function of its dataset, spec, seed and run: verify draws it again."""
    from haet.data import load_split
    from haet.data.subsets import _part

    manifest = make_manifest(DIGITS)
    split = load_split("digits", "train", None)
    first_of_class = {}
    for index in manifest["train"]["indices"]:
        first_of_class.setdefault(int(split.labels[index]), index)
    crafted = [first_of_class[int(split.labels[index])] for index in manifest["train"]["indices"]]
    manifest["train"] = _part(split, np.asarray(crafted))  # every hash of the part recomputed, as a forger would
    path = tmp_path / "crafted.json"
    write_manifest(manifest, path)
    load_subset(read_manifest(path))  # its images match its hashes: loading alone cannot tell
    assert main(["data", "verify", str(path)]) == 2
    assert "not the subset its spec draws: its train indices are not the ones spec, seed and run 0 draw" in (
        capsys.readouterr().err
    )
    honest = tmp_path / "honest.json"
    write_manifest(make_manifest(DIGITS), honest)
    assert main(["data", "verify", str(honest)]) == 0
    assert "drawn again from its spec, seed and run: the same indices" in capsys.readouterr().out
