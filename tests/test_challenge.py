"""Challenge mode (haet challenge run): a submission trains in its own process under a hard deadline, sees no test
data, and each way it can fail ends as its own outcome in a record the audit reads; the references learn."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from haet.challenge import example_submission as example
from haet.challenge.references import paper, winner
from haet.cli import main
from haet.data.subsets import SubsetSpec, load_subset, make_manifest, read_manifest, write_manifest
from haet.records import read_run_record
from haet.train import Budget

EXAMPLE = Path(__file__).resolve().parent.parent / "haet" / "challenge" / "example_submission.py"

# A model any submission below can hand in: the most frequent training label, as a plain dict (not a Module).
MAJORITY = """
import numpy as np

def majority(labels):
    return {"label": int(np.bincount(labels).argmax())}
"""


@pytest.fixture(scope="module")
def manifest_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("challenge") / "subset.json"
    write_manifest(make_manifest(SubsetSpec("digits", train_per_class=30, val_per_class=20)), path)
    return path


def submission(tmp_path: Path, name: str, train_body: str, predict_body: str = "return np.full(len(images), "
               "model['label'])") -> Path:  # fmt: skip
    path = tmp_path / f"{name}.py"
    path.write_text(
        MAJORITY
        + "\ndef train(images, labels, num_classes, device, deadline, hand_in):\n"
        + textwrap.indent(textwrap.dedent(train_body), "    ")
        + "\n\ndef predict(model, images):\n    "
        + predict_body
        + "\n"
    )
    return path


def run(capsys, manifest: Path, spec: Path | str, out: Path, budget_s: float = 3, *extra: str) -> tuple[int, str]:
    code = main(["challenge", "run", "--submission", str(spec), "--manifest", str(manifest), "--out", str(out),
                 "--budget-s", str(budget_s), "--grace-s", "1", "--threads", "1", *extra])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_example_submission_learns_and_its_record_names_its_file_and_model(manifest_file, tmp_path, capsys):
    work = tmp_path / "work"
    code, output = run(
        capsys, manifest_file, EXAMPLE, tmp_path / "run0.json", 4, "--name", "example", "--work", str(work)
    )
    assert code == 0, output
    record = read_run_record(tmp_path / "run0.json")
    entry = record["submission"]
    assert entry["outcome"] == "finished" and entry["enforcement"] == "hard-kill" and entry["models_handed_in"] >= 1
    assert entry["sandbox"] == "bwrap" and record["budget"]["clock"] == "cpu" and entry["limits"]["cores"] == 1
    assert entry["files"] == [{"path": str(EXAMPLE), "sha256": hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()}]
    assert record["model"]["name"] == "example" and record["model"]["params"] == 20234 and record["model"]["macs"] > 0
    # the score is the last handed-in model's on the subset's test images (how well it learnt in 4 s depends on
    # the machine's load: tests/test_challenge.py holds the references' learning to epoch budgets)
    subset = load_subset(read_manifest(manifest_file))
    predictions = example.predict(torch.load(work / "kept" / "model.pt", weights_only=False), subset.validation.images)
    assert record["metrics"]["val_acc_final"] == (predictions == subset.validation.labels).mean()
    assert 0 < entry["last_hand_in_s"] <= 4 and entry["test_images"] == 200
    assert "example: finished (train returned" in output  # before the deadline, or in its grace
    assert f"; accuracy {record['metrics']['val_acc_final']:.4f} on 200 test images" in output


@pytest.mark.parametrize(
    ("name", "train_body", "predict_body", "outcome", "message"),
    [
        ("crashes", "raise RuntimeError('out of ideas')", None, "crashed",
         "train exited with code 1: RuntimeError: out of ideas (its output's last lines are in the record)"),
        ("never_hands_in", "pass", None, "no-model", "it handed in no model before the deadline"),
        ("hands_in_late", "while deadline.now() < deadline + 0.2:\n    pass\nhand_in(majority(labels))", None,
         "no-model", "handed in no model"),
        ("wrong_shape", "hand_in(majority(labels))", "return np.zeros((len(images), 1))", "bad-predict",
         "predict returned shape (200, 1) of float64 for 200 images; it must return 200 class indices"),
        ("predict_raises", "hand_in(majority(labels))", "raise ValueError('no')", "bad-predict",
         "predict exited with code 1"),
    ],
)  # fmt: skip
def test_each_way_a_submission_fails_is_its_own_one_line_outcome(
    manifest_file, tmp_path, capsys, name, train_body, predict_body, outcome, message
):
    path = submission(tmp_path, name, train_body, *([predict_body] if predict_body else []))
    code, output = run(capsys, manifest_file, path, tmp_path / "run0.json")
    assert code == 0, output  # the study goes on
    record = read_run_record(tmp_path / "run0.json")
    assert record["submission"]["outcome"] == outcome and message in record["submission"]["message"]
    assert record["metrics"]["val_acc_final"] == 0.0 and record["model"]["params"] is None
    assert len(output.strip().splitlines()) == 1 and outcome in output
    if name == "crashes":
        assert "RuntimeError: out of ideas" in record["submission"]["output_tail"][-1]
    if name == "hands_in_late":
        assert record["submission"]["late_hand_ins"] == 1


def test_a_submission_past_the_deadline_is_killed_with_its_children_and_its_last_model_scored(
    manifest_file, tmp_path, capsys
):
    token = f"{time.time_ns() % 10**6 + 1000}.25"  # sleep's seconds: a process no other test has
    body = f"""
    import subprocess
    hand_in(majority(labels))
    subprocess.Popen(["sleep", "{token}"])
    while True:
        pass
    """
    started = time.monotonic()
    code, output = run(capsys, manifest_file, submission(tmp_path, "overstays", body), tmp_path / "run0.json", 2)
    assert code == 0 and time.monotonic() - started < 60, output
    record = read_run_record(tmp_path / "run0.json")
    assert record["submission"]["outcome"] == "killed-at-deadline" and record["budget"]["stopped_by"] == "budget"
    assert record["metrics"]["val_acc_final"] == pytest.approx(0.1)  # the majority label: one class in ten
    assert record["budget"]["budget_elapsed_s"] >= 2  # the CPU seconds it spent, as the supervisor counted them
    assert not any(f"sleep\0{token}".encode() in path.read_bytes() for path in Path("/proc").glob("[0-9]*/cmdline"))


def test_a_sleeping_submission_on_the_cpu_clock_meets_the_wall_limit(manifest_file, tmp_path):
    """CPU seconds do not pass while it waits: the wall-clock backstop ends it, with its model."""
    from haet.challenge.runner import run_submission

    body = "import time\nhand_in(majority(labels))\ntime.sleep(600)"
    subset = load_subset(read_manifest(manifest_file))
    record, _ = run_submission("waits", str(submission(tmp_path, "waits", body)), subset, tmp_path / "work",
                               budget_s=2, grace_s=1, wall_limit_s=3)  # fmt: skip
    assert record["submission"]["outcome"] == "wall-limit" and record["submission"]["train_wall_s"] >= 3
    assert record["metrics"]["val_acc_final"] == pytest.approx(0.1)


def test_predict_has_its_own_time_limit_counted_from_its_own_start(manifest_file, tmp_path):
    """A train that used its whole budget leaves predict its full predict_s (once, predict's limit was counted from
    train's start: at the paper's 600 s budget every predict was killed at once). CPU seconds, so that a loaded
    machine's slow start of predict's process does not eat its limit."""
    from haet.challenge.runner import run_submission

    body = "hand_in(majority(labels))\nwhile deadline.now() < deadline - 0.2:\n    pass"
    subset = load_subset(read_manifest(manifest_file))
    record, _ = run_submission("slow", str(submission(tmp_path, "slow", body)), subset, tmp_path / "work", budget_s=6,
                               grace_s=1, threads=1, predict_s=5)  # fmt: skip
    assert record["submission"]["outcome"] == "finished", record["submission"]["message"]
    assert record["budget"]["budget_elapsed_s"] > 5  # more than predict_s: counted from train, predict had none left
    assert record["metrics"]["val_acc_final"] == pytest.approx(0.1)


def test_train_sees_no_test_data_and_predict_no_labels(manifest_file, tmp_path, capsys):
    """The train process's folder holds the training data alone; test images arrive after it ended, unlabelled."""
    body = """
    import sys, os
    hand_in({"label": 0, "seen": sorted(os.listdir(sys.argv[2])), "count": len(labels)})
    """
    predict = "import sys, os, json; open('seen-by-predict.json', 'w').write(json.dumps(sorted(os.listdir(sys.argv[2])))); open('test-arrays.json', 'w').write(json.dumps(np.load('test.npz').files)); return np.zeros(len(images), dtype=int)"  # noqa: E501
    path = submission(tmp_path, "peeks", body, predict)
    work = tmp_path / "work"
    code, output = run(capsys, manifest_file, path, tmp_path / "run0.json", 3, "--work", str(work))
    assert code == 0, output
    model = torch.load(work / "kept" / "model.pt", weights_only=False)
    assert model["count"] == 300 and not any("test" in name for name in model["seen"])
    seen_by_predict = json.loads((work / "predict-files" / "seen-by-predict.json").read_text())
    assert "test.npz" in seen_by_predict and "train.npz" not in seen_by_predict
    assert json.loads((work / "predict-files" / "test-arrays.json").read_text()) == ["images"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def predict(model, images):\n    return images\n", "defines no function train; it must define train("),
        ("def train(images, labels):\n    pass\ndef predict(model, images):\n    pass\n",
         "train(images, labels) cannot be called as train(images, labels, num_classes, device, deadline, hand_in)"),
        ("import no_such_package_here\n", "importing it raised ModuleNotFoundError"),
    ],
)  # fmt: skip
def test_a_submission_without_the_interface_is_one_line_naming_the_module_and_the_fix(
    manifest_file, tmp_path, capsys, source, message
):
    path = tmp_path / "broken.py"
    path.write_text(source)
    code, output = run(capsys, manifest_file, path, tmp_path / "run0.json")
    assert code == 2 and output.count("\n") == 1, output
    assert f"haet: error: submission {path}: " in output and message in output
    assert not (tmp_path / "run0.json").exists()


