"""What the audit checks beyond hashes: that each file says what the files it came from say.

A content hash catches an accident, not a consistent edit: a record re-hashed after its accuracy was raised reads
back fine. So the audit also holds
- each run record to itself: its final and best-epoch accuracies, best epoch, steps and epochs are its curve's;
- each run record to its subset manifest, which must be one of the study's own (its subsets folders), reading back
  whole;
- each run record to the config its stage gave it: a NAS model's records to that search's best.yaml, the tuned
  runs' records to the HPO search's tuned.yaml;
- each row to the run records beside its own: a folder of runs holds none the row leaves unnamed;
- each search a table names to its log, and each trained evaluation of the log to the run records it cites.
What it cannot catch is a forger who reruns the whole chain consistently (README, "What the audit proves").
"""

from __future__ import annotations

import statistics
from pathlib import Path

import yaml

from haet import HaetError
from haet.files import read_record
from haet.records import SEARCH_METRICS, read_run_record, read_search_log

MANIFEST_SCHEMA = "haet/subset-manifest/v1"


def record_problems(path: str, record: dict) -> list[str]:
    """A run record whose summary numbers are not its own curve's."""
    metrics = record["metrics"]
    curve = metrics["curve"]
    if not curve:
        return [f"{path}: has no validation curve to hold its accuracies to"]
    last, best = curve[-1], max(curve, key=lambda point: point["val_acc"])
    problems = []
    if metrics["val_acc_final"] != last["val_acc"]:
        problems.append(f"val_acc_final {metrics['val_acc_final']} is not its curve's last point ({last['val_acc']})")
    if metrics["val_acc_best_optimistic"] != best["val_acc"] or metrics["val_acc_best_epoch"] != best["epoch"]:
        problems.append(
            f"best epoch {metrics['val_acc_best_epoch']} at {metrics['val_acc_best_optimistic']} is not its curve's "
            f"(epoch {best['epoch']} at {best['val_acc']})"
        )
    if metrics["val_acc_best_optimistic"] < metrics["val_acc_final"]:
        problems.append("its best-epoch accuracy is below its final accuracy")
    if metrics["steps"] != last["steps"] or metrics["epochs"] != last["epoch"]:
        problems.append(
            f"{metrics['epochs']} epochs and {metrics['steps']} steps, where its curve ends at epoch {last['epoch']} "
            f"after {last['steps']} steps"
        )
    return [f"{path}: {problem}" for problem in problems]


def study_of(table_path: str | Path) -> Path | None:
    """The study folder a table belongs to (results/<study>, holding tables/), or None for a table elsewhere."""
    folder = Path(table_path).resolve().parent
    return folder.parent if folder.name == "tables" else None


def study_manifests(study: Path) -> dict[str, str]:
    """Every subset manifest of a study that reads back whole, by content hash: those in its subsets folders."""
    manifests = {}
    for path in sorted(study.rglob("*.json")):
        if "subsets" not in path.relative_to(study).parts[:-1]:
            continue
        try:
            manifest = read_record(path)
        except HaetError:
            continue  # an edited manifest is no manifest of the study: a record citing it fails below
        if manifest.get("schema") == MANIFEST_SCHEMA:
            manifests[manifest["content_sha256"]] = str(path)
    return manifests


def manifest_problems(path: str, record: dict, manifests: dict[str, str]) -> list[str]:
    cited = record["subset"]["manifest_sha256"]
    if cited in manifests:
        return []
    return [f"{path}: its subset manifest {cited[:12]}... is none of the study's (a manifest that reads back whole)"]


def _yaml(path: Path) -> dict | None:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def config_problems(path: str, record: dict, study: Path) -> list[str]:
    """A record of a stage after a search against what that search chose: the NAS model (nas/MODEL/best.yaml)
    for augment, HPO and final runs; the tuned recipe (hpo/tuned.yaml) for HPO and final runs."""
    try:
        parts = Path(path).resolve().relative_to(study.resolve()).parts
    except ValueError:
        return []
    after_nas = parts[:1] == ("augment",) or parts[:2] in (("hpo", "runs"), ("final", "runs"))
    checks = []
    if after_nas:
        checks.append(("model", study / "nas" / record["model"]["name"] / "best.yaml"))
    if parts[:2] in (("hpo", "runs"), ("final", "runs")):
        checks.append(("recipe", study / "hpo" / "tuned.yaml"))
    problems = []
    for section, chosen_path in checks:
        chosen = _yaml(chosen_path)
        if not isinstance(chosen, dict) or not isinstance(chosen.get(section), dict):
            problems.append(f"{path}: {chosen_path} is missing or unreadable, so its {section} cannot be checked")
            continue
        trained = record["config"][section]
        differing = sorted(key for key, value in chosen[section].items() if trained.get(key) != value)
        if differing:
            listed = ", ".join(f"{key} {trained.get(key)!r} (chosen: {chosen[section][key]!r})" for key in differing)
            problems.append(f"{path}: its {section} is not what {chosen_path} chose: {listed}")
    return problems


def sibling_problems(label: str, sources: list[str]) -> list[str]:
    """Run records (runK.json) beside a row's own that the row does not name: a row that dropped some of its runs."""
    named = {Path(source).resolve() for source in sources}
    folders = {Path(source).resolve().parent for source in sources}
    unnamed = sorted(
        str(path)
        for folder in folders
        for path in folder.glob("run*.json")
        if path.stem.removeprefix("run").isdigit() and path.resolve() not in named
    )
    if not unnamed:
        return []
    return [
        f"row {label}: its folder holds run records the row does not name: {', '.join(unnamed)} (a row that left "
        "runs out; remove records of runs the study no longer makes)"
    ]


def search_log_problems(summary_path: str) -> list[str]:
    """A search's log against its summary (its hash) and every trained evaluation against its run records."""
    try:
        summary, evaluations = read_search_log(summary_path)
    except HaetError as exc:
        return [str(exc)]
    field = SEARCH_METRICS[summary["problem"]["metric"]]
    problems = []
    for entry in evaluations:
        if entry.get("status") != "trained":
            continue
        try:
            records = [read_run_record(source["path"]) for source in entry["records"]]
        except HaetError as exc:
            problems.append(f"{summary_path}: evaluation {entry['index']}: {exc}")
            continue
        cited = [source["content_sha256"] for source in entry["records"]]
        accuracies = [record["metrics"][field] for record in records]
        if [record["content_sha256"] for record in records] != cited or entry["accuracy"] != statistics.fmean(
            accuracies
        ):
            problems.append(
                f"{summary_path}: evaluation {entry['index']} logs accuracy {entry['accuracy']!r}, its run records "
                f"give {statistics.fmean(accuracies)!r}"
            )
    return problems
