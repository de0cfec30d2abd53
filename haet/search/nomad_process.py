"""The child process NOMAD runs in: it proposes points and the harness, in the parent, evaluates them.

A segfault, a deadlock or an abort in PyNomadBBO ends or freezes this process only. The child runs in its own
session, so a Ctrl-C at the terminal reaches the harness alone (NOMAD installs a SIGINT handler of its own), and
its stdout and stderr go to a file at the descriptor level (NOMAD prints some lines even at DISPLAY_DEGREE 0).

Protocol on the pipe: child -> parent ("evaluate", [point, ...]) and finally ("finished", result) or
("failed", message); parent -> child [(ok, "outputs"), ...] in the same order.
"""

from __future__ import annotations

import os
import signal
import time

FAULT_VARIABLE = "HAET_NOMAD_FAULT"  # tests only: "segv@N" or "hang@N" after N evaluation requests


def _fault(requests: int) -> None:
    plan = os.environ.get(FAULT_VARIABLE, "")
    kind, _, after = plan.partition("@")
    if kind and requests == int(after):
        if kind == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif kind == "hang":
            time.sleep(10**6)


def run_nomad(
    connection,
    x0: list[float],
    lower: list[float],
    upper: list[float],
    parameters: list[str],
    seed: int,
    log_path: str,
    block: bool,
) -> None:
    os.setsid()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    import PyNomad

    PyNomad.setSeed(seed)  # repeated optimize calls are reproducible only after this
    requests = 0

    def ask(points: list[list[float]]) -> list[tuple[bool, str]]:
        nonlocal requests
        _fault(requests)
        requests += 1
        try:
            connection.send(("evaluate", points))
            return connection.recv()
        except (EOFError, OSError):  # the harness is gone; NOMAD would swallow an exception and keep asking
            os._exit(3)

    def coordinates(point) -> list[float]:
        return [point.get_coord(i) for i in range(point.size())]

    def evaluate_one(point) -> int:
        ((ok, outputs),) = ask([coordinates(point)])
        if ok:
            point.setBBO(outputs.encode())
        return int(ok)

    def evaluate_block(points) -> list[int]:
        members = [points.get_x(i) for i in range(points.size())]
        answers = ask([coordinates(member) for member in members])
        for member, (ok, outputs) in zip(members, answers, strict=True):
            if ok:
                member.setBBO(outputs.encode())
        return [int(ok) for ok, _ in answers]

    try:
        result = PyNomad.optimize(evaluate_block if block else evaluate_one, x0, lower, upper, parameters)
    except Exception as exc:  # noqa: BLE001 - whatever NOMAD raised goes back to the harness as text
        connection.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    # 4.5.1 returns a dict here; older builds return a tuple. The harness decides the best from its own log.
    connection.send(("finished", result if isinstance(result, dict) else {"raw": repr(result)}))
