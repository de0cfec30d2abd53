"""The study's figures, drawn from run records and search logs only (never from tables), as PNG files.

- screening: final validation accuracy per model, mean and 95% interval over runs, the paper's value beside it
- nas: each NAS evaluation's MACs against its accuracy, the baseline's accuracy, and the feasible frontier
- hpo: each HPO evaluation's accuracy, and the best so far
- curves: validation accuracy and learning rate against epochs, one line per run
- fidelity: a forest plot, one line an arm: best-epoch and final means with 95% intervals, the paper's number
"""

from __future__ import annotations

import io
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from haet import HaetError  # noqa: E402
from haet.files import write_atomic  # noqa: E402
from haet.records import read_run_record, read_search_log  # noqa: E402
from haet.report.paper import FIDELITY_TARGETS, PAPER_VALUES  # noqa: E402
from haet.report.tables import ci95_half_width, counted_runs  # noqa: E402

SEARCH_METRICS = {"final": "final accuracy", "best_epoch": "best-epoch accuracy (optimistic)"}


def screening(groups: dict[str, list[str]], searches: list[str], axes: plt.Axes) -> None:
    rows = []
    for label, paths in groups.items():
        counted, _ = counted_runs(label, [(path, read_run_record(path)) for path in paths])  # as Table 1 counts
        finals = [record["metrics"]["val_acc_final"] for _, record in counted]
        rows.append((label, 100 * statistics.fmean(finals), 100 * (ci95_half_width(finals) or 0.0), len(finals)))
    rows.sort(key=lambda row: -row[1])
    positions = range(len(rows))
    axes.bar(positions, [row[1] for row in rows], yerr=[row[2] for row in rows], capsize=4, color="#4C72B0",
             label="ours: mean, 95% interval over runs")  # fmt: skip
    paper = PAPER_VALUES["table1"]
    shown = [(i, paper[row[0]]) for i, row in enumerate(rows) if row[0] in paper]
    if shown:
        axes.scatter(*zip(*shown, strict=True), marker="D", color="#C44E52", zorder=3, label="paper (CIFAR-10)")
    axes.set_xticks(list(positions), [f"{row[0]}\nn={row[3]}" for row in rows], rotation=30, ha="right")
    axes.set_ylabel("final validation accuracy (%)")
    axes.set_title("Screening (Table 1)")
    axes.legend(loc="lower left", fontsize=8)


def nas(groups: dict[str, list[str]], searches: list[str], axes: plt.Axes) -> None:
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, summary_path in zip(colors, searches, strict=False):
        summary, evaluations = read_search_log(summary_path)
        trained = [entry for entry in evaluations if entry["status"] == "trained"]
        model = summary["problem"]["base"]["model"]["name"]
        axes.scatter([entry["macs"] / 1e6 for entry in trained], [100 * entry["accuracy"] for entry in trained],
                     facecolors="none", edgecolors=color, label=f"{model}: evaluation")  # fmt: skip
        feasible = sorted((entry["macs"] / 1e6, 100 * entry["accuracy"]) for entry in trained if entry["feasible"])
        if feasible:
            axes.scatter(*zip(*feasible, strict=True), color=color, label=f"{model}: feasible")
            frontier, best = [], -1.0  # from the smallest feasible model up: each point more accurate than all smaller
            for macs, accuracy in feasible:
                if accuracy > best:
                    frontier.append((macs, accuracy))
                    best = accuracy
            axes.step(*zip(*frontier, strict=True), where="post", color=color, alpha=0.6)
        axes.axhline(100 * summary["problem"]["baseline_acc"], color=color, linestyle="--",
                     label=f"{model}: baseline accuracy (the constraint)")  # fmt: skip
    axes.set_xscale("log")
    for axis in (axes.xaxis.set_major_formatter, axes.xaxis.set_minor_formatter):
        axis(FuncFormatter(lambda value, _: f"{value:g}"))  # 2, 3, 4 rather than 2x10^0
    axes.set_xlabel("MACs (millions, log scale)")
    axes.set_ylabel(f"validation {SEARCH_METRICS[summary['problem']['metric']]} (%)")
    axes.set_title("NOMAD NAS: minimise MACs with accuracy >= baseline")
    axes.legend(fontsize=7)


def hpo(groups: dict[str, list[str]], searches: list[str], axes: plt.Axes) -> None:
    for summary_path in searches:
        summary, evaluations = read_search_log(summary_path)
        trained = [entry for entry in evaluations if entry["status"] == "trained"]
        indices = [entry["index"] + 1 for entry in trained]
        accuracies = [100 * entry["accuracy"] for entry in trained]
        axes.scatter(indices, accuracies, label="evaluation")
        best_so_far = [max(accuracies[: i + 1]) for i in range(len(accuracies))]
        axes.step(indices, best_so_far, where="post", color="#C44E52", label="best so far")
        failed = [entry["index"] + 1 for entry in evaluations if entry["status"] == "failed"]
        if failed:
            axes.scatter(failed, [min(accuracies, default=0)] * len(failed), marker="x", color="grey", label="failed")
    axes.set_xlabel("evaluation")
    axes.set_ylabel(f"validation {SEARCH_METRICS[summary['problem']['metric']]} (%)")
    axes.set_title("NOMAD HPO")
    axes.legend(fontsize=8)


