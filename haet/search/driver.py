"""One search: NOMAD proposes, the problem evaluates, an append-only log remembers.

The log (evaluations.jsonl) is the harness's own record of every finished evaluation. Re-running the same search
(same problem, settings and seed) replays it: NOMAD asks for the same points in the same order, the harness
answers the logged ones from memory, and evaluation resumes where it stopped, retraining nothing that finished.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from haet.files import canonical_json, sha256_bytes, sha256_file, write_atomic, write_record
from haet.search.nomad_process import run_nomad
from haet.search.space import MAX_SEED, SearchError, Variable, nomad_parameters

STARTUP_ALLOWANCE_S = 60.0


def check_seconds(name: str, value: object) -> None:
    """A duration setting: a positive, finite number of seconds."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise SearchError(f"{name} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True)
class SearchSettings:
    max_evaluations: int = 100
    seed: int = 0
    block_size: int = 1  # NOMAD points evaluated at once (N trainings in N processes)
    direction_type: str = "ORTHO 2N"  # NOMAD 4.6.0 segfaults with its default ORTHO N+1 QUAD on tied polls
    nomad_timeout_s: float = 300.0  # longest NOMAD may think between evaluations before it counts as hung

    def __post_init__(self) -> None:
        for name, minimum, maximum in (("max_evaluations", 1, 100_000), ("seed", 0, MAX_SEED), ("block_size", 1, 1024)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
                raise SearchError(f"search.{name} must be an integer in [{minimum}, {maximum}], got {value!r}")
        if not isinstance(self.direction_type, str) or not self.direction_type.strip():
            raise SearchError(f"search.direction_type must be a NOMAD direction type, got {self.direction_type!r}")
        check_seconds("search.nomad_timeout_s", self.nomad_timeout_s)


class Problem(Protocol):
    kind: str
    variables: list[Variable]
    output_types: list[str]

    def fingerprint(self) -> dict: ...

    def evaluate(self, points: list[list[float]], first_index: int, history: list[dict]) -> list[dict]: ...

    def columns(self) -> list[str]: ...

    def best(self, history: list[dict]) -> dict | None: ...

    def replay_problem(self, entry: dict) -> str | None: ...


@dataclass(frozen=True)
class SearchResult:
    status: str  # finished | interrupted
    evaluations: list[dict]
    best: dict | None
    replayed: int
    summary_path: Path


def point_key(point: list[float]) -> str:
    return json.dumps([float(value) for value in point])  # repr-exact: JSON round-trips Python floats


def read_log(path: Path, header: dict, new_log_if_changed: bool = False) -> list[dict]:
    """The logged evaluations of this search; refuses (or moves aside) a log that belongs to another search."""
    if (
        path.exists()
        and new_log_if_changed
        and path.read_text(encoding="utf-8").split("\n", 1)[0] != json.dumps(header, sort_keys=True)
    ):
        stale = path.with_name(f"{path.stem}.replaced-{int(time.time())}.jsonl")
        path.rename(stale)
        print(f"{path}: the search changed since this log was written; it is kept as {stale.name}")
    if not path.exists():
        write_atomic(path, json.dumps(header, sort_keys=True) + "\n")
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        logged_header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        logged_header = None
    if logged_header != header:
        raise SearchError(
            f"{path} belongs to a different search (problem, settings or NOMAD parameters differ); "
            "resume with the same config, or give a new output folder"
        )
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                raise SearchError(f"{path}: line {number} is not JSON; the log is damaged") from None
            # a torn last line is what a kill during the append leaves: that evaluation is done again
    if entries and [entry["index"] for entry in entries] != list(range(len(entries))):
        raise SearchError(f"{path}: evaluation indices are not consecutive; the log is damaged")
    return entries


def trusted_prefix(problem: Problem, path: Path, header: dict, entries: list[dict]) -> list[dict]:
    """The logged evaluations a resume may replay: those before the first that does not match its run records
    (problem.replay_problem). The log is cut back to them, the whole one kept aside, and the rest evaluated again."""
    for position, entry in enumerate(entries):
        reason = problem.replay_problem(entry)
        if reason is None:
            continue
        aside = path.with_name(f"{path.stem}.untrusted-{int(time.time())}.jsonl")
        path.rename(aside)
        write_atomic(path, "".join(json.dumps(line, sort_keys=True) + "\n" for line in [header, *entries[:position]]))
        print(
            f"{path}: evaluation {entry['index']} is not replayed: {reason}; it and the {len(entries) - position - 1} "
            f"after it are evaluated again (the log as it was is kept as {aside.name})"
        )
        return entries[:position]
    return entries


def append_log(path: Path, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def json_safe(value):
    """NOMAD reports inf where nothing is feasible; strict JSON has no inf, so such numbers become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def format_outputs(outputs: list[float]) -> str:
    return " ".join(repr(float(value)) for value in outputs)


@contextlib.contextmanager
def search_lock(out_dir: Path):
    """Hold out_dir for one search at a time. flock is released by the kernel when the holder dies (even by
    kill -9), so a crashed search never leaves a stale lock; the file names the holder for the message."""
    path = out_dir / ".search.lock"
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 -- held open for the lock's whole life
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SearchError(
                f"{out_dir} is in use by another search ({holder}); wait for it to finish or stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield
    finally:
        handle.close()


Progress = Callable[[dict, dict | None], None]  # (the evaluation just logged, the best entry so far)


def run_search(
    problem: Problem,
    settings: SearchSettings,
    out_dir: str | Path,
    new_log_if_changed: bool = False,
    progress: Progress | None = None,
) -> SearchResult:
    """Run (or resume) a search; after each fresh evaluation history.csv is rewritten and `progress` is called."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with search_lock(out_dir):
        return _run_locked(problem, settings, out_dir, new_log_if_changed, progress)


def _run_locked(
    problem: Problem, settings: SearchSettings, out_dir: Path, new_log_if_changed: bool, progress: Progress | None
) -> SearchResult:
    parameters = nomad_parameters(
        problem.variables,
        problem.output_types,
        settings.max_evaluations,
        settings.seed,
        settings.block_size,
        settings.direction_type,
    )
    header = {
        "type": "header",
        "problem": problem.fingerprint(),
        "settings": asdict(settings),
        "nomad_parameters": parameters,
    }
    log_path = out_dir / "evaluations.jsonl"
    history = trusted_prefix(problem, log_path, header, read_log(log_path, header, new_log_if_changed))
    memo = {point_key(entry["point"]): entry for entry in history}

    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    variables = problem.variables
    nomad = context.Process(
        target=run_nomad,
        args=(
            child_end,
            [v.x0 for v in variables],
            [v.lower for v in variables],
            [v.upper for v in variables],
            parameters,
            settings.seed,
            str(out_dir / "nomad.log"),
            settings.block_size > 1,
        ),
        daemon=True,
    )
    stop = {"requested": False}

    def request_stop(signum, frame) -> None:
        stop["requested"] = True  # finish the evaluation under way, log it, then stop

    previous_handler = signal.signal(signal.SIGINT, request_stop)
    nomad.start()
    child_end.close()
    status, nomad_result, replayed, answered = "finished", None, 0, False
    wait_s = max(settings.nomad_timeout_s, STARTUP_ALLOWANCE_S)  # the first answer includes starting the process
    try:
        while True:
            if not parent_end.poll(wait_s) and nomad.is_alive():  # a dead child reads as EOF below
                raise SearchError(
                    f"NOMAD gave no answer for {settings.nomad_timeout_s:g} s and was stopped as hung after "
                    f"{len(history)} logged evaluations; rerun the same search to resume from the log"
                )
            try:
                message = parent_end.recv()
            except (EOFError, OSError):
                nomad.join(5)
                if not answered:  # NOMAD kills its process on a parameter it refuses, before its first point
                    raise SearchError(
                        f"NOMAD's process died (exit code {nomad.exitcode}) before it proposed a point: it refused a "
                        f"setting (direction_type {settings.direction_type!r}, seed {settings.seed}, the variables' "
                        f"bounds; see {out_dir / 'nomad.log'}); nothing was evaluated, so fix the setting"
                    ) from None
                raise SearchError(
                    f"NOMAD's process died (exit code {nomad.exitcode}) after {len(history)} logged evaluations; "
                    "the log is intact: rerun the same search to resume from it"
                ) from None
            answered = True
            wait_s = settings.nomad_timeout_s
            if message[0] == "finished":
                nomad_result = message[1]
                break
            if message[0] == "failed":
                raise SearchError(f"NOMAD stopped with an error: {message[1]}")
            points = message[1]
            fresh = [point for point in points if point_key(point) not in memo]
            replayed += len(points) - len(fresh)
            if fresh and stop["requested"]:
                status = "interrupted"
                break
            if fresh and len(history) >= settings.max_evaluations:
                break  # NOMAD's own count can fall short of the log's when a resumed search's points differ
            unique_fresh = list({point_key(point): point for point in fresh}.values())
            if unique_fresh:
                block_start = time.perf_counter()
                results = problem.evaluate(unique_fresh, len(history), history)
                block_s = time.perf_counter() - block_start  # points of a block run concurrently
                for result, point in zip(results, unique_fresh, strict=True):
                    entry = {"index": len(history), "point": [float(v) for v in point], "seconds": block_s} | result
                    append_log(log_path, entry)
                    history.append(entry)
                    memo[point_key(point)] = entry
                write_history_csv(problem, history, out_dir / "history.csv")  # `tail -f`-able while it runs
                for entry in history[-len(results) :]:
                    if progress is not None:
                        progress(entry, problem.best(history[: entry["index"] + 1]))
            answers = [memo[point_key(point)] for point in points]
            parent_end.send(
                [(entry["ok"], format_outputs(entry["outputs"]) if entry["ok"] else "") for entry in answers]
            )
            if stop["requested"]:
                status = "interrupted"
                break
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        if nomad.is_alive():
            nomad.kill()
        nomad.join(5)
        parent_end.close()
    best = problem.best(history)
    summary = {
        "schema": "haet/search-summary/v1",
        "kind": problem.kind,
        "problem": problem.fingerprint(),  # what was searched: base training, subsets, metric, variables
        "status": status,
        "evaluations": len(history),
        "replayed_from_log": replayed,
        "counts": {
            state: sum(entry["status"] == state for entry in history) for state in ("trained", "answered", "failed")
        },
        "best": best,
        "nomad_result": json_safe(nomad_result),
        "log_sha256": sha256_file(log_path),
        "header_sha256": sha256_bytes(canonical_json(header).encode()),
    }
    write_history_csv(problem, history, out_dir / "history.csv")
    summary_path = out_dir / "summary.json"
    write_record(summary_path, summary)
    return SearchResult(status, history, best, replayed, summary_path)


def write_history_csv(problem: Problem, history: list[dict], path: Path) -> None:
    names = [variable.name for variable in problem.variables]
    extra = problem.columns()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", *names, *extra, "status", "reason", "seconds"])
    for entry in history:
        values = [entry.get(column) for column in extra]
        values = [
            "" if value is None or (isinstance(value, float) and math.isnan(value)) else value for value in values
        ]
        writer.writerow(
            [
                entry["index"],
                *entry["point"],
                *values,
                entry["status"],
                entry.get("reason", ""),
                round(entry.get("seconds", 0.0), 3),
            ]
        )
    write_atomic(path, buffer.getvalue())
