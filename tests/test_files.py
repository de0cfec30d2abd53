"""Result files are all-or-nothing and carry a hash of their content."""

from __future__ import annotations

import os

import pytest

from haet import HaetError
from haet.files import read_record, write_atomic, write_record


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    write_record(path, {"value": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_record(path, {"value": 2})
    monkeypatch.undo()
    assert read_record(path)["value"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_unserialisable_record_writes_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_record(tmp_path / "r.json", {"value": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_records_that_are_not_haet_records_are_refused(tmp_path):
    write_atomic(tmp_path / "plain.json", '{"value": 1}')
    with pytest.raises(HaetError, match="not a haet record"):
        read_record(tmp_path / "plain.json")
    write_atomic(tmp_path / "broken.json", '{"value": ')
    with pytest.raises(HaetError, match="not valid JSON"):
        read_record(tmp_path / "broken.json")
