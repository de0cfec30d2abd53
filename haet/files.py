"""Files the harness writes: canonical JSON, written atomically, carrying a hash of their own content.

Every manifest, run record and table goes through here, so that nothing is ever half-written and an edited
file is caught when it is read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from haet import HaetError

HASH_FIELD = "content_sha256"


def canonical_json(obj: Any) -> str:
    """The one byte-stable JSON form used for hashing and writing (sorted keys, fixed separators)."""
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: str | Path, text: str | bytes) -> Path:
    """Write text (or bytes) to path via a temporary file in the same directory and a rename (all or nothing)."""
    path = Path(path)
    if path.is_dir():
        raise HaetError(f"{path} is a directory: give a file path to write to")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HaetError(f"cannot make the folder for {path} ({exc.strerror})") from None
    try:
        descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # a read-only or full file system, no permission
        raise HaetError(f"cannot write {path} ({exc.strerror or exc})") from None
    try:
        binary = isinstance(text, bytes)
        with os.fdopen(descriptor, "wb" if binary else "w", encoding=None if binary else "utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp makes 0600; results are meant to be shared and audited
        os.replace(temp_name, path)
    except OSError as exc:
        Path(temp_name).unlink(missing_ok=True)
        raise HaetError(f"cannot write {path} ({exc.strerror or exc})") from None
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


PROBE_BYTES = 1 << 20  # a record is tens of KB: a folder that cannot take 1 MiB now will not take one later


def check_writable(path: str | Path, inputs: tuple = ()) -> None:
    """Before any work: path names no input of the command, is no folder, and its folder can be made and takes a
    write of PROBE_BYTES (a read-only or full file system is found before the budget is spent, not after)."""
    path = Path(path)
    for given in inputs:
        if given is not None and Path(given).resolve() == path.resolve():
            raise HaetError(
                f"{path} is also an input of this command: writing it would replace {given}; give another path"
            )
    if path.is_dir():
        raise HaetError(f"{path} is a directory: give a file path to write to")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent) as probe:
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise HaetError(f"cannot write to {path.parent} ({exc.strerror or exc}); nothing was done") from None


def content_hash(obj: dict) -> str:
    """sha256 of a record's canonical JSON without its own hash field."""
    body = {key: value for key, value in obj.items() if key != HASH_FIELD}
    return sha256_bytes(canonical_json(body).encode("utf-8"))


def write_record(path: str | Path, obj: dict) -> dict:
    """Write a JSON record atomically with its content hash added; returns the record as written."""
    record = {key: value for key, value in obj.items() if key != HASH_FIELD}
    record[HASH_FIELD] = content_hash(record)
    write_atomic(path, canonical_json(record))
    return record


def _refuse_constant(name: str):
    # haet writes strict JSON (allow_nan=False): a NaN or Infinity in a record was put there by hand
    raise json.JSONDecodeError(f"{name} is not a number haet writes", name, 0)


def read_record(path: str | Path) -> dict:
    """Read a record written by write_record, refusing one whose content no longer matches its hash."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise HaetError(f"{path}: no such file") from None
    except OSError as exc:  # a directory, no permission
        raise HaetError(f"{path}: cannot be read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HaetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or HASH_FIELD not in record:
        raise HaetError(f"{path}: not a haet record (no {HASH_FIELD} field)")
    if content_hash(record) != record[HASH_FIELD]:
        raise HaetError(f"{path}: content does not match its {HASH_FIELD}: the file was edited after it was written")
    return record


def check_schema(obj: dict, schema_file: str, what: str, where: str) -> None:
    """Validate obj against haet/schemas/<schema_file>, naming the first offending location."""
    schema = json.loads(resources.files("haet.schemas").joinpath(schema_file).read_text())
    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError as exc:
        location = "/".join(str(part) for part in exc.absolute_path) or "(top level)"
        raise HaetError(f"{where}: not a valid {what} at {location}: {exc.message}") from None
