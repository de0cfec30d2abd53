"""Run records and search logs: the one reader the trainer, the searches and the reports share.

Torch-free on purpose: a table, a figure or an audit reads thousands of records and must not pay for importing
torch; the trainer adds the provenance only it can know (haet.train.record) and writes through here.
"""

from __future__ import annotations

import json
from pathlib import Path

from haet import HaetError
from haet.files import check_schema, read_record, sha256_file

# What a search can score a point by: the run record's metric for each name (one list, for searches and the audit)
SEARCH_METRICS = {"final": "val_acc_final", "best_epoch": "val_acc_best_optimistic"}


def validate_run_record(record: dict, where: str = "run record") -> None:
    check_schema(record, "run-record.schema.json", "run record", where)


def read_run_record(path: str | Path) -> dict:
    """A run record from disk, its content hash and schema checked (HaetError naming the file otherwise)."""
    record = read_record(path)
    validate_run_record(record, str(path))
    return record


def read_search_log(summary_path: str | Path) -> tuple[dict, list[dict]]:
    """A search's summary and the evaluations of its log (evaluations.jsonl beside it), which must be the log
    the summary was written from: a figure or table drawn from a log edited or rerun since would mislead."""
    summary = read_record(summary_path)
    if summary.get("schema") != "haet/search-summary/v1":
        raise HaetError(f"{summary_path} is not a search summary (haet search writes summary.json)")
    log = Path(summary_path).parent / "evaluations.jsonl"
    if not log.is_file() or sha256_file(log) != summary["log_sha256"]:
        raise HaetError(f"{log} is missing or is not the log {summary_path} was written from: rerun the search")
    return summary, [json.loads(line) for line in log.read_text().splitlines()[1:]]
