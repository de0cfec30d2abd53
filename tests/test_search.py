"""NOMAD through the harness: finds known optima, survives crashes and hangs, resumes on the same path."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch
import yaml
from analytic_search import ConstrainedQuadratic
from conftest import REPO

from haet.cli import main
from haet.data.subsets import SubsetSpec, make_manifest, write_manifest
from haet.files import read_record
from haet.search import HpoProblem, NasProblem, SearchError, SearchSettings, Variable, run_search
from haet.search.gpus import given_gpus, gpu_slots
from haet.search.nomad_process import FAULT_VARIABLE
from haet.search.problems import training_command
from haet.train import TrainConfig, read_run_record

SCRIPT = str(REPO / "tests" / "analytic_search.py")


def logged_points(out_dir: Path) -> list[list[float]]:
    lines = (out_dir / "evaluations.jsonl").read_text().splitlines()[1:]
    return [json.loads(line)["point"] for line in lines]


def wait_for_evaluations(log: Path, count: int) -> None:
    """Poll a running search's log until it holds more than `count` lines (header included), for at most 60 s."""
    deadline = time.monotonic() + 60
    while not (log.exists() and len(log.read_text().splitlines()) > count) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("constraint", ["EB", "PB"])
def test_nomad_finds_the_constrained_optimum_over_a_real_and_an_integer(tmp_path, constraint):
    problem = ConstrainedQuadratic(constraint=constraint)
    result = run_search(problem, SearchSettings(max_evaluations=80, seed=3), tmp_path)
    assert result.status == "finished"
    assert result.best["point"] == pytest.approx([1.6, 2.0])
    summary = read_record(tmp_path / "summary.json")
    assert summary["best"]["point"] == result.best["point"] and summary["evaluations"] == len(result.evaluations)
    assert (tmp_path / "history.csv").read_text().startswith("index,x,n,objective,feasible,status")


def test_blocks_are_evaluated_together_and_still_find_the_optimum(tmp_path):
    problem = ConstrainedQuadratic()
    result = run_search(problem, SearchSettings(max_evaluations=80, seed=3, block_size=4), tmp_path)
    assert max(problem.blocks) == 4
    assert result.best["point"] == pytest.approx([1.6, 2.0])


def test_rerunning_a_finished_search_replays_it_and_evaluates_nothing(tmp_path):
    first = run_search(ConstrainedQuadratic(), SearchSettings(max_evaluations=30, seed=3), tmp_path)
    problem = ConstrainedQuadratic()
    again = run_search(problem, SearchSettings(max_evaluations=30, seed=3), tmp_path)
    assert problem.blocks == [] and again.replayed == len(first.evaluations)
    assert again.evaluations == first.evaluations


def test_a_killed_search_resumes_on_the_same_path_without_redoing_work(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, SCRIPT, str(reference), "40"], check=True, capture_output=True)
    crashed = tmp_path / "crashed"
    harness = subprocess.Popen([sys.executable, SCRIPT, str(crashed), "40", "0.05"])
    wait_for_evaluations(crashed / "evaluations.jsonl", 12)
    harness.kill()  # SIGKILL: no clean-up of any kind
    harness.wait()
    done_before = len(logged_points(crashed))
    assert 12 <= done_before < len(logged_points(reference))
    subprocess.run([sys.executable, SCRIPT, str(crashed), "40"], check=True, capture_output=True)
    assert logged_points(crashed) == logged_points(reference)  # same path, same seed
    calls = [tuple(json.loads(line)) for line in (tmp_path / "crashed-calls.jsonl").read_text().splitlines()]
    assert len(calls) - len(set(calls)) <= 1  # nothing logged was evaluated again (one may have been in flight)


def test_ctrl_c_stops_after_the_current_evaluation_with_a_consistent_log(tmp_path):
    out = tmp_path / "search"
    harness = subprocess.Popen([sys.executable, SCRIPT, str(out), "40", "0.2"])
    log = out / "evaluations.jsonl"
    wait_for_evaluations(log, 3)
    harness.send_signal(signal.SIGINT)
    assert harness.wait(timeout=30) == 130
    entries = [json.loads(line) for line in log.read_text().splitlines()[1:]]
    assert [entry["index"] for entry in entries] == list(range(len(entries)))
    assert read_record(out / "summary.json")["status"] == "interrupted"


