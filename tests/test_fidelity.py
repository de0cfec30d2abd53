"""The fidelity study: its statistics against scipy's, and the study itself at toy scale on the real CIFAR-10
through Snakemake (two arms, tiny width, two epochs), with its table audited and its refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CIFAR_FOLDER, REPO, needs_real_cifar, snakemake, write_mini_imagenet_cache
from scipy import stats

from haet.cli import main
from haet.files import read_record, write_record
from haet.records import read_run_record
from haet.report.tables import T_975, t_quantile_975, t_two_sided_p, verdict, welch

DEFAULT = str(REPO / "workflow" / "config" / "default.yaml")


@pytest.mark.parametrize("df", [1, 2, 3.5, 9, 17.2, 60])
@pytest.mark.parametrize("t", [0.0, 0.3, 1.7, 2.9, 8.0])
def test_students_t_two_sided_p_and_quantile_agree_with_scipy(t, df):
    assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(t, df), abs=1e-10)
    assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)


def test_the_t_quantiles_agree_with_the_tables_interval_constants():
    assert [round(t_quantile_975(df), 3) for df in range(1, len(T_975) + 1)] == T_975


def test_welch_agrees_with_scipy_and_the_verdict_reads_the_best_epoch_interval():
    arm, reference = [0.81, 0.79, 0.83, 0.80], [0.86, 0.88, 0.87]
    difference, half_width, p = welch(arm, reference)
    expected = stats.ttest_ind(arm, reference, equal_var=False)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)
    interval = expected.confidence_interval(0.95)
    assert (difference - half_width, difference + half_width) == pytest.approx((interval.low, interval.high))
    assert welch([0.8], reference)[1:] == (None, None)  # one run: no spread to judge
    assert verdict([0.87, 0.88, 0.89], 87.8) == "matches"
    assert verdict([0.79, 0.80, 0.81], 87.8) == "below" and verdict([0.90, 0.91, 0.92], 87.8) == "above"
    assert verdict([0.8], 87.8) == "one run"


TOY = {
    "fidelity": {
        "runs": 2,
        "data": {"dataset": "imagefolder", "root": str(CIFAR_FOLDER), "options": {}},
        "subsets": {"train_per_class": 20, "val_per_class": 10, "val_split": "test", "seed": 0},
        "reference": "submission",
        "trainings_per_gpu": 4,
        "train": {
            "model": {"name": "SENet18", "width": 0.125},
            "recipe": {"augment": "paper", "batch_size": 64},
            "budget": {"seconds": None, "max_epochs": 2},
            "runtime": {"precision": "fp32", "pipeline": "resident", "workers": 0, "threads": 1},
        },
        "arms": {
            "submission": {"target": "table3"},
            "authors-autoaugment": {"target": "table3", "train": {"recipe": {"autoaugment": "authors"}}},
        },
    }
}


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory) -> Path:
    """The fidelity study at toy scale on the real CIFAR-10: 2 arms x 2 runs of 200 images, 2 epochs."""
    if not (CIFAR_FOLDER / "train").is_dir():
        pytest.skip(f"real CIFAR-10 ImageFolder not found at {CIFAR_FOLDER}")
    workdir = tmp_path_factory.mktemp("fidelity")
    # Table 4's arm on its own data: a Mini-ImageNet cache in the exact format, 2 classes, kept at 84 px
    cache = workdir / "mini-imagenet-cache-train.pkl"
    write_mini_imagenet_cache(cache, ["n01532829", "n01558993"], per_class=30)
    options = {"num_classes": 2, "train_per_class": 20, "test_per_class": 10, "size": None}
    data = {"dataset": "mini-imagenet", "root": str(cache), "options": options}
    mini = {"target": "table4", "data": data, "train": {"recipe": {"batch_size": 16}}}  # 40 training images
    toy = {"fidelity": TOY["fidelity"] | {"arms": TOY["fidelity"]["arms"] | {"mini-imagenet": mini}}}
    (workdir / "toy.yaml").write_text(yaml.safe_dump(toy))
    result = snakemake(workdir, "--cores", "2", "--configfile", DEFAULT, str(workdir / "toy.yaml"), "--", "fidelity")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return workdir


@needs_real_cifar
def test_the_toy_fidelity_study_puts_the_papers_number_beside_each_arm_and_passes_the_audit(toy_study, monkeypatch):
    monkeypatch.chdir(toy_study)  # the table names its run records relative to the study's folder
    tables = toy_study / "results" / "default" / "tables"
    table = read_record(tables / "fidelity.json")
    rows = {row["arm"]: row for row in table["rows"]}
    assert list(rows) == ["submission", "authors-autoaugment", "mini-imagenet"]  # the reference arm first
    for row in rows.values():
        paper = 86.0 if row["arm"] == "mini-imagenet" else 87.8
        assert row["n"] == 2 and row["paper"] == paper and row["verdict"] in ("matches", "below", "above")
        assert row["best_vs_paper"] == pytest.approx(row["val_acc_best_optimistic_mean"] - paper / 100)
        assert row["epochs_mean"] == 2
    assert rows["submission"]["dataset"] == "imagefolder" and rows["mini-imagenet"]["dataset"] == "mini-imagenet"
    assert rows["submission"]["final_vs_reference"] is None
    other = rows["authors-autoaugment"]
    assert other["autoaugment"] == "authors" and rows["submission"]["autoaugment"] == "torchvision"
    assert other["final_vs_reference"] == pytest.approx(
        other["val_acc_final_mean"] - rows["submission"]["val_acc_final_mean"]
    )
    assert 0 <= other["welch_p"] <= 1
    # the CIFAR arms trained on the same two subsets; Table 4's on two of its own
    manifests = {
        row["arm"]: {read_run_record(source["path"])["subset"]["manifest_sha256"] for source in row["sources"]}
        for row in table["rows"]
    }
    assert manifests["submission"] == manifests["authors-autoaugment"] and len(manifests["submission"]) == 2
    assert len(manifests["mini-imagenet"]) == 2 and not manifests["mini-imagenet"] & manifests["submission"]
    assert any("paper 86.0 for target table4: Table 4" in note for note in table["notes"])
    assert any("JPEG re-encoding" in note for note in table["notes"])
    assert (toy_study / "results" / "default" / "figures" / "fidelity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", "audit", str(tables / "fidelity.json")]) == 0


@needs_real_cifar
def test_the_reports_first_page_puts_each_paper_number_beside_the_harnesss(toy_study):
    report = toy_study / "report.html"
    arguments = ["--configfile", DEFAULT, str(toy_study / "toy.yaml"), "--report", str(report), "--", "fidelity"]
    result = snakemake(toy_study, *arguments)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    page = report.read_text()  # the first page's HTML sits in the report's data as a JSON string
    row = read_record(toy_study / "results" / "default" / "tables" / "fidelity.json")["rows"][1]
    best = f"{100 * row['val_acc_best_optimistic_mean']:.1f} \\u00b1 {100 * row['val_acc_best_ci95']:.1f}"
    cells = ["authors-autoaugment / table3", "87.8", best, f"{100 * row['val_acc_final_mean']:.1f}", "2"]
    assert "numbers beside the harness" in page and "</td>\\n<td>".join(cells) in page


@needs_real_cifar
def test_a_fidelity_verdict_or_note_edited_and_rehashed_fails_the_audit(toy_study, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(toy_study)
    table = read_record(toy_study / "results" / "default" / "tables" / "fidelity.json")
    for name, edit in (("verdict", lambda t: t["rows"][1].update(verdict="matches", paper=12.0)),
                       ("notes", lambda t: t["notes"].pop())):  # fmt: skip
        forged = json.loads(json.dumps(table))
        forged.pop("content_sha256", None)
        edit(forged)
        write_record(tmp_path / f"{name}.json", forged)
        for suffix in (".md", ".csv"):  # renderings in step, so only the cross-check can catch it
            from haet.report.tables import render_csv, render_markdown

            render = render_markdown if suffix == ".md" else render_csv
            (tmp_path / f"{name}{suffix}").write_text(render(read_record(tmp_path / f"{name}.json")))
        assert main(["report", "audit", str(tmp_path / f"{name}.json")]) == 1
    printed = capsys.readouterr().out
    assert "verdict is 'matches', records give" in printed and "its notes are not the ones its records" in printed


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"reference": "fp16"}, "fidelity.reference 'fp16' is not one of fidelity.arms"),
        ({"arms": {"submission": {"target": "table9"}}}, "fidelity.arms.submission.target 'table9' is not one of"),
    ],
)
def test_a_fidelity_study_naming_no_arm_or_no_paper_number_is_refused_before_anything_runs(tmp_path, change, error):
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump({"fidelity": TOY["fidelity"] | change}))
    result = snakemake(tmp_path, "-n", "--configfile", DEFAULT, str(tmp_path / "toy.yaml"), "--", "fidelity")
    assert result.returncode != 0 and error in result.stdout + result.stderr, (result.stdout + result.stderr)[-2000:]
    assert not (tmp_path / "results").exists()


def test_on_a_gpu_machine_epoch_budget_arms_share_a_gpu_and_wall_clock_arms_have_one_each(tmp_path):
    """Planned with a stand-in nvidia-smi: the epoch-budget arm's runs hold gpu_shared (4 at once) and tell the
    training it shares; the competition-clock arm's hold a whole GPU."""
    arms = TOY["fidelity"]["arms"] | {
        "clock": {"target": "table3", "train": {"budget": {"seconds": 600, "max_epochs": None, "mode": "competition"}}}
    }
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump({"fidelity": TOY["fidelity"] | {"arms": arms}}))
    stand_in = tmp_path / "bin" / "nvidia-smi"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    path = {"PATH": f"{Path(sys.executable).parent}:{stand_in.parent}:/usr/bin:/bin"}
    result = snakemake(
        tmp_path, "-n", "-p", "--configfile", DEFAULT, str(tmp_path / "toy.yaml"), "--", "fidelity", env=path
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    jobs = output.split("\nrule ")
    runs = {arm: [job for job in jobs if job.startswith("fidelity_run:") and f"arm={arm}," in job] for arm in arms}
    assert all(len(planned) == 2 for planned in runs.values()), output[-3000:]
    for job in runs["submission"] + runs["authors-autoaugment"]:
        assert "gpu=0" in job and "gpu_shared=1" in job and "HAET_GPU_SHARED_BY=4 haet train" in job
    for job in runs["clock"]:
        assert "gpu=1" in job and "gpu_shared=0" in job and "HAET_GPU_SHARED_BY" not in job


@needs_real_cifar
def test_haet_plan_times_each_fidelity_arm_from_the_benchmarks_of_a_run(toy_study, capsys):
    benchmarks = toy_study / "results" / "default" / "benchmarks"
    arguments = ["plan", "--config", DEFAULT, "--config", str(toy_study / "toy.yaml"), "--target", "fidelity"]
    assert main([*arguments, "--benchmarks", str(benchmarks), "--json"]) == 0
    rows = {row["stage"]: row for row in json.loads(capsys.readouterr().out)["stages"]}
    assert set(rows) == {"fidelity submission", "fidelity authors-autoaugment", "fidelity mini-imagenet"}
    for arm, row in rows.items():
        seconds = [float(path.read_text().splitlines()[1].split("\t")[0]) for path in
                   sorted((benchmarks / "fidelity").glob(f"{arm.removeprefix('fidelity ')}-run*.tsv"))]  # fmt: skip
        assert row["measured_jobs"] == 2 and row["training_s"] == pytest.approx(
            sorted(seconds)[0] / 2 + sorted(seconds)[1] / 2
        )
