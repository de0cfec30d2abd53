"""Result tables from run records, and the audit that recomputes them.

A table is three files: TABLE.json (rows, and for every row the run records it came from with their sha256),
TABLE.csv and TABLE.md (the same rows for people). Every number is a function of the records named in its row,
so `audit` can re-read them, check their hashes and recompute the row.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
import statistics
from pathlib import Path

from haet import HaetError
from haet.files import canonical_json, read_record, write_atomic, write_record
from haet.records import read_run_record
from haet.report.crosscheck import (
    config_problems,
    manifest_problems,
    record_problems,
    search_log_problems,
    sibling_problems,
    study_manifests,
    study_of,
)
from haet.report.paper import FIDELITY_TARGETS, PAPER_MODELS, PAPER_VALUES, TITLES

SCHEMA = "haet/table/v1"
COLUMNS = [
    "rank",
    "label",
    "model",
    "variant",
    "depth",
    "width",
    "resolution",
    "input_px",
    "augment",
    "n",
    "val_acc_final_mean",
    "val_acc_final_std",
    "val_acc_final_ci95",
    "val_acc_best_optimistic_mean",
    "params",
    "macs",
    "macs_vs_baseline",
    "params_vs_baseline",
    "budget_s",
    "max_epochs",
    "budget_mode",
    "precision",
    "trainings_per_gpu",
    "paper",
    "paper_model",
    "image",
]
# The fidelity table (one row an arm; the first row is the reference arm the others are compared with)
FIDELITY_COLUMNS = [
    "label",
    "arm",
    "target",
    "model",
    "width",
    "resolution",
    "input_px",
    "n",
    "val_acc_final_mean",
    "val_acc_final_ci95",
    "val_acc_best_optimistic_mean",
    "val_acc_best_ci95",
    "paper",
    "best_vs_paper",
    "verdict",
    "final_vs_reference",
    "final_vs_reference_ci95",
    "welch_p",
    "epochs_mean",
    "precision",
    "pipeline",
    "autoaugment",
    "normalize",
    "dataset",
    "budget_s",
    "max_epochs",
    "budget_mode",
    "trainings_per_gpu",
    "image",
]


# The challenge's leaderboard (one row an entry, ranked; haet.challenge's submission records)
LEADERBOARD_COLUMNS = [
    "rank",
    "label",
    "n",
    "val_acc_final_mean",
    "val_acc_final_std",
    "val_acc_final_ci95",
    "vs_leader",
    "vs_leader_ci95",
    "welch_p",
    "outcomes",
    "params",
    "macs",
    "hardware",
    "budget_s",
    "budget_mode",
    "sandbox",
    "dataset",
    "image",
]


def columns_of(kind: str) -> list[str]:
    return {"fidelity": FIDELITY_COLUMNS, "leaderboard": LEADERBOARD_COLUMNS}.get(kind, COLUMNS)


OPTIMISM_NOTE = (
    "val_acc_best_optimistic_mean is the mean of each run's best epoch on the validation images: "
    "selecting on them makes it optimistic. The paper's numbers are of that kind; compare them with it."
)


def image_of(record: dict) -> str:
    """Where a run ran, as one short name: `native`, or the engine and the image's content digest."""
    container = record["provenance"]["container"]
    if container["engine"] == "none":
        return "native"
    return f"{container['engine']} {container['image_digest'] or container['image']}"


def _short_image(images: set[str]) -> str:
    if len(images) > 1:
        return "mixed"
    engine, _, digest = next(iter(images)).partition(" ")
    return engine if not digest else f"{engine} {digest.removeprefix('sha256:')[:12]}"


def image_problems(table: dict, records: list[dict]) -> list[str]:
    """A table whose runs came from different images, or from an image and a native venv, unless allowed."""
    counts = collections.Counter(image_of(record) for record in records)
    if len(counts) < 2 or table.get("allow_mixed_images"):
        return []
    listed = ", ".join(f"{image} ({n} runs)" for image, n in sorted(counts.items()))
    return [f"runs come from different images: {listed}; rerun them in one, or set container.allow_mixed_images"]


def trainings_per_gpu(record: dict) -> int | None:
    """How many trainings shared this run's GPU (1: it had one of its own); None on the CPU or in records made
    before runs said so."""
    gpu = record["provenance"].get("gpu")
    return gpu["trainings_sharing"] if gpu else None