def test_a_second_search_on_the_same_folder_is_refused_and_names_the_holder(tmp_path):
    out = tmp_path / "search"
    first = subprocess.Popen([sys.executable, SCRIPT, str(out), "40", "0.1"])
    try:
        wait_for_evaluations(out / "evaluations.jsonl", 2)
        with pytest.raises(SearchError, match=rf"is in use by another search \(pid {first.pid} on "):
            run_search(ConstrainedQuadratic(), SearchSettings(max_evaluations=40, seed=3), out)
    finally:
        first.kill()
        first.wait()
    entries = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()[1:]]
    assert [entry["index"] for entry in entries] == list(range(len(entries)))  # nothing logged twice
    resumed = run_search(ConstrainedQuadratic(), SearchSettings(max_evaluations=40, seed=3), out)  # lock gone
    assert resumed.status == "finished"


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("segv@5", r"process died \(exit code -11\) after 5 logged"),
        ("hang@3", r"no answer for 2 s and was stopped as hung after 3"),
    ],
)
def test_nomad_crash_or_hang_cannot_take_the_harness_down(tmp_path, monkeypatch, fault, message):
    monkeypatch.setenv(FAULT_VARIABLE, fault)
    settings = SearchSettings(max_evaluations=30, seed=3, nomad_timeout_s=2)
    with pytest.raises(SearchError, match=message):
        run_search(ConstrainedQuadratic(), settings, tmp_path)
    monkeypatch.delenv(FAULT_VARIABLE)
    logged = len(logged_points(tmp_path))
    problem = ConstrainedQuadratic()
    resumed = run_search(problem, settings, tmp_path)
    assert resumed.replayed >= logged and resumed.status == "finished"


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        (Variable("x", "R", 0.015, 2.0, 1.0, 0.01), r"lower 0.015 is not a multiple of its granularity 0.01"),
        (Variable("x", "R", 0.0, 2.0, 3.0), r"x0 3.0 lies outside \[0.0, 2.0\]"),
        (Variable("x", "I", 0, 2.5, 1), r"integer variable's upper 2.5 is not whole"),
        (Variable("x", "R", 2.0, 1.0, 1.5), r"lower bound 2.0 must be below upper 1.0"),
        (Variable("x", "Z", 0, 1, 0), r"type must be R \(real\) or I \(integer\)"),
    ],
)
def test_bad_parameters_are_refused_in_python_before_nomad_sees_them(tmp_path, variable, message):
    problem = ConstrainedQuadratic()
    problem.variables = [variable, problem.variables[1]]
    with pytest.raises(SearchError, match=message):
        run_search(problem, SearchSettings(max_evaluations=5), tmp_path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"nomad_timeout_s": -1}, r"search.nomad_timeout_s must be a positive number of seconds, got -1"),
        ({"max_evaluations": "10"}, r"search.max_evaluations must be an integer in \[1, 100000\]"),
        ({"block_size": 0}, r"search.block_size must be an integer in \[1, 1024\]"),
    ],
)
def test_search_settings_are_checked_before_any_work(settings, message):
    with pytest.raises(SearchError, match=message):
        SearchSettings(**settings)


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"eval_timeout_s": "soon"}, r"search.eval_timeout_s must be a positive number of seconds"),
        ({"variables": {"width": 5}}, r"search.variables.width takes a mapping of"),
        ({"variables": [1]}, r"search.variables must map variable names"),
        ({"baseline_acc": "x"}, r"search.baseline_acc must be an accuracy in \(0, 1\], got 'x'"),
        ({"metric": "best"}, r"search.metric must be one of final, best_epoch, got 'best'"),
        ({"lr_scaling": "paper_text"}, r"search.lr_scaling scales HPO's learning rates; a NAS search does not"),
        ({"share_gpus": "yes"}, r"search.share_gpus must be true or false, got 'yes'"),
    ],
)
def test_bad_search_sections_are_one_line_errors_with_no_partial_output(
    tmp_path, digits_manifest, capsys, search, message
):
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": "ResNet18", "width": 0.25}, "search": search}))
    out = tmp_path / "out"
    argv = ["search", "nas", "--config", str(config), "--manifest", str(digits_manifest), "--out-dir", str(out)]
    assert main([*argv] if "baseline_acc" in search else [*argv, "--baseline-acc", "0.5"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists() or not any(out.iterdir())


def test_a_missing_search_manifest_is_a_one_line_error(tmp_path, capsys):
    argv = ["search", "hpo", "--manifest", str(tmp_path / "none.json"), "--out-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"subset manifest {tmp_path / 'none.json'} does not exist" in error and "Traceback" not in error


def test_a_log_from_another_search_is_refused(tmp_path):
    run_search(ConstrainedQuadratic(), SearchSettings(max_evaluations=5, seed=3), tmp_path)
    with pytest.raises(SearchError, match=r"belongs to a different search"):
        run_search(ConstrainedQuadratic(), SearchSettings(max_evaluations=5, seed=4), tmp_path)


@pytest.fixture(scope="module")
def digits_manifest(tmp_path_factory):
    path = tmp_path_factory.mktemp("subsets") / "run0.json"
    write_manifest(make_manifest(SubsetSpec("digits", train_per_class=60, val_per_class=20)), path)
    return path


def test_a_training_process_that_kills_itself_is_a_failed_evaluation(tmp_path, digits_manifest, monkeypatch):
    suicide = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    monkeypatch.setattr("haet.search.problems.training_command", lambda manifest, config, out: suicide)
    base = TrainConfig.from_dict({"model": {"name": "ResNet18", "width": 0.25}, "budget": {"seconds": 1}})
    problem = NasProblem(base, [digits_manifest], tmp_path, baseline_acc=0.5)
    result = run_search(problem, SearchSettings(max_evaluations=3, seed=0), tmp_path)
    assert [entry["status"] for entry in result.evaluations] == ["failed"] * len(result.evaluations)
    assert "exit code -11" in result.evaluations[0]["reason"] and result.best is None
    # with no feasible point, NAS keeps the screened model and says so
    problem.write_choice(result, tmp_path)
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["model"]["width"] == 0.25 and "no feasible point" in best["provenance"]["fallback"]


def test_nas_keeps_the_screened_model_when_only_points_at_or_above_its_macs_were_feasible(tmp_path, digits_manifest):
    base = TrainConfig.from_dict({"model": {"name": "ResNet18", "width": 0.25}})
    problem = NasProblem(base, [digits_manifest], tmp_path, baseline_acc=0.5)
    baseline_macs = problem.baseline_macs()

    def trained(macs: int, feasible: bool) -> dict:
        return {
            "status": "trained",
            "point": [1.0, macs / baseline_macs, 1.0],
            "macs": macs,
            "accuracy": 0.6,
            "feasible": feasible,
        }

    # the baseline itself and a wider model met the accuracy (by noise); the one smaller model did not
    history = [trained(baseline_macs, True), trained(2 * baseline_macs, True), trained(baseline_macs // 2, False)]
    assert problem.best(history) is None
    summary = tmp_path / "summary.json"
    summary.write_text("{}")
    problem.write_choice(SimpleNamespace(best=None, evaluations=history, summary_path=summary), tmp_path)
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["model"] == base.to_dict()["model"]
    assert best["provenance"]["fallback"].startswith("no feasible point smaller than the baseline")
    smaller = trained(baseline_macs // 3, True)
    assert problem.best([*history, smaller]) is smaller


ORPHAN_SCRIPT = """
import sys
from pathlib import Path
import haet.search.problems as problems
from haet.search import NasProblem, SearchSettings, run_search
from haet.train import TrainConfig

out = Path(sys.argv[1])
sleeper = [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(600)"]
problems.training_command = lambda manifest, config, record: sleeper
base = TrainConfig.from_dict({"model": {"name": "ResNet18", "width": 0.25}, "budget": {"seconds": 1}})
run_search(NasProblem(base, [sys.argv[2]], out, baseline_acc=0.5), SearchSettings(max_evaluations=3), out)
"""


def _training_pid(out: Path) -> int:
    """The pid a sleeper training printed into its log, once it has."""
    log = out / "runs" / "eval-0000-subset-0.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(log.read_text().split()[0])


def _gone(pid: int, within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_trainings_die_with_a_search_killed_by_sigkill(tmp_path, digits_manifest):
    out = tmp_path / "nas"
    search = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, str(out), str(digits_manifest)])
    try:
        training = _training_pid(out)
        search.kill()
        search.wait()
        assert _gone(training), "the training outlived the search that started it"
    finally:
        search.kill()


def test_trainings_are_killed_when_the_search_loop_fails(tmp_path, digits_manifest, monkeypatch):
    sleeper = [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(600)"]
    monkeypatch.setattr("haet.search.problems.training_command", lambda manifest, config, out: sleeper)
    real_sleep, pids = time.sleep, []

    def failing_sleep(seconds):
        real_sleep(seconds)
        log = tmp_path / "runs" / "eval-0000-subset-0.log"
        if log.exists() and log.read_text().strip():
            pids.append(int(log.read_text().split()[0]))
            raise RuntimeError("the poll loop broke")

    monkeypatch.setattr("haet.search.problems.time.sleep", failing_sleep)
    base = TrainConfig.from_dict({"model": {"name": "ResNet18", "width": 0.25}, "budget": {"seconds": 1}})
    problem = NasProblem(base, [digits_manifest], tmp_path, baseline_acc=0.5)
    with pytest.raises(RuntimeError, match="the poll loop broke"):
        run_search(problem, SearchSettings(max_evaluations=3, seed=0), tmp_path)
    assert pids and _gone(pids[0], within_s=1)


def test_hpo_decodes_points_as_the_authors_code_did_or_as_the_paper_text_lists(tmp_path, digits_manifest):
    base = TrainConfig.from_dict({"model": {"name": "ResNet18", "width": 0.25}})
    code = HpoProblem(base, [digits_manifest], tmp_path)
    assert code.decode([2, 3, -1.0, 3]) == {
        "optimizer": "sgd",
        "lr": pytest.approx(0.1),
        "weight_decay": 5e-4,
        "batch_size": 256,
    }
    assert code.decode([3, 6, -2.0, 4])["lr"] == pytest.approx(1e-4)  # Adam: /100
    assert code.decode([1, 1, -1.0, 1])["lr"] == pytest.approx(1.0)  # Adadelta: x10
    assert code.decode([1, 1, -1.0, 6])["lr"] == pytest.approx(0.002)  # Adamax: /50
    text = HpoProblem(base, [digits_manifest], tmp_path, lr_scaling="paper_text")
    assert text.decode([3, 6, -2.0, 4])["lr"] == pytest.approx(1e-3)  # Adam: /10, the paper's 0.01 for SGD's 0.1
    assert text.decode([3, 6, -2.0, 5])["lr"] == pytest.approx(1e-3)  # AdamW too
    assert text.decode([1, 1, -1.0, 6]) == code.decode([1, 1, -1.0, 6])  # the others agree
    assert text.fingerprint()["lr_scaling"] == "paper_text" != code.fingerprint()["lr_scaling"]
    with pytest.raises(SearchError, match=r"search.lr_scaling must be one of code, paper_text, got 'text'"):
        HpoProblem(base, [digits_manifest], tmp_path, lr_scaling="text")


def test_a_point_scores_the_searchs_metric_over_its_subsets(tmp_path, digits_manifest):
    base = TrainConfig.from_dict({"model": {"name": "ResNet18", "width": 0.25}})
    records = [
        (f"run{i}.json", {"metrics": {"val_acc_final": final, "val_acc_best_optimistic": best}, "content_sha256": "x"})
        for i, (final, best) in enumerate([(0.5, 0.7), (0.6, 0.8), (0.4, 0.9)])
    ]
    final = HpoProblem(base, [digits_manifest], tmp_path).trained_fields(records)
    best = HpoProblem(base, [digits_manifest], tmp_path, metric="best_epoch").trained_fields(records)
    assert final["accuracy"] == pytest.approx(0.5) and final["accuracies"] == [0.5, 0.6, 0.4]
    assert best["accuracy"] == pytest.approx(0.8) and best["accuracies"] == [0.7, 0.8, 0.9]


SEARCH_CONFIG = {
    "model": {"name": "ResNet18"},
    "recipe": {"lr": 0.05, "batch_size": 64, "augment": "basic", "schedule": "cosine_time", "weight_decay": 5e-4},
    "budget": {"seconds": 6, "eval_every_epochs": 100},
    "runtime": {"pipeline": "resident", "workers": 0},
}


NAS_EPOCHS = 3  # the baseline reaches about 42% in them, the point NOMAD finds 70% (deterministic on the CPU)


def test_real_nas_of_resnet18_on_digits_finds_a_smaller_feasible_model(tmp_path, digits_manifest, capsys):
    # an epoch budget: every point trains as much however loaded the machine is (the accuracies compared are
    # independent of its speed)
    epochs = {"budget": {"seconds": None, "max_epochs": NAS_EPOCHS, "eval_every_epochs": 100}}
    config = tmp_path / "nas.yaml"
    config.write_text(yaml.safe_dump(SEARCH_CONFIG | epochs | {"search": {"max_evaluations": 6, "seed": 0}}))
    baseline = tmp_path / "baseline.json"
    assert (
        main(["train", "--quiet", "--manifest", str(digits_manifest), "--config", str(config), "--out", str(baseline)])
        == 0
    )
    out = tmp_path / "nas"
    assert (
        main(
            [
                "search",
                "nas",
                "--config",
                str(config),
                "--manifest",
                str(digits_manifest),
                "--out-dir",
                str(out),
                "--baseline-records",
                str(baseline),
            ]
        )
        == 0
    )
    best = yaml.safe_load((out / "best.yaml").read_text())
    baseline_record = read_run_record(baseline)
    assert best["provenance"]["accuracy"] >= baseline_record["metrics"]["val_acc_final"]
    assert best["provenance"]["macs"] < baseline_record["model"]["macs"]
    history = (out / "history.csv").read_text()
    assert history.count("trained") >= 2
    evaluation_records = sorted((out / "runs").glob("eval-*-subset-0.json"))
    assert evaluation_records and all(read_run_record(path)["status"] == "complete" for path in evaluation_records)
    # later stages consume best.yaml as a training config
    assert TrainConfig.from_dict(best).model.width == best["provenance"]["best_point"][1]


def test_real_hpo_on_digits_as_the_authors_scored_it_writes_the_best_recipe(tmp_path, digits_manifest):
    """Each point trains on two subsets and scores the mean best-epoch accuracy, as the authors' HPO did (on 3)."""
    second = tmp_path / "run1.json"
    write_manifest(make_manifest(SubsetSpec("digits", train_per_class=60, val_per_class=20), run=1), second)
    config = tmp_path / "hpo.yaml"
    config.write_text(
        yaml.safe_dump(
            SEARCH_CONFIG
            | {
                "model": {"name": "ResNet18", "width": 0.25},
                "budget": {"seconds": 1, "eval_every_epochs": 1},
                "search": {"max_evaluations": 3, "seed": 0, "block_size": 2, "metric": "best_epoch"},
            }
        )
    )
    out = tmp_path / "hpo"
    manifests = ["--manifest", str(digits_manifest), "--manifest", str(second)]
    assert main(["search", "hpo", "--config", str(config), *manifests, "--out-dir", str(out)]) == 0
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["recipe"]["optimizer"] in {"adadelta", "adagrad", "sgd", "adam", "adamw", "adamax", "asgd"}
    assert best["recipe"]["batch_size"] in {128, 256, 512} and best["model"]["width"] == 0.25
    summary = read_record(out / "summary.json")
    assert summary["counts"]["trained"] == 3
    assert summary["problem"]["metric"] == "best_epoch" and len(summary["problem"]["manifests"]) == 2
    assert best["provenance"]["metric"] == "best_epoch" and best["provenance"]["subsets"] == 2
    bests = [
        read_run_record(source["path"])["metrics"]["val_acc_best_optimistic"]
        for source in best["provenance"]["records"]
    ]
    assert best["provenance"]["accuracy"] == pytest.approx(sum(bests) / 2)


@pytest.mark.parametrize(
    ("explicit", "environ", "visible", "expected"),
    [
        ("2,5", {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 4, ["2", "5"]),  # an explicit list wins
        (None, {"CUDA_VISIBLE_DEVICES": "3,1"}, 8, ["3", "1"]),  # the scheduler's allocation
        (None, {"CUDA_VISIBLE_DEVICES": "GPU-8f2c,GPU-77aa"}, 8, ["GPU-8f2c", "GPU-77aa"]),  # UUIDs pass through
        (None, {}, 2, ["0", "1"]),  # nothing set: every GPU the machine shows
        (None, {}, 0, []),  # a machine without one
        (None, {"CUDA_VISIBLE_DEVICES": ""}, 4, []),
        (None, {"CUDA_VISIBLE_DEVICES": "1,-1,2"}, 4, ["1"]),  # CUDA reads no further than an invalid id
    ],
)
def test_a_search_uses_the_gpus_it_was_given(explicit, environ, visible, expected):
    assert given_gpus(explicit, environ, lambda: visible) == expected


def test_a_gpu_named_twice_is_refused():
    with pytest.raises(SearchError, match=r"names a GPU twice; give each GPU once \(share_gpus shares them\)"):
        given_gpus("0,1,0", {}, lambda: 2)


def test_trainings_get_a_gpu_each_run_in_rounds_when_fewer_and_share_only_when_asked():
    assert gpu_slots(["0", "1", "2", "3"], 3, share=False) == [("0", 1), ("1", 1), ("2", 1)]
    assert gpu_slots(["0", "1"], 4, share=False) == [("0", 1), ("1", 1)]  # 4 trainings in 2 rounds of 2
    assert gpu_slots(["0", "1"], 5, share=True) == [("0", 3), ("1", 2), ("0", 3), ("1", 2), ("0", 3)]
    assert gpu_slots([], 4, share=False) == []  # on the CPU the block runs at once, on its reserved cores


def _trainings_logging_their_gpu(log: Path):
    """training_command wrapped in a shell that logs the GPU the search gave the training, when it ran, and how
    many trainings that GPU held; then the real `haet train` runs (on the CPU here: the ids name no device)."""
    script = (
        'echo "start $(date +%s.%N) ${CUDA_VISIBLE_DEVICES-unset} ${HAET_GPU_SHARED_BY-unset}" >> "$0"; "$@"; '
        'code=$?; echo "end $(date +%s.%N) ${CUDA_VISIBLE_DEVICES-unset}" >> "$0"; exit $code'
    )
    return lambda manifest, config, out: ["sh", "-c", script, str(log), *training_command(manifest, config, out)]


def _gpus_at_once(log: Path) -> list[list[str]]:
    """From the log: the GPUs of the trainings running together, at every start."""
    events = sorted((float(line.split()[1]), line.split()[0], line.split()[2]) for line in log.read_text().splitlines())
    running, seen = [], []
    for _, kind, gpu in events:
        if kind == "start":
            running.append(gpu)
            seen.append(sorted(running))
        else:
            running.remove(gpu)
    return seen


@pytest.mark.parametrize(("gpus", "share", "most_at_once"), [("7,3", False, 2), ("5", True, 4)])
def test_a_search_block_spreads_its_trainings_over_the_given_gpus(
    tmp_path, digits_manifest, monkeypatch, gpus, share, most_at_once
):
    """Two points on two subsets: four trainings a block. Two GPUs: a GPU each, in two rounds. One GPU shared:
    all four at once on it, each told that its GPU held four."""
    second = tmp_path / "run1.json"
    write_manifest(make_manifest(SubsetSpec("digits", train_per_class=60, val_per_class=20), run=1), second)
    log = tmp_path / "gpus.log"
    monkeypatch.setattr("haet.search.problems.training_command", _trainings_logging_their_gpu(log))
    config = tmp_path / "hpo.yaml"
    search = {"max_evaluations": 2, "seed": 0, "block_size": 2, "share_gpus": share}
    budget = {"seconds": 0.5, "eval_every_epochs": 100}
    config.write_text(
        yaml.safe_dump(
            SEARCH_CONFIG | {"model": {"name": "ResNet18", "width": 0.125}, "budget": budget, "search": search}
        )
    )
    manifests = ["--manifest", str(digits_manifest), "--manifest", str(second)]
    argv = ["search", "hpo", "--config", str(config), *manifests, "--out-dir", str(tmp_path / "hpo"), "--gpus", gpus]
    assert main(argv) == 0
    trained = read_record(tmp_path / "hpo" / "summary.json")["counts"]["trained"]
    starts = [line.split() for line in log.read_text().splitlines() if line.startswith("start")]
    assert trained >= 2 and len(starts) == 2 * trained and {start[2] for start in starts} == set(gpus.split(","))
    assert {start[3] for start in starts} == ({"4"} if share else {"1"})
    together = _gpus_at_once(log)
    assert max(len(gpus_running) for gpus_running in together) <= most_at_once
    if not share:  # never two trainings on one GPU at the same time
        assert all(len(set(gpus_running)) == len(gpus_running) for gpus_running in together)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (the assignment is tested above on CPU with given device lists)",
)
@pytest.mark.parametrize("share", [False, True])
def test_on_this_machines_gpus_each_search_training_runs_on_the_gpu_it_was_given(
    tmp_path, digits_manifest, monkeypatch, share
):
    """Nothing given: the search uses every GPU here. Each training ran on CUDA and recorded the one GPU it saw
    and how many trainings that GPU held; unshared, never two at once on a GPU."""
    log = tmp_path / "gpus.log"
    monkeypatch.setattr("haet.search.problems.training_command", _trainings_logging_their_gpu(log))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    search = {"max_evaluations": 4, "seed": 0, "block_size": 2, "share_gpus": share}
    config = tmp_path / "hpo.yaml"
    config.write_text(
        yaml.safe_dump(
            SEARCH_CONFIG | {"model": {"name": "ResNet18", "width": 0.125}, "budget": {"seconds": 2}, "search": search}
        )
    )
    out = tmp_path / "hpo"
    assert (
        main(["search", "hpo", "--config", str(config), "--manifest", str(digits_manifest), "--out-dir", str(out)]) == 0
    )
    gpus = [str(index) for index in range(torch.cuda.device_count())]
    held = dict(gpu_slots(gpus, 2, share))  # a block: 2 points on 1 subset
    records = [read_run_record(path) for path in sorted((out / "runs").glob("eval-*-subset-0.json"))]
    assert len(records) >= 2
    for record in records:
        assert record["runtime"]["device"] == "cuda", record["runtime"]
        assigned = record["provenance"]["gpu"]
        assert (
            assigned["visible_devices"] in gpus and assigned["trainings_sharing"] == held[assigned["visible_devices"]]
        )
    if not share:
        assert all(len(set(running)) == len(running) for running in _gpus_at_once(log))


def test_a_resumed_search_replays_no_logged_accuracy_its_run_records_do_not_give(tmp_path, digits_manifest, capsys):
    """issue 21: an evaluation's accuracy raised in evaluations.jsonl (outputs to match) was adopted on resume.
    Now the log is replayed up to that line, the rest trained again, and the search stays within its budget."""
    config = tmp_path / "hpo.yaml"
    epochs = {"seconds": None, "max_epochs": 1, "eval_every_epochs": 1}
    search = {"max_evaluations": 3, "seed": 0}
    model = {"name": "ResNet18", "width": 0.125}
    config.write_text(yaml.safe_dump(SEARCH_CONFIG | {"model": model, "budget": epochs, "search": search}))
    out = tmp_path / "hpo"
    argv = ["search", "hpo", "--config", str(config), "--manifest", str(digits_manifest), "--out-dir", str(out)]
    assert main(argv) == 0
    log = out / "evaluations.jsonl"
    lines = log.read_text().splitlines()
    honest = [json.loads(line) for line in lines[1:]]
    assert [entry["status"] for entry in honest] == ["trained"] * 3
    forged = honest[1] | {"accuracy": 0.99, "accuracies": [0.99], "outputs": [-0.99]}
    log.write_text("\n".join([lines[0], lines[1], json.dumps(forged, sort_keys=True), *lines[3:]]) + "\n")
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "evaluation 1 is not replayed: its accuracy 0.99 is not its run records'" in printed
    again = [json.loads(line) for line in log.read_text().splitlines()[1:]]
    assert len(again) == 3 and all(entry["accuracy"] != 0.99 for entry in again)
    assert [entry["accuracy"] for entry in again] == [entry["accuracy"] for entry in honest]  # trained again
    summary = read_record(out / "summary.json")
    assert summary["evaluations"] == 3 and summary["best"]["accuracy"] == max(e["accuracy"] for e in honest)
    assert len(list(out.glob("evaluations.untrusted-*.jsonl"))) == 1  # the log as it was, kept aside


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"seed": 10**20}, r"search.seed must be an integer in \[0, 2147483647\]"),
        ({"max_evaluations": 10**9}, r"search.max_evaluations must be an integer in \[1, 100000\]"),
    ],
)
def test_search_settings_past_what_nomad_takes_are_refused_before_it_starts(settings, error):
    with pytest.raises(SearchError, match=error):
        SearchSettings(**settings)


def test_a_setting_nomad_refuses_says_so_and_does_not_suggest_a_resume(tmp_path):
    """NOMAD kills its process on a parameter it does not know, before proposing anything (issue 21, item 8)."""
    with pytest.raises(
        SearchError, match=r"before it proposed a point: it refused a setting \(direction_type 'SIDEWAYS"
    ):
        run_search(ConstrainedQuadratic(), SearchSettings(max_evaluations=3, direction_type="SIDEWAYS 7"), tmp_path)


MACHINE_OR_POINT = [("No space left on device", True), ("batch_size 512 is larger", False)]


@pytest.mark.parametrize(("output", "retried"), MACHINE_OR_POINT)
def test_an_evaluation_that_failed_for_its_machine_is_trained_on_resume_and_one_that_failed_on_its_own_is_not(
    tmp_path, digits_manifest, monkeypatch, output, retried
):
    """issue 21: on a full disk an evaluation was logged failed and a resume never trained it again."""
    failing = [sys.executable, "-c", f"import sys; print('haet: error: {output}'); sys.exit(2)"]
    real = training_command
    monkeypatch.setattr("haet.search.problems.training_command", lambda manifest, config, out: failing)
    epochs = {"budget": {"seconds": None, "max_epochs": 1}, "model": {"name": "ResNet18", "width": 0.125}}
    base = TrainConfig.from_dict(SEARCH_CONFIG | epochs)
    settings = SearchSettings(max_evaluations=2, seed=0)
    first = run_search(HpoProblem(base, [digits_manifest], tmp_path), settings, tmp_path)
    assert {entry["status"] for entry in first.evaluations} == {"failed"}
    assert all(entry["reason"].startswith("outside the point") == retried for entry in first.evaluations)
    monkeypatch.setattr("haet.search.problems.training_command", real)  # space freed
    again = run_search(HpoProblem(base, [digits_manifest], tmp_path), settings, tmp_path)
    assert {entry["status"] for entry in again.evaluations} == ({"trained"} if retried else {"failed"})
