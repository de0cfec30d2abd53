"""Run records: the one reader (and schema check) the trainer, the searches and the reports share.

Torch-free on purpose: a table, a figure or an audit reads thousands of records and must not pay for importing
torch; the trainer adds the provenance only it can know (haet.train.record) and writes through here.
"""

from __future__ import annotations

from pathlib import Path

from haet.files import check_schema, read_record


def validate_run_record(record: dict, where: str = "run record") -> None:
    check_schema(record, "run-record.schema.json", "run record", where)


def read_run_record(path: str | Path) -> dict:
    """A run record from disk, its content hash and schema checked (HaetError naming the file otherwise)."""
    record = read_record(path)
    validate_run_record(record, str(path))
    return record