@pytest.fixture(scope="module")
def digits_100() -> object:
    return load_subset(make_manifest(SubsetSpec("digits", train_per_class=100, val_per_class=50)))


def test_the_winners_method_learns_on_the_cpu(digits_100):
    """12 epochs in its own (epoch-scheduled) form, at 16x16 to be quick on a CPU core: well past chance."""
    torch.manual_seed(0)
    models = []
    halved = digits_100.train.images[:, ::2, ::2]
    winner.train_method(halved, digits_100.train.labels, 10, "cpu", time.time() + 600, models.append, epochs=12)
    predictions = winner.predict(models[-1], digits_100.validation.images[:, ::2, ::2])
    assert len(models) == 12 and predictions.dtype == np.int64
    assert (predictions == digits_100.validation.labels).mean() > 0.7


def test_the_papers_submission_learns_on_the_cpu(digits_100):
    """Two digit classes for 40 epochs of one step (the paper's SENet-18 is slow on a CPU; an epoch budget, so the
    machine's load cannot shorten it): well past chance."""
    keep, test = digits_100.train.labels < 2, digits_100.validation.labels < 2
    torch.manual_seed(0)
    models = []
    budget = Budget(seconds=None, max_epochs=40, mode="competition")
    paper.train_method(digits_100.train.images[keep], digits_100.train.labels[keep], 2, "cpu", models.append, budget)
    assert len(models) == 40
    predictions = paper.predict(models[-1], digits_100.validation.images[test])
    assert (predictions == digits_100.validation.labels[test]).mean() > 0.8


