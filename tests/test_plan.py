"""`haet plan`: what a study will cost, per stage, before it runs."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO

from haet import HaetError
from haet.cli import main
from haet.config import load_config
from haet.plan import Stage, plan, stage_wall_s

DEFAULT = REPO / "workflow" / "config" / "default.yaml"
PAPER = REPO / "workflow" / "config" / "paper.yaml"


def _stages(config_path, gpus: int, overhead_s: float) -> dict[str, dict]:
    return {row["stage"]: row for row in plan(load_config(config_path), gpus, overhead_s)["stages"]}


def test_the_default_study_plans_every_training_it_runs():
    rows = _stages(DEFAULT, gpus=2, overhead_s=5.0)
    counts = {name: row["trainings"] for name, row in rows.items()}
    # 3 models x 5 runs; 2 NAS searches of 8 evaluations on 1 subset; 2 models x 3 recipes x 3 runs; 4 HPO
    # evaluations on 1 subset; 3 HPO runs, 3 final runs, the paper's submission once beside each table, and 3
    # leaderboard entries 3 times each
    assert counts == {"screening": 15, "nas": 16, "augment": 18, "hpo": 4, "hpo_runs": 3, "final": 3, "reference": 2,
                      "leaderboard": 9}  # fmt: skip
    assert rows["leaderboard"]["training_s"] == 30 + 5 + 5.0  # budget, grace, overhead
    assert rows["screening"]["training_s"] == 11.0  # 6 s budget + 5 s overhead
    assert rows["screening"]["wall_s"] == 8 * 11.0  # 15 trainings two at a time
    assert rows["nas"]["wall_s"] == 8 * 11.0  # both searches side by side, 8 rounds of one training each


def test_the_paper_study_costs_what_its_protocol_implies():
    rows = _stages(PAPER, gpus=8, overhead_s=10.0)
    screening, nas, hpo = rows["screening"], rows["nas"], rows["hpo"]
    assert screening["trainings"] == 170 and screening["gpu_hours"] == pytest.approx(170 * 610 / 3600)  # 28.8
    assert nas["trainings"] == 300  # the authors' ResNet-18 NAS of 200 evaluations and SENet-18's of 100
    assert nas["wall_s"] == 200 * 610  # sequential evaluations: the longer search sets the stage's wall time
    assert hpo["trainings"] == 300 and hpo["wall_s"] == 100 * 610  # each point's 3 trainings on 3 GPUs at once


def test_a_search_with_fewer_gpus_than_its_block_runs_it_in_rounds():
    hpo = Stage("hpo", trainings=300, budget_s=600, searches=1, rounds=100, block_trainings=3)
    assert stage_wall_s(hpo, 3, 610) == 100 * 610
    assert stage_wall_s(hpo, 1, 610) == 300 * 610
    assert stage_wall_s(hpo, 2, 610) == 200 * 610  # 3 trainings on 2 GPUs: two rounds a block
    nas = Stage("nas", trainings=200, budget_s=600, searches=2, rounds=100, block_trainings=1)
    assert stage_wall_s(nas, 1, 610) == 2 * 100 * 610  # one search after the other
    assert stage_wall_s(nas, 4, 610) == 100 * 610


def test_an_epoch_budget_needs_a_measured_run_and_bad_input_is_refused(tmp_path, capsys):
    config = load_config(DEFAULT)
    config["screening"]["train"]["budget"] = {"seconds": None, "max_epochs": 3}
    with pytest.raises(HaetError, match="screening trains for epochs, not seconds: give --benchmarks"):
        plan(config, 2)
    assert main(["plan", "--config", str(DEFAULT), "--gpus", "0"]) == 2
    assert "--gpus must be a positive number" in capsys.readouterr().err
    assert main(["plan", "--config", str(DEFAULT), "--benchmarks", str(tmp_path / "none")]) == 2
    assert "no benchmark folder" in capsys.readouterr().err
    (tmp_path / "study.yaml").write_text("data: {dataset: digits}\n")
    assert main(["plan", "--config", str(tmp_path / "study.yaml")]) == 2
    assert "the study config has no screening" in capsys.readouterr().err


def test_haet_plan_prints_each_stage_and_the_total(capsys):
    assert main(["plan", "--config", str(PAPER), "--gpus", "8"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^nas +<=300 ", printed, re.MULTILINE) and printed.count("\n") >= 10
    assert re.search(r"^leaderboard +10 +615.0s", printed, re.MULTILINE)  # 2 entries x 5 runs of 600 s + 5 s grace
    assert "total" in printed and "upper bound" in printed


FIDELITY = REPO / "workflow" / "config" / "fidelity.yaml"
CLOCK = REPO / "workflow" / "config" / "fidelity-clock.yaml"


def test_the_fidelity_study_is_planned_arm_by_arm_from_the_reference_arms_images_per_second(capsys):
    arguments = ["plan", "--config", str(PAPER), "--config", str(FIDELITY), "--config", str(CLOCK)]
    arguments += ["--target", "fidelity", "--overhead-s", "10"]
    assert main(arguments) == 2
    assert "the fidelity arms train for epochs: give --images-per-s" in capsys.readouterr().err
    assert main([*arguments, "--images-per-s", "20000", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {row["stage"].removeprefix("fidelity "): row for row in result["stages"]}
    assert "screening" not in rows and all(row["trainings"] == 3 for row in rows.values())
    compute = {arm: row["training_s"] - 10 for arm, row in rows.items()}
    assert compute["submission"] == pytest.approx(240 * 5000 / 20000)  # 240 epochs of 5,000 images
    assert compute["fp32"] == pytest.approx(2 * compute["submission"])  # SPEED_FACTORS: fp32 at half the rate
    assert compute["260-epochs-freeze"] == pytest.approx(compute["submission"] * 260 / 240)
    assert rows["competition-600s"]["training_s"] == 610  # a wall-clock arm: its budget, and it never shares
    assert rows["competition-600s"]["wall_s"] == 3 * 610
    # four epoch-budget trainings share the GPU: no faster together than one alone unless --sharing-speedup says
    assert rows["submission"]["wall_s"] == pytest.approx(3 * (60 + 10 / 4))
    assert main([*arguments, "--images-per-s", "20000", "--sharing-speedup", "2", "--json"]) == 0
    faster = {row["stage"]: row for row in json.loads(capsys.readouterr().out)["stages"]}
    assert faster["fidelity submission"]["wall_s"] == pytest.approx(3 * (30 + 10 / 4))
    assert faster["fidelity competition-600s"]["wall_s"] == 3 * 610