def shared_gpu_problems(label: str, records: list[tuple[str, dict]]) -> list[str]:
    """Runs trained on a GPU shared with other trainings under a wall-clock budget: each slowed the others down,
    so their accuracies are not those of the protocol (only a search asked to share GPUs makes such runs)."""
    held = [(path, trainings_per_gpu(record) or 1) for path, record in records]
    shared = [(path, count) for path, count in held if count > 1]
    if not shared or records[0][1]["budget"]["seconds"] is None:
        return []
    listed = ", ".join(f"{path} ({count} trainings on its GPU)" for path, count in shared)
    return [
        f"row {label}: trained on a shared GPU under a wall-clock budget, so the trainings slowed each other "
        f"down: {listed}. Rerun them with a GPU each"
    ]


def precision_of(record: dict) -> str:
    """The arithmetic a run trained in (records before the field: bf16 autocast on CUDA, fp32 on the CPU)."""
    runtime = record["runtime"]
    return runtime.get("precision") or ("bf16" if runtime["device"].startswith("cuda") else "fp32")


def budget_mode_of(record: dict) -> str:
    """How a run's budget was counted: its mode, and the clock where it was the process's CPU time (records made
    before the field counted the wall clock)."""
    budget = record["budget"]
    clock = {"process": " (process CPU s)", "cpu": " (sandbox CPU s)"}.get(budget.get("clock"), "")
    return budget["mode"] + clock


def code_version(record: dict) -> str:
    provenance = record["provenance"]
    commit = (provenance["git_commit"] or "unknown commit")[:12]
    return f"haet {provenance['haet_version']} {commit}" + (" (uncommitted changes)" if provenance["git_dirty"] else "")


def _seconds(value: float | None) -> str:
    """A budget's seconds as one text whether YAML gave 1 or a flag gave 1.0."""
    return "None" if value is None else f"{float(value):g}"


# What every run of one row must share for its mean to be one protocol's number, and what the rows of one table
# must share for the paper's comparison between them to hold (the budget: seconds, epochs and how it was counted).
ROW_INVARIANTS = {
    "budgets": lambda r: f"{_seconds(r['budget']['seconds'])} s, {r['budget']['max_epochs']} epochs",
    "budget modes": budget_mode_of,
    "precisions": precision_of,
    "datasets": lambda r: (
        f"{r['subset']['dataset']} ({r['subset']['train_count']} train, "
        f"{r['subset']['validation_count']} validation images)"
    ),
    "recipes": lambda r: canonical_json(r["config"]["recipe"]),
    "pipelines": lambda r: r["runtime"]["pipeline"],
    "code versions": code_version,
}
TABLE_INVARIANTS = ("budgets", "budget modes", "precisions")


def _differences(values: list[str]) -> str:
    """Distinct values for a message; recipes as the keys whose values differ rather than two JSON blobs."""
    if not all(value.startswith("{") for value in values):
        return " vs ".join(values)
    recipes = [json.loads(value) for value in values]
    keys = sorted(key for key in set().union(*recipes) if len({canonical_json(r.get(key)) for r in recipes}) > 1)
    return "; ".join(f"{key}: " + " vs ".join(repr(recipe.get(key)) for recipe in recipes) for key in keys)


def protocol_problems(loaded: dict[str, list[tuple[str, dict]]], table_wide: bool = True) -> list[str]:
    """Rows that mix what the protocol holds fixed, rows with fewer runs counted than listed, and (table_wide) rows
    of one table trained under different budgets; a fidelity table's arms differ on purpose. Images are checked
    table-wide by image_problems."""
    problems, shared = [], {}
    for label, records in loaded.items():
        counted, excluded = counted_runs(label, records)
        for name, value_of in ROW_INVARIANTS.items():
            values = sorted({value_of(record) for _, record in counted})
            if len(values) > 1:
                problems.append(f"row {label}: its runs mix {name}: {_differences(values)}")
            shared.setdefault(name, {})[label] = values[0]
        problems += shared_gpu_problems(label, counted)
        if excluded:
            reasons = ", ".join(f"{item['path']} ({item['reason']})" for item in excluded)
            problems.append(
                f"row {label}: n is {len(counted)} but the study listed {len(records)} runs for it; not counted: "
                f"{reasons}. Rerun those runs"
            )
    for name in TABLE_INVARIANTS if table_wide else ():
        values = shared.get(name, {})
        if len(set(values.values())) > 1:
            listed = "; ".join(f"{label}: {value}" for label, value in values.items())
            problems.append(f"rows compared in this table were trained under different {name}: {listed}")
    return problems