def curves(groups: dict[str, list[str]], searches: list[str], axes: plt.Axes) -> None:
    rate_axes = axes.twinx()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (label, paths) in zip(colors, groups.items(), strict=False):
        for number, path in enumerate(paths):
            record = read_run_record(path)
            curve = record["metrics"]["curve"]
            epochs = [point["steps"] / record["metrics"]["steps_per_epoch"] for point in curve]  # a last partial one
            axes.plot(epochs, [100 * point["val_acc"] for point in curve], color=color,
                      label=label if number == 0 else None)  # fmt: skip
            rate_axes.plot(epochs, [point["lr"] for point in curve], color=color, linestyle=":", alpha=0.6)
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation accuracy (%), solid")
    rate_axes.set_ylabel("learning rate, dotted")
    axes.set_title("Learning curves of the final evaluation's runs")
    axes.legend(fontsize=8, loc="lower right")


def fidelity(groups: dict[str, list[str]], searches: list[str], axes: plt.Axes) -> None:
    """Labels ARM|TARGET as the fidelity table's; the reference arm first, at the top."""
    labels, counts = list(groups), []
    for position, label in enumerate(labels):
        counted, _ = counted_runs(label, [(path, read_run_record(path)) for path in groups[label]])
        counts.append(len(counted))
        for metric, offset, color, name in (
            ("val_acc_best_optimistic", -0.15, "#4C72B0", "best epoch (optimistic, as the paper reports)"),
            ("val_acc_final", 0.15, "#8C8C8C", "final"),
        ):
            values = [100 * record["metrics"][metric] for _, record in counted]
            axes.errorbar(statistics.fmean(values), position + offset, xerr=ci95_half_width(values) or 0.0,
                          fmt="o", color=color, capsize=3, label=name if position == 0 else None)  # fmt: skip
        target = label.partition("|")[2]
        if target in FIDELITY_TARGETS:
            axes.scatter(FIDELITY_TARGETS[target][0], position, marker="D", color="#C44E52", zorder=3,
                         label="paper" if position == 0 else None)  # fmt: skip
    ticks = [f"{label.replace('|', ' -> ')}\nn={count}" for label, count in zip(labels, counts, strict=True)]
    axes.set_yticks(range(len(labels)), ticks)
    axes.invert_yaxis()
    axes.set_xlabel("validation accuracy (%), mean and 95% interval over runs")
    axes.set_title("Does it reproduce? One protocol detail changed per arm")
    axes.legend(fontsize=7, loc="best")


def leaderboard(groups: dict[str, list[str]], searches: list[str], axes: plt.Axes) -> None:
    """Entries ranked by mean score, the leader at the top: each run's score, and the mean with its 95% interval."""
    scored = []
    for label, paths in groups.items():
        counted, _ = counted_runs(label, [(path, read_run_record(path)) for path in paths])
        unsandboxed = any(record["submission"].get("sandbox", "none") == "none" for _, record in counted)
        scored.append((label, [100 * record["metrics"]["val_acc_final"] for _, record in counted], unsandboxed))
    scored.sort(key=lambda entry: -statistics.fmean(entry[1]))
    for position, (_, values, unsandboxed) in enumerate(scored):
        axes.scatter(values, [position] * len(values), color="#8C8C8C", s=14, label="a run" if position == 0 else None)
        axes.errorbar(statistics.fmean(values), position, xerr=ci95_half_width(values) or 0.0, fmt="o",
                      color="#C44E52" if unsandboxed else "#4C72B0", capsize=3,
                      label="mean, 95% interval" if position == 0 else None)  # fmt: skip
    names = [f"{label}\nn={len(values)}" + ("\nUNSANDBOXED" if bad else "") for label, values, bad in scored]
    axes.set_yticks(range(len(scored)), names)
    for tick, (_, _, unsandboxed) in zip(axes.get_yticklabels(), scored, strict=True):
        tick.set_color("#C44E52" if unsandboxed else "black")
    axes.invert_yaxis()
    axes.set_xlabel("test accuracy (%) of the model in place when the budget was spent")
    axes.set_title("Leaderboard: one budget, one machine")
    axes.legend(fontsize=7, loc="best")


FIGURES = {
    "screening": screening,
    "nas": nas,
    "hpo": hpo,
    "curves": curves,
    "fidelity": fidelity,
    "leaderboard": leaderboard,
}


def write_figure(kind: str, groups: dict[str, list[str]], searches: list[str], out: str | Path) -> None:
    """Draw one figure kind into a PNG, written atomically (a failed drawing leaves no file)."""
    if kind not in FIGURES:
        raise HaetError(f"unknown figure {kind!r}; figures: {', '.join(FIGURES)}")
    needs_searches = kind in ("nas", "hpo")
    if needs_searches and not searches:
        raise HaetError(f"the {kind} figure draws search logs: name their summaries with --search-summary")
    if not needs_searches and not groups:
        raise HaetError(f"the {kind} figure draws run records: name them with --group LABEL RECORD...")
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        FIGURES[kind](groups, searches, axes)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    write_atomic(out, buffer.getvalue())
