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
    with pytest.raises(HaetError, match=r"cannot write .*record.json \(disk full\)"):  # a one-line error
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


def test_a_record_holding_nan_or_a_directory_is_a_one_line_error(tmp_path):
    write_atomic(tmp_path / "nan.json", '{"value": NaN, "content_sha256": "0"}')
    with pytest.raises(HaetError, match="not valid JSON.*NaN is not a number haet writes"):
        read_record(tmp_path / "nan.json")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(HaetError, match=r"folder.json: cannot be read \(Is a directory\)"):
        read_record(tmp_path / "folder.json")
    with pytest.raises(HaetError, match=r"folder.json is a directory: give a file path to write to"):
        write_record(tmp_path / "folder.json", {"value": 1})


def test_cli_paths_that_are_directories_are_one_line_errors(tmp_path, capsys):
    from haet.cli import main

    assert main(["data", "subset", "--config", str(tmp_path), "--out", str(tmp_path / "m.json")]) == 2
    assert "cannot read this config file (Is a directory)" in capsys.readouterr().err
    argv = ["data", "subset", "--dataset", "digits", "--train-per-class", "5", "--val-per-class", "2"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert "is a directory: give a file path to write to" in capsys.readouterr().err