def counted_runs(label: str, records: list[tuple[str, dict]]) -> tuple[list[tuple[str, dict]], list[dict]]:
    """The runs a row counts, and the ones it leaves out with the reason: an interrupted run, or the same record
    twice (listed twice, or a byte copy under another name: the same content hash)."""
    counted, excluded, seen = [], [], {}
    for path, record in records:
        if record["content_sha256"] in seen:
            excluded.append({"path": path, "reason": f"duplicate of {seen[record['content_sha256']]}"})
        elif record["status"] != "complete":
            excluded.append({"path": path, "reason": record["status"]})
        else:
            counted.append((path, record))
        seen.setdefault(record["content_sha256"], path)
    if not counted:
        reasons = "; ".join(f"{item['path']}: {item['reason']}" for item in excluded) or "none given"
        raise HaetError(f"table group {label!r} has no complete run to count ({reasons})")
    return counted, excluded


# Student's t 97.5% quantiles by degrees of freedom (n - 1): a 95% interval of a mean of n runs. Past 30 the
# normal's 1.96 is within 2%. Written out so that a table job needs no scipy.
# fmt: off
T_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
# fmt: on


def ci95_half_width(values: list[float]) -> float | None:
    """Half the width of the 95% t-interval of the mean of values; None for a single run (no spread to judge)."""
    if len(values) < 2:
        return None
    t = T_975[len(values) - 2] if len(values) - 2 < len(T_975) else 1.96
    return t * statistics.stdev(values) / len(values) ** 0.5


def _regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) by its continued fraction (modified Lentz), for Student's t without scipy."""
    if x <= 0.0 or x >= 1.0:
        return max(0.0, min(1.0, x))
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point
        return 1.0 - _regularized_incomplete_beta(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom (df need not be an integer)."""
    return _regularized_incomplete_beta(df / 2, 0.5, df / (df + t * t))


def t_quantile_975(df: float) -> float:
    """The t value with two-sided p 0.05 at df degrees of freedom, by bisection."""
    low, high = 0.0, 1000.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if t_two_sided_p(middle, df) > 0.05 else (low, middle)
    return (low + high) / 2


def welch(values: list[float], reference: list[float]) -> tuple[float, float | None, float | None]:
    """mean(values) - mean(reference), the 95% half-width of that difference and Welch's two-sided p (None with
    fewer than two runs on either side: no spread to judge)."""
    difference = statistics.fmean(values) - statistics.fmean(reference)
    if len(values) < 2 or len(reference) < 2:
        return difference, None, None
    a, b = statistics.variance(values) / len(values), statistics.variance(reference) / len(reference)
    if a + b == 0:
        return difference, 0.0, 1.0 if difference == 0 else 0.0
    df = (a + b) ** 2 / (a**2 / (len(values) - 1) + b**2 / (len(reference) - 1))
    standard_error = math.sqrt(a + b)
    return difference, t_quantile_975(df) * standard_error, t_two_sided_p(difference / standard_error, df)


def verdict(best: list[float], paper_percent: float) -> str:
    """matches: the paper's number lies in the 95% interval of the best-epoch mean; else below or above it."""
    half_width = ci95_half_width(best)
    if half_width is None:
        return "one run"
    mean, paper = statistics.fmean(best), paper_percent / 100
    if mean - half_width <= paper <= mean + half_width:
        return "matches"
    return "below" if mean + half_width < paper else "above"


