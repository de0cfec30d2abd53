"""A training or search started by a local Snakemake dies with it.

Snakemake runs each job in a shell of its own; killed with SIGKILL it leaves those running, and a training that
finishes after the kill writes a record no Snakemake saw being made, which a resumed study would then adopt. The
Snakefile names its own process in HAET_LEASE_PID (pid:start time, so a reused pid does not count); a command
holding the lease checks each second that the process is still there, and when it is gone stops at once, without
a record, so that the resumed study trains it again.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

LEASE_VARIABLE = "HAET_LEASE_PID"
CHECK_EVERY_S = 1.0


def process_identity(pid: int) -> str | None:
    """pid:start time (clock ticks since boot, /proc's field 22), or None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"  # the fields after the command name, which may hold ')'


def hold_lease(environ: dict | None = None) -> threading.Thread | None:
    """Watch the lease named in the environment, if any; a daemon thread that ends this process when it lapses."""
    lease = (environ or os.environ).get(LEASE_VARIABLE)
    if not lease or ":" not in lease or not lease.split(":", 1)[0].isdigit():
        return None
    pid = int(lease.split(":", 1)[0])

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(CHECK_EVERY_S):
            if process_identity(pid) != lease:
                print(
                    f"haet: the Snakemake that started this (pid {pid}) is gone: stopping without a record, so that "
                    "a resumed study runs it again",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(75)  # EX_TEMPFAIL; no teardown, no record: the trainings of a search die with it

    thread = threading.Thread(target=watch, name="haet-lease", daemon=True)
    thread.start()
    return thread
