"""runs.csv: every run record of a study as one tidy row, for pandas.

Rows come from the stages' run records (--group STAGE RECORD...) and from the searches' summaries, whose logged
evaluations name their records with hashes; a record that changed since its search logged it is refused, so the
table cannot mix a search with runs it did not see.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from haet import HaetError
from haet.files import write_atomic
from haet.records import read_run_record, read_search_log
from haet.report.tables import budget_mode_of


def run_row(stage: str, path: str, record: dict) -> dict:
    """The flat row of one run: what ran (model, recipe, budget, runtime), what it measured, and its hashes."""
    config, model, metrics = record["config"], record["model"], record["metrics"]
    recipe, provenance = config["recipe"], record["provenance"]
    return {
        "stage": stage,
        "path": path,
        "status": record["status"],
        "stopped_by": record["budget"]["stopped_by"],
        "model": model["name"],
        "depth": model["depth"],
        "width": model["width"],
        "resolution": model["resolution"],
        "input_px": model["input_px"],
        "macs": model["macs"],
        "params": model["params"],
        **{key: recipe[key] for key in ("optimizer", "lr", "weight_decay", "batch_size", "schedule", "augment")},
        "budget_s": record["budget"]["seconds"],
        "max_epochs": record["budget"]["max_epochs"],
        "budget_mode": budget_mode_of(record),
        "device": record["runtime"]["device"],
        "device_name": provenance["device_name"],
        "gpu_visible_devices": (provenance.get("gpu") or {}).get("visible_devices"),
        "trainings_per_gpu": (provenance.get("gpu") or {}).get("trainings_sharing"),
        "pipeline": record["runtime"]["pipeline"],
        "precision": record["runtime"]["precision"],
        "torch_threads": provenance["torch_threads"],
        "dataset": record["subset"]["dataset"],
        "subset_run": record["subset"]["run"],
        "subset_seed": record["subset"]["subset_seed"],
        "seed": record["seed"],
        "val_acc_final": metrics["val_acc_final"],
        "val_acc_best_optimistic": metrics["val_acc_best_optimistic"],
        "epochs": metrics["epochs"],
        "steps": metrics["steps"],
        "train_s": metrics["train_s"],
        "images_per_s": metrics["images_per_s"],
        "content_sha256": record["content_sha256"],
        "config_sha256": record["config_sha256"],
        "manifest_sha256": record["subset"]["manifest_sha256"],
        "git_commit": provenance["git_commit"],
        "image_digest": provenance["container"]["image_digest"],
        "finished_at": provenance["finished_at"],
    }


def runs_frame(groups: dict[str, list[str]], search_summaries: list[str | Path]) -> pd.DataFrame:
    """One row per run record: the groups' records under their stage names, then the searches' records."""
    staged = [(stage, path, None) for stage, paths in groups.items() for path in paths]
    for summary in search_summaries:
        search, evaluations = read_search_log(summary)
        sources = [source for entry in evaluations for source in entry.get("records", [])]
        staged += [(f"{search['kind']} search", source["path"], source["content_sha256"]) for source in sources]
    if not staged:
        raise HaetError("no run records given: name them with --group STAGE RECORD... or --search-summary")
    rows = []
    for stage, path, logged_sha256 in staged:
        record = read_run_record(path)
        if logged_sha256 is not None and record["content_sha256"] != logged_sha256:
            raise HaetError(f"{path} is not the run record its search logged (content hash differs)")
        rows.append(run_row(stage, path, record))
    return pd.DataFrame(rows)


def write_runs_table(groups: dict[str, list[str]], search_summaries: list[str | Path], out: str | Path) -> int:
    """runs.csv, written atomically; returns the number of rows."""
    frame = runs_frame(groups, search_summaries)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    write_atomic(out, buffer.getvalue())
    return len(frame)