def fidelity_fields(row: dict, counted: list[tuple[str, dict]], reference: list[tuple[str, dict]] | None) -> dict:
    """What the fidelity table adds to a row: the paper's number for its target, the difference to it, the
    difference to the reference arm in final accuracy (Welch), and how the arm trained."""
    arm, _, target = row["label"].partition("|")
    if target not in FIDELITY_TARGETS:
        targets = ", ".join(FIDELITY_TARGETS)
        raise HaetError(f"fidelity row {row['label']!r}: label it ARM|TARGET, the target one of {targets}")
    paper = FIDELITY_TARGETS[target][0]
    finals = [record["metrics"]["val_acc_final"] for _, record in counted]
    bests = [record["metrics"]["val_acc_best_optimistic"] for _, record in counted]
    fields = {"arm": arm, "target": target, "paper": paper, "val_acc_best_ci95": ci95_half_width(bests)}
    fields |= {"best_vs_paper": statistics.fmean(bests) - paper / 100, "verdict": verdict(bests, paper)}
    fields |= {"final_vs_reference": None, "final_vs_reference_ci95": None, "welch_p": None}
    if reference is not None:
        difference, half_width, p = welch(finals, [record["metrics"]["val_acc_final"] for _, record in reference])
        fields |= {"final_vs_reference": difference, "final_vs_reference_ci95": half_width, "welch_p": p}
    first = counted[0][1]
    fields["epochs_mean"] = statistics.fmean(record["metrics"]["epochs"] for _, record in counted)
    fields["pipeline"] = first["runtime"]["pipeline"]
    fields["autoaugment"] = first["config"]["recipe"].get("autoaugment", "torchvision")
    fields["normalize"] = first["config"]["recipe"]["normalize"]
    fields["dataset"] = first["subset"]["dataset"]
    return fields


def hardware_of(record: dict) -> str:
    """What a run ran on, as a leaderboard compares it: the device's name and, on GPUs, how many it was given."""
    provenance = record["provenance"]
    if not record["runtime"]["device"].startswith("cuda"):
        return f"{provenance['device_name']} (CPU, {provenance['cpu_count']} cores)"
    visible = (provenance.get("gpu") or {}).get("visible_devices")
    count = len([gpu for gpu in visible.split(",") if gpu.strip()]) if visible else 1
    return f"{count}x {provenance['device_name']}"


def leaderboard_row(label: str, records: list[tuple[str, dict]]) -> dict:
    """One entry: the mean score of its runs, how they ended, and the hardware and budget they had."""
    sources = [{"path": path, "content_sha256": record["content_sha256"]} for path, record in records]
    not_submissions = [path for path, record in records if "submission" not in record]
    if not_submissions:
        raise HaetError(f"leaderboard row {label!r}: {not_submissions[0]} is a training's record, not a submission's")
    counted, excluded = counted_runs(label, records)
    finals = [record["metrics"]["val_acc_final"] for _, record in counted]
    outcomes = collections.Counter(record["submission"]["outcome"] for _, record in counted)
    first = counted[0][1]
    return {
        "label": label,
        "n": len(counted),
        "val_acc_final_mean": statistics.fmean(finals),
        "val_acc_final_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
        "val_acc_final_ci95": ci95_half_width(finals),
        "outcomes": ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items())),
        "params": first["model"]["params"],
        "macs": first["model"]["macs"],
        "hardware": "; ".join(sorted({hardware_of(record) for _, record in counted})),
        "budget_s": first["budget"]["seconds"],
        "budget_mode": f"{budget_mode_of(first)}, hard kill after a {first['submission']['grace_s']:g}-s grace",
        "sandbox": "; ".join(sorted({sandbox_of(record) for _, record in counted})),
        "dataset": (
            f"{first['subset']['dataset']} ({first['subset']['train_count']} train, "
            f"{first['subset']['validation_count']} test)"
        ),  # fmt: skip
        "image": _short_image({image_of(record) for _, record in counted}),
        "sources": sources,
        "excluded": excluded,
        "finals": finals,
    }


def sandbox_of(record: dict) -> str:
    """Where a submission ran; records made before the sandbox ran with the harness's rights."""
    sandbox = record["submission"].get("sandbox", "none")
    return UNSANDBOXED if sandbox == "none" else sandbox


UNSANDBOXED = "UNSANDBOXED (the harness's rights)"


def leaderboard_rows(groups: dict[str, list[tuple[str, dict]]]) -> list[dict]:
    """Entries ranked by mean final accuracy, each against the leader by Welch's test."""
    rows = sorted((leaderboard_row(label, records) for label, records in groups.items()),
                  key=lambda row: -row["val_acc_final_mean"])  # fmt: skip
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
        difference, half_width, p = (None, None, None) if rank == 1 else welch(row["finals"], rows[0]["finals"])
        row |= {"vs_leader": difference, "vs_leader_ci95": half_width, "welch_p": p}
    for row in rows:
        del row["finals"]
    return rows


