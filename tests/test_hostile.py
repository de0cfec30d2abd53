"""Challenge mode against hostile submissions (tests/hostile/): each class of hole a submission could use (reading
the answers, code in the scorer, escaping the kill, owning the clock, hostile outputs, unbounded resources) is met
by the sandbox and the supervisor; the harness keeps its score and its record, and the study goes on."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import hostile, processes_with

from haet.challenge.runner import run_submission
from haet.challenge.sandbox import Limits
from haet.cli import main
from haet.data.subsets import SubsetSpec, load_subset, make_manifest, write_manifest
from haet.records import read_run_record

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def manifest_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "subset.json"
    write_manifest(make_manifest(SubsetSpec("digits", train_per_class=20, val_per_class=20)), path)
    return path


@pytest.fixture(scope="module")
def subset(manifest_file):
    from haet.data.subsets import read_manifest

    return load_subset(read_manifest(manifest_file))


def run(path: Path, subset, work: Path, budget_s: float = 2.0, **options) -> dict:
    body, _ = run_submission(path.stem, str(path), subset, work, budget_s, grace_s=1.0, device="cpu", **options)
    return body


def test_a_submission_cannot_read_the_manifest_the_results_home_or_the_datasets_source(manifest_file, subset, tmp_path):
    home_file = Path.home() / f".haet-hostile-{os.getpid()}"
    home_file.write_text("a secret of the harness's user")
    try:
        path = hostile(tmp_path, "reads_answers", MANIFEST=manifest_file, REPOSITORY=REPOSITORY, HOME_FILE=home_file)
        record = run(path, subset, tmp_path / "work")
    finally:
        home_file.unlink()
    assert record["submission"]["outcome"] == "finished", record["submission"]["message"]
    found = torch.load(tmp_path / "work" / "kept" / "model.pt", weights_only=False)["found"]
    assert found == []  # not the manifest, the README, results/, $HOME, nor scikit-learn's digits file
    assert record["metrics"]["val_acc_final"] == pytest.approx(0.1)  # its fallback: class 0 for every image


def test_a_submission_runs_no_code_in_the_harness_and_cannot_patch_its_score(manifest_file, subset, tmp_path):
    marker = tmp_path / "imported-here"
    path = hostile(tmp_path, "patches_harness", MARKER=marker)
    code = main(["challenge", "run", "--submission", str(path), "--manifest", str(manifest_file), "--out",
                 str(tmp_path / "run0.json"), "--budget-s", "2", "--grace-s", "1"])  # fmt: skip
    assert code == 0 and not marker.exists()
    record = read_run_record(tmp_path / "run0.json")  # the audit's check of the record's hashes holds
    assert record["metrics"]["val_acc_final"] == pytest.approx(0.1)
    assert record["notes"][0].startswith("A submission's record")


def test_a_model_that_runs_code_when_unpickled_runs_it_only_in_the_predict_sandbox(subset, tmp_path):
    marker = tmp_path / "unpickled-here"
    record = run(hostile(tmp_path, "pickle_runs_code", MARKER=marker), subset, tmp_path / "work")
    assert not marker.exists()
    assert record["submission"]["outcome"] == "finished" and record["model"]["params"] is None


def test_a_double_forked_daemon_dies_with_the_stage_and_cannot_swap_the_model(subset, tmp_path):
    token = f"{time.time_ns() % 10**6 + 1000}.5"  # sleep's seconds: a process of ours no other has
    record = run(hostile(tmp_path, "daemon", TOKEN=token), subset, tmp_path / "work")
    assert record["submission"]["outcome"] == "finished", record["submission"]["message"]
    assert processes_with(f"sleep\0{token}") == []
    assert (tmp_path / "work" / "predict-files" / "tag.txt").read_text() == "on-time"


def test_the_supervisor_owns_the_clock_a_model_written_past_the_budget_is_late(subset, tmp_path):
    record = run(hostile(tmp_path, "rewrites_clock"), subset, tmp_path / "work", budget_s=1.5)
    entry = record["submission"]
    assert entry["outcome"] == "no-model" and entry["models_handed_in"] == 0 and entry["late_hand_ins"] >= 1
    assert record["metrics"]["val_acc_final"] == 0.0
    assert record["budget"]["clock"] == "cpu" and record["budget"]["budget_elapsed_s"] >= 1.5


@pytest.mark.parametrize("mode", ["symlink", "fifo", "pickle", "huge"])
def test_a_swapped_predictions_file_is_a_bad_predict_never_an_error_of_the_harness(
    manifest_file, tmp_path, capsys, mode
):
    path = hostile(tmp_path, "swaps_predictions", MODE=mode)
    code = main(["challenge", "run", "--submission", str(path), "--manifest", str(manifest_file), "--out",
                 str(tmp_path / "run0.json"), "--budget-s", "2", "--grace-s", "1"])  # fmt: skip
    output = capsys.readouterr()
    assert code == 0, output.err
    entry = read_run_record(tmp_path / "run0.json")["submission"]
    assert entry["outcome"] == "bad-predict" and "predict" in entry["message"], entry["message"]


def test_a_fork_bomb_meets_the_process_limit_and_its_model_is_still_scored(subset, tmp_path):
    record = run(hostile(tmp_path, "fork_bomb"), subset, tmp_path / "work", limits=Limits(processes=64))
    entry = record["submission"]
    assert entry["outcome"] == "process-limit" and "64 processes" in entry["message"], entry["message"]
    assert record["metrics"]["val_acc_final"] == pytest.approx(0.1)


def test_a_memory_hog_meets_the_memory_limit_named_in_its_outcome(subset, tmp_path):
    record = run(hostile(tmp_path, "memory_hog"), subset, tmp_path / "work", limits=Limits(memory_bytes=1 * 2**30))
    entry = record["submission"]
    assert entry["outcome"] == "out-of-memory" and "memory limit of 1 GiB" in entry["message"], entry["message"]
    assert record["metrics"]["val_acc_final"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("mode", "outcome", "limits"),
    [("one-file", "file-too-large", Limits(file_bytes=32 * 2**20)), ("many-files", "disk-full",
                                                                     Limits(disk_bytes=96 * 2**20))],
)  # fmt: skip
def test_a_submission_that_writes_without_end_meets_its_file_and_disk_limits(subset, tmp_path, mode, outcome, limits):
    record = run(hostile(tmp_path, "fills_disk", MODE=mode), subset, tmp_path / "work", limits=limits)
    assert record["submission"]["outcome"] == outcome, record["submission"]["message"]
    assert record["metrics"]["val_acc_final"] == pytest.approx(0.1)


def test_a_submission_cannot_reach_a_server_on_the_machines_loopback(subset, tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve() -> None:
        end = time.monotonic() + 60  # bounded: stops by itself
        while not stop.is_set() and time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        record = run(hostile(tmp_path, "network", PORT=server.getsockname()[1]), subset, tmp_path / "work")
    finally:
        stop.set()
        thread.join()
        server.close()
    assert record["submission"]["outcome"] == "finished", record["submission"]["message"]
    assert torch.load(tmp_path / "work" / "kept" / "model.pt")["connected"] is False and accepted == []


def test_an_unsandboxed_run_says_so_in_its_record_and_in_red_on_the_leaderboard(manifest_file, subset, tmp_path):
    from haet import HaetError
    from haet.report.tables import make_table

    path = hostile(tmp_path, "patches_harness", MARKER=tmp_path / "marker")
    with pytest.raises(HaetError, match="the CPU clock needs the sandbox's cgroup"):
        run(path, subset, tmp_path / "work", sandbox="none")
    common = ["--manifest", str(manifest_file), "--budget-s", "2", "--grace-s", "1", "--clock", "wall"]
    assert main(["challenge", "run", "--submission", str(path), "--unsandboxed", "--name", "loose", "--out",
                 str(tmp_path / "loose.json"), *common]) == 0  # fmt: skip
    assert (tmp_path / "marker").exists()  # with the harness's rights, its import left its mark: nothing held it
    assert main(["challenge", "run", "--submission", str(path), "--name", "boxed", "--out",
                 str(tmp_path / "boxed.json"), *common]) == 0  # fmt: skip
    loose = read_run_record(tmp_path / "loose.json")
    assert loose["submission"]["sandbox"] == "none" and loose["budget"]["clock"] == "wall"
    table = make_table("leaderboard", {"loose": [str(tmp_path / "loose.json")],
                                       "boxed": [str(tmp_path / "boxed.json")]}, tmp_path / "board")  # fmt: skip
    sandboxes = {row["label"]: row["sandbox"] for row in table["rows"]}
    assert sandboxes == {"loose": "UNSANDBOXED (the harness's rights)", "boxed": "bwrap"}
    assert any(note.startswith("WARNING: loose ran unsandboxed") for note in table["notes"])
    assert main(["report", "audit", str(tmp_path / "board.json")]) == 0
    assert np.isclose(loose["metrics"]["val_acc_final"], 0.1)