@pytest.fixture(scope="module")
def leaderboard_subset() -> object:
    """The default study's leaderboard data: digits at 16x16, 60 training and 50 test images a class."""
    return load_subset(make_manifest(SubsetSpec("digits", options={"size": 16}, train_per_class=60, val_per_class=50)))


def test_on_a_busy_machine_the_references_get_the_same_compute_and_the_winners_method_learns(
    leaderboard_subset, tmp_path
):
    """The CPU clock counts the sandbox's CPU seconds, so two busy processes a core beside it make a run slower on
    the wall clock and change neither what it trains nor how it ends."""
    from haet.challenge.runner import run_submission

    def score(entry: str, budget_s: float, name: str) -> dict:
        record, _ = run_submission(entry, entry, leaderboard_subset, tmp_path / name, budget_s, device="cpu")
        return record

    quiet = score("haet-winner", 30, "quiet")
    # each busy process a session of its own, so that the kernel's autogroups do not pool them into one share
    busy_processes = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL, start_new_session=True)
                      for _ in range(2 * os.cpu_count())]  # fmt: skip
    try:
        busy = score("haet-winner", 30, "busy")
        paper = score("haet-paper", 30, "paper")
    finally:
        for process in busy_processes:
            process.kill()
            process.wait()
    # the load was real: the busy run had less than its one core (a quiet one has about all of it)
    assert busy["submission"]["train_wall_s"] > 1.3 * busy["submission"]["train_cpu_s"]
    for record in (quiet, busy):
        assert record["submission"]["outcome"] in ("finished", "killed-at-deadline"), record["submission"]["message"]
        assert record["metrics"]["val_acc_final"] > 0.5  # chance: 0.1
    assert abs(busy["submission"]["models_handed_in"] - quiet["submission"]["models_handed_in"]) <= 1
    assert busy["submission"]["outcome"] == quiet["submission"]["outcome"]
    # the paper's SENet-18 hands in its first epoch's model inside the budget even on a loaded machine
    assert paper["submission"]["models_handed_in"] >= 1 and paper["submission"]["outcome"] != "no-model"