def summarize(label: str, records: list[tuple[str, dict]]) -> dict:
    """One row: the mean and spread of a group of runs of one model spec and recipe."""
    sources = [{"path": path, "content_sha256": record["content_sha256"]} for path, record in records]
    records, excluded = counted_runs(label, records)
    specs = {
        (r["model"]["name"], r["model"]["depth"], r["model"]["width"], r["model"]["resolution"]) for _, r in records
    }
    if len(specs) != 1:
        raise HaetError(f"table group {label!r} mixes model specs {sorted(specs)}; a row summarises one")
    first = records[0][1]
    finals = [record["metrics"]["val_acc_final"] for _, record in records]
    bests = [record["metrics"]["val_acc_best_optimistic"] for _, record in records]
    model_label, _, variant = label.partition("|")
    return {
        "label": label,
        "model": first["model"]["name"],
        "variant": variant,
        "depth": first["model"]["depth"],
        "width": first["model"]["width"],
        "resolution": first["model"]["resolution"],
        "input_px": first["model"]["input_px"],
        "augment": first["config"]["recipe"]["augment"],
        "n": len(records),
        "val_acc_final_mean": statistics.fmean(finals),
        "val_acc_final_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
        "val_acc_final_ci95": ci95_half_width(finals),
        "val_acc_best_optimistic_mean": statistics.fmean(bests),
        "params": first["model"]["params"],
        "macs": first["model"]["macs"],
        "budget_s": first["budget"]["seconds"],
        "max_epochs": first["budget"]["max_epochs"],
        "budget_mode": budget_mode_of(first),
        "precision": precision_of(first),
        "trainings_per_gpu": max((trainings_per_gpu(record) or 0 for _, record in records), default=0) or None,
        "image": _short_image({image_of(record) for _, record in records}),
        "sources": sources,
        "excluded": excluded,
    }


def build_rows(kind: str, groups: dict[str, list[tuple[str, dict]]]) -> list[dict]:
    if kind == "leaderboard":
        return leaderboard_rows(groups)
    rows = [summarize(label, records) for label, records in groups.items()]
    if kind == "fidelity":  # the first group is the reference arm
        counted = {label: counted_runs(label, records)[0] for label, records in groups.items()}
        reference = next(iter(counted), None)
        for row in rows:
            other = counted[reference] if row["label"] != reference else None
            row |= fidelity_fields(row, counted[row["label"]], other)
        return rows
    if kind == "table1":
        rows.sort(key=lambda row: -row["val_acc_final_mean"])
    baselines = {row["model"]: row for row in rows if row["variant"] == "baseline"}
    paper = PAPER_VALUES.get(kind, {})
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
        base = baselines.get(row["model"])
        row["macs_vs_baseline"] = row["macs"] / base["macs"] - 1 if base and base is not row else None
        row["params_vs_baseline"] = row["params"] / base["params"] - 1 if base and base is not row else None
        row["paper"] = paper.get(row["label"])  # keyed by label: a value shows only beside the same row
        row["paper_model"] = PAPER_MODELS.get(kind, {}).get(row["label"])
    return rows


PERCENT_COLUMNS = ("val_acc_final_mean", "val_acc_final_std", "val_acc_best_optimistic_mean")
INTERVAL_COLUMNS = ("val_acc_final_ci95", "val_acc_best_ci95", "final_vs_reference_ci95", "vs_leader_ci95")
SIGNED_PERCENT_COLUMNS = ("best_vs_paper", "final_vs_reference", "vs_leader")  # points of accuracy


def _cell(column: str, value) -> str:
    if value is None:
        return ""
    if column in PERCENT_COLUMNS:
        return f"{100 * value:.1f}"
    if column in INTERVAL_COLUMNS:
        return f"±{100 * value:.1f}"
    if column in SIGNED_PERCENT_COLUMNS:
        return f"{100 * value:+.1f}"
    if column == "welch_p":
        return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"
    if column == "epochs_mean":
        return f"{value:g}"
    if column in ("macs_vs_baseline", "params_vs_baseline"):
        return f"{100 * value:+.1f}%"
    if column in ("params", "macs"):
        return f"{value:,}"
    return str(value)


HEADERS = {
    "val_acc_final_mean": "acc final %",
    "val_acc_final_std": "std %",
    "val_acc_final_ci95": "95% CI %",
    "val_acc_best_optimistic_mean": "acc best-epoch % (optimistic)",
    "val_acc_best_ci95": "best-epoch 95% CI %",
    "paper": "paper %",
    "paper_model": "paper's model",
    "best_vs_paper": "best-epoch - paper (points)",
    "final_vs_reference": "final - reference arm (points)",
    "final_vs_reference_ci95": "its 95% CI",
    "welch_p": "Welch p",
    "vs_leader": "- leader (points)",
    "vs_leader_ci95": "its 95% CI",
    "epochs_mean": "epochs",
    "budget_s": "budget s",
    "max_epochs": "max epochs",
    "budget_mode": "budget mode",
    "trainings_per_gpu": "trainings per GPU",
    "macs_vs_baseline": "MACs vs baseline",
    "params_vs_baseline": "params vs baseline",
}


def render_markdown(table: dict) -> str:
    columns = columns_of(table["kind"])
    lines = [
        f"# {table['title']}",
        "",
        "| " + " | ".join(HEADERS.get(c, c) for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_cell(c, row.get(c)) for c in columns) + " |" for row in table["rows"]]
    lines += [""] + [f"- {note}" for note in table["notes"]]
    return "\n".join(lines) + "\n"


def render_csv(table: dict) -> str:
    columns = columns_of(table["kind"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in table["rows"]:
        writer.writerow({column: "" if row.get(column) is None else row.get(column) for column in columns})
    return buffer.getvalue()


LEADERBOARD_NOTE = (
    "Each entry trained in a sandbox of its own until its budget on the clock named in budget mode was spent (sandbox "
    "CPU s: the CPU seconds of all its processes, which a busy machine does not shorten), and the harness scored the "
    "model in place then on test images it never saw: acc final is that score (no choice of epoch on test images). "
    "- leader is the difference from the first row in points, with its 95% interval and Welch's "
    "two-sided p. A row compares only with rows of the same hardware and budget."
)


def fidelity_notes(rows: list[dict]) -> list[str]:
    """What the fidelity table's numbers mean, from its rows: the reference arm and each target's source."""
    if not rows:
        return []
    notes = [
        f"The reference arm is {rows[0]['arm']}; every other arm changes one protocol detail from it. "
        "final - reference is in final accuracy, with the 95% interval of the difference and Welch's two-sided "
        "p. verdict: matches when the paper's number lies in the 95% interval of the best-epoch mean (the kind of "
        "number the paper reports), else below or above it.",
    ]
    if any(row["dataset"] == "imagefolder" for row in rows):
        notes.append(
            "Images from an ImageFolder copy: ../shared/data/cifar10 is a JPEG re-encoding of CIFAR-10's official "
            "batches, so its numbers are not the batches'; `data.dataset: cifar10` reads the official ones."
        )
    for target in dict.fromkeys(row["target"] for row in rows):
        paper, source = FIDELITY_TARGETS[target]
        notes.append(f"paper {paper} for target {target}: {source}.")
    return notes


METRIC_NAMES = {"final": "final accuracy", "best_epoch": "best-epoch accuracy (optimistic)"}


def search_source(path: str | Path) -> dict:
    """What a search summary says about how it chose (read back against its hash), for a table's note."""
    summary = read_record(path)
    problem = summary.get("problem") or {}
    if summary.get("schema") != "haet/search-summary/v1" or "metric" not in problem:
        raise HaetError(f"{path}: not a search summary that names its metric; rerun the search")
    return {
        "path": str(path),
        "content_sha256": summary["content_sha256"],
        "kind": summary["kind"],
        "metric": problem["metric"],
        "subsets": len(problem["manifests"]),
        "evaluations": summary["evaluations"],
    }


def search_note(source: dict) -> str:
    subsets = f"{source['subsets']} subset" + ("s" if source["subsets"] != 1 else "")
    return (
        f"{source['path']}: the {source['kind'].upper()} search chose by the mean {METRIC_NAMES[source['metric']]} "
        f"over {subsets} ({source['evaluations']} evaluations); this table reports final accuracy."
    )


def table_notes(
    kind: str, loaded: dict[str, list[tuple[str, dict]]], rows: list[dict], allow_mixed_images: bool, searches: list
) -> list[str]:
    """A table's notes, every one derived from its records, rows and searches (the audit derives them again)."""
    notes = [LEADERBOARD_NOTE if kind == "leaderboard" else OPTIMISM_NOTE]
    if any(r["subset"]["validation_from_test_split"] for records in loaded.values() for _, r in records):
        notes.append("Validation images were drawn from the dataset's test split, as in the paper.")
    if allow_mixed_images:
        notes.append("The study allows runs from different images (or native runs) in one table: see `image`.")
    notes += [search_note(source) for source in searches]
    notes += fidelity_notes(rows) if kind == "fidelity" else []
    if kind == "leaderboard" and len({row["hardware"] for row in rows}) > 1:
        notes.append("Rows ran on different hardware: under a time budget they are not comparable.")
    if kind == "leaderboard" and len({row["budget_mode"] for row in rows}) > 1:
        notes.append("Rows ran under different clocks: they are not comparable.")
    unsandboxed = [row["label"] for row in rows if UNSANDBOXED in row["sandbox"]] if kind == "leaderboard" else []
    if unsandboxed:
        notes.append(f"WARNING: {', '.join(unsandboxed)} ran unsandboxed, with the harness's rights: such an entry "
                     "could have read the answers or changed its own score; its row proves nothing.")  # fmt: skip
    left_out = [f"{item['path']} ({item['reason']})" for row in rows for item in row["excluded"]]
    if left_out:
        notes.append("Not counted in n, means or ranks: " + ", ".join(left_out) + ".")
    return notes


def make_table(
    kind: str,
    groups: dict[str, list[str]],
    out_prefix: str | Path,
    allow_mixed_images: bool = False,
    search_summaries: list[str] | None = None,
) -> dict:
    """Read every group's run records (hash-checked), summarise, and write PREFIX.json, .csv and .md. The search
    summaries named (NAS for Table 2a, HPO for Table 3) add a note saying by which metric each search chose."""
    if kind not in TITLES:
        raise HaetError(f"unknown table {kind!r}; tables: {', '.join(TITLES)}")
    loaded = {label: [(path, read_run_record(path)) for path in paths] for label, paths in groups.items()}
    searches = [search_source(path) for path in search_summaries or []]
    rows = build_rows(kind, loaded)
    table = {
        "schema": SCHEMA,
        "kind": kind,
        "title": TITLES[kind],
        "columns": columns_of(kind),
        "rows": rows,
        "notes": table_notes(kind, loaded, rows, allow_mixed_images, searches),
        "allow_mixed_images": allow_mixed_images,
        "searches": searches,
    }
    prefix = Path(out_prefix)
    # The .csv and .md are renderings of the .json; the .json goes last, so a crash in between leaves files the
    # audit finds out of step (it re-renders both and compares) rather than a table that looks finished.
    write_atomic(prefix.with_suffix(".csv"), render_csv(table))
    write_atomic(prefix.with_suffix(".md"), render_markdown(table))
    return write_record(prefix.with_suffix(".json"), table)


def rank(groups: dict[str, list[str]], out: str | Path) -> dict:
    """Models ranked by mean final accuracy of their runs: what checkpoints read to pick the top k."""
    rows = build_rows("ranking", {label: [(p, read_run_record(p)) for p in paths] for label, paths in groups.items()})
    rows.sort(key=lambda row: -row["val_acc_final_mean"])
    ranking = {
        "schema": "haet/ranking/v1",
        "ranked": [
            {
                "label": row["label"],
                "model": row["model"],
                "val_acc_final_mean": row["val_acc_final_mean"],
                "n": row["n"],
                "sources": row["sources"],
                "excluded": row["excluded"],
            }
            for row in rows
        ],
    }
    return write_record(out, ranking)


def _well_formed(row: object) -> bool:
    """A table row as haet writes it, as far as the audit reads it before recomputing it."""
    if not isinstance(row, dict) or not isinstance(row.get("label"), str) or not isinstance(row.get("sources"), list):
        return False
    return all(isinstance(source, dict) and {"path", "content_sha256"} <= set(source) for source in row["sources"])


def audit(table_path: str | Path) -> list[str]:
    """Problems found re-deriving a table from its records (empty when every number checks out). An unreadable
    table is a problem of its own, so that auditing several tables reports on each."""
    try:
        table = read_record(table_path)
    except HaetError as exc:
        return [str(exc)]
    if table.get("schema") != SCHEMA or table.get("kind") not in TITLES or not isinstance(table.get("rows"), list):
        what = "no rows" if table.get("schema") == SCHEMA else table.get("schema") or "a record without a schema"
        return [f"{table_path}: not a haet table ({what}); audit the TABLE.json files `haet report table` writes"]
    malformed = [row for row in table["rows"] if not _well_formed(row)]
    if malformed or not isinstance(table.get("notes"), list) or not isinstance(table.get("searches", []), list):
        return [f"{table_path}: a haet table whose rows, notes or searches are not as haet writes them: edited"]
    problems = []
    loaded: dict[str, list[tuple[str, dict]]] = {}
    for row in table["rows"]:
        loaded[row["label"]] = []
        for source in row["sources"]:
            try:
                record = read_run_record(source["path"])
            except HaetError as exc:
                problems.append(f"row {row['label']}: {exc}")
                continue
            if record["content_sha256"] != source["content_sha256"]:
                problems.append(
                    f"row {row['label']}: {source['path']} is not the run the table was made from "
                    "(its hash changed since)"
                )
            loaded[row["label"]].append((source["path"], record))
    if problems:
        return problems
    problems += cross_problems(table_path, loaded)
    problems += image_problems(table, [record for records in loaded.values() for _, record in records])
    problems += protocol_problems(loaded, table_wide=table["kind"] != "fidelity")
    for source in table.get("searches", []):
        problems += search_log_problems(source["path"])
        try:
            again = search_source(source["path"])
        except HaetError as exc:
            problems.append(str(exc))
            continue
        if again != source:
            problems.append(f"{source['path']}: not the search summary the table was made from (it changed since)")
        elif search_note(again) not in table["notes"]:
            problems.append(f"the note on {source['path']} is not what that summary says; the table was edited")
    expected = build_rows(table["kind"], loaded)
    if table.get("title") != TITLES.get(table["kind"]):
        problems.append(f"its title is {table.get('title')!r}, not the {table['kind']} title: the table was edited")
    notes = table_notes(table["kind"], loaded, expected, table.get("allow_mixed_images", False), table["searches"])
    if table.get("notes") != notes:
        problems.append("its notes are not the ones its records, rows and searches give: the table was edited")
    for row, again in zip(table["rows"], expected, strict=True):
        for column in [*columns_of(table["kind"]), "excluded"]:
            if row.get(column) != again.get(column):
                problems.append(
                    f"row {row['label']}: {column} is {row.get(column)!r}, records give {again.get(column)!r}"
                )
    return problems + rendering_problems(table_path, table)


def cross_problems(table_path: str | Path, loaded: dict[str, list[tuple[str, dict]]]) -> list[str]:
    """Each record against itself, its study's manifests and its stage's chosen config; each row against the
    records beside its own (haet.report.crosscheck)."""
    study = study_of(table_path)  # a table made outside a study (of runs picked by hand) has no study to hold to
    manifests, problems = study_manifests(study) if study else {}, []
    for label, records in loaded.items():
        for path, record in records:
            problems += record_problems(path, record)
            if study:
                problems += manifest_problems(path, record, manifests) + config_problems(path, record, study)
        problems += sibling_problems(label, [path for path, _ in records]) if study else []
    return problems


def rendering_problems(table_path: str | Path, table: dict) -> list[str]:
    """The .md and .csv people read must be exactly the renderings of the audited .json."""
    problems = []
    for suffix, render in ((".md", render_markdown), (".csv", render_csv)):
        path = Path(table_path).with_suffix(suffix)
        try:
            on_disk = path.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{path}: cannot be read ({exc.strerror}); rerun the table's rule")
            continue
        if on_disk != render(table):
            problems.append(f"{path}: differs from what {Path(table_path).name} renders to (edited, or out of step)")
    return problems
