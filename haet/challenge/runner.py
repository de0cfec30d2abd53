"""Run one submission as the HAET challenge ran its entries, with the harness as the only judge: train in a sandbox
(haet.challenge.sandbox, or a container of the image) under a budget on the supervisor's own clock, predict in a
second one on test images without labels, score here.

The clock: cpu (the default on the CPU: the CPU seconds of every process in the sandbox, which a busy machine does
not shorten) or wall (the paper's and the GPU's). It starts when the supervisor sees the harness's part of the
child's start-up end (child.READY), so the submission's import counts. The supervisor watches the hand-in file; when
the budget is spent it freezes the sandbox, copies the model then in place out of the sandbox's reach (that copy is
what predict sees), thaws it for grace_s (anything handed in then is late) and kills every process in it, however
it left its parent. What the sandbox wrote is read as hostile data: regular files only, sizes bounded, the
predictions' shape, dtype and range checked here. Outcomes, one per record (OUTCOMES): finished (train returned),
killed-at-deadline, wall-limit (a CPU budget not spent in wall_limit_s), crashed (with its output's last line),
out-of-memory, process-limit, file-too-large, disk-full (a limit of the envelope, named), bad-predict, no-model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from haet import HaetError
from haet.challenge import child
from haet.challenge.sandbox import INSIDE_CPU_STAT, INSIDE_WORK, MAX_FILES, Limits, Sandbox
from haet.challenge.submission import Resolved, SubmissionError, resolve
from haet.containers import ContainerSpec
from haet.data.subsets import Subset
from haet.files import canonical_json, sha256_bytes

OUTCOMES = ("finished", "killed-at-deadline", "wall-limit", "crashed", "out-of-memory", "process-limit",
            "file-too-large", "disk-full", "bad-predict", "no-model")  # fmt: skip
TAIL_LINES = 20
TAIL_BYTES = 64 * 2**10
POLL_S = 0.05
MAX_MODEL_BYTES = 2**30
KEPT_BYTES = 64 * 2**20  # the sandbox's small files kept beside the record's work folder, for a look: all together
WALL_LIMIT_FACTOR = 10  # a CPU budget's wall-clock backstop: budget_s x this + 60 s, unless given


class Unsandboxed:
    """`--unsandboxed`: a plain child process in a group of its own, with the harness's rights (the record says
    so). Frozen with SIGSTOP and killed with killpg: a process that left the group escapes both."""

    kind = "none"

    def __init__(self, folder: Path):
        self.folder, self.process = folder, None
        folder.mkdir(parents=True, exist_ok=True)

    def launch(self, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        with open(log, "wb") as output:
            self.process = subprocess.Popen(argv, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True, env=env)  # fmt: skip
        return self.process

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(self.process.pid, signum)

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def cpu_s(self) -> float:
        raise HaetError("the CPU clock needs the sandbox's cgroup: give --clock wall with --unsandboxed")

    def limit_hit(self) -> str | None:
        return None

    def stop(self) -> None:
        if self.process is not None:
            self._signal(signal.SIGKILL)
            self.process.wait()

    close = stop


class NativeSandbox(Sandbox):
    kind = "bwrap"

    def freeze(self) -> None:
        self.cgroup.freeze()

    def thaw(self) -> None:
        self.cgroup.thaw()

    def cpu_s(self) -> float:
        return self.cgroup.cpu_s()

    def limit_hit(self) -> str | None:
        return self.cgroup.limit_hit()


def _open_in(folder: Path, name: str) -> int | None:
    """A regular file directly in folder, opened without following a link (a FIFO does not block); else None."""
    try:
        fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def copy_hostile(folder: Path, name: str, target: Path, max_bytes: int) -> bool:
    """folder/name copied to target in chunks if it is a regular file of at most max_bytes; else False."""
    fd = _open_in(folder, name)
    if fd is None:
        return False
    copied = 0
    with os.fdopen(fd, "rb") as source, open(target, "wb") as output:
        while chunk := source.read(2**20):
            copied += len(chunk)
            if copied > max_bytes:
                break
            output.write(chunk)
    if copied > max_bytes:
        target.unlink()
    return copied <= max_bytes


def read_hostile(folder: Path, name: str, max_bytes: int) -> bytes | None:
    """What a sandbox wrote to folder/name, if it is a regular file of at most max_bytes; else None."""
    fd = _open_in(folder, name)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    return data if len(data) <= max_bytes else None


def _signature(folder: Path, name: str) -> tuple | None:
    try:
        status = os.stat(folder / name, follow_symlinks=False)
    except OSError:
        return None
    return (
        (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
        if stat.S_ISREG(status.st_mode)
        else None
    )


def _tail(path: Path) -> list[str]:
    if not path.exists():
        return []
    with open(path, "rb") as handle:
        handle.seek(max(path.stat().st_size - TAIL_BYTES, 0))
        return handle.read().decode(errors="replace").splitlines()[-TAIL_LINES:]


def _error_line(folder: Path) -> str | None:
    data = read_hostile(folder, child.ERROR, 4096)
    if not data:
        return None
    line = data.decode(errors="replace").strip().splitlines()[0] if data.strip() else ""
    return "".join(c if c.isprintable() else "?" for c in line)[:500] or None


@dataclasses.dataclass
class Watch:
    """What the supervisor saw of a train stage, on its own clocks (spent: on the run's clock from READY)."""

    started: bool = False
    hand_ins: int = 0
    late: int = 0
    last_hand_in_s: float | None = None
    deadline_reached: bool = False
    ended_by: str | None = None  # None: train returned; startup, deadline, wall-limit: the supervisor killed it
    spent_s: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    setup_s: float = 0.0
    model_taken: bool = False


def _take_model(stage, watch: Watch, seen: list, kept: Path) -> None:
    """Freeze the sandbox, count a hand-in made before now, copy the model in place out of the sandbox's reach."""
    stage.freeze()
    try:
        signature = _signature(stage.folder, child.HAND_IN)
        if signature is not None and signature != seen[0]:
            seen[0] = signature
            watch.hand_ins += 1
            watch.last_hand_in_s = watch.spent_s
        if signature is not None and copy_hostile(stage.folder, child.HAND_IN, kept, MAX_MODEL_BYTES):
            watch.model_taken = True
    finally:
        stage.thaw()


def supervise_train(stage, process, clock: str, budget_s: float, grace_s: float, startup_s: float,
                    wall_limit_s: float, kept: Path) -> Watch:  # fmt: skip
    watch, seen = Watch(), [None]
    launched = time.monotonic()
    start_wall = start_cpu = deadline_wall = None
    while process.poll() is None:
        now = time.monotonic()
        if start_wall is None:
            if os.path.lexists(stage.folder / child.READY):
                start_wall, start_cpu = now, stage.cpu_s() if clock == "cpu" else 0.0
                watch.started, watch.setup_s = True, now - launched
            elif now - launched > startup_s:
                watch.ended_by = "startup"
                break
        else:
            watch.wall_s = now - start_wall
            watch.spent_s = stage.cpu_s() - start_cpu if clock == "cpu" else watch.wall_s
            signature = _signature(stage.folder, child.HAND_IN)
            if signature is not None and signature != seen[0]:
                seen[0] = signature
                if deadline_wall is None:
                    watch.hand_ins, watch.last_hand_in_s = watch.hand_ins + 1, watch.spent_s
                else:
                    watch.late += 1
            if deadline_wall is None and watch.spent_s >= budget_s:
                _take_model(stage, watch, seen, kept)
                watch.deadline_reached, deadline_wall = True, now
            elif deadline_wall is not None and now - deadline_wall > grace_s:
                watch.ended_by = "deadline"
                break
            elif deadline_wall is None and watch.wall_s > wall_limit_s:
                watch.ended_by = "wall-limit"
                break
        time.sleep(POLL_S)
    if start_wall is not None and not watch.deadline_reached:
        _take_model(stage, watch, seen, kept)  # train returned (or hit the wall limit): the model now in place
    if clock == "cpu" and start_cpu is not None:
        watch.cpu_s = stage.cpu_s() - start_cpu
    return watch


def supervise_predict(stage, process, clock: str, limit_s: float) -> str | None:
    """None when predict returned in time, else why it was stopped."""
    launched, start_cpu = time.monotonic(), stage.cpu_s() if clock == "cpu" else 0.0
    while process.poll() is None:
        spent = stage.cpu_s() - start_cpu if clock == "cpu" else time.monotonic() - launched
        if spent > limit_s or time.monotonic() - launched > WALL_LIMIT_FACTOR * limit_s + 60:
            return f"predict ran past its limit of {limit_s:g} s"
        time.sleep(POLL_S)
    return None


def _size(count: int) -> str:
    return f"{count / 2**30:g} GiB" if count % 2**30 == 0 else f"{count / 2**20:g} MiB"


def limit_message(hit: str, limits: Limits, where: str) -> tuple[str, str]:
    """The outcome of a limit met and its message, naming the limit (where: sandbox or container)."""
    return {
        "memory": ("out-of-memory", f"over the {where}'s memory limit of {_size(limits.memory_bytes)}; killed"),
        "pids": ("process-limit", f"tried to run more than the {where}'s {limits.processes} processes and threads"),
        "file": ("file-too-large", f"wrote a file over the {where}'s file size limit of {_size(limits.file_bytes)}"),
        "disk": ("disk-full", f"filled its folder's limit of {_size(limits.disk_bytes)} or {MAX_FILES} files"),
    }[hit]


def _file_limit_hit(stage, log: Path, limits: Limits) -> str | None:
    """file or disk: a limit the kernel enforces by failing writes, so the submission saw only an error."""
    if log.exists() and log.stat().st_size >= limits.file_bytes:
        return "file"
    with os.scandir(stage.folder) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_size >= limits.file_bytes:
                return "file"
    if stage.kind != "none" and 0 in (os.statvfs(stage.folder).f_bavail, os.statvfs(stage.folder).f_favail):
        return "disk"
    return None


def train_outcome(watch: Watch, returncode: int, stage, log: Path, limits: Limits, memory_limit: str | None) -> tuple:
    """The train stage's outcome and its one-line message."""
    hit = stage.limit_hit() or _file_limit_hit(stage, log, limits)
    if hit:
        return limit_message(hit, limits, "container" if stage.kind == "container" else "sandbox")
    if watch.ended_by == "startup":
        return "crashed", "its process never finished the harness's start-up within the start-up limit; killed"
    if watch.ended_by == "deadline":
        return "killed-at-deadline", "still running at the deadline plus grace; killed with every process it started"
    if watch.ended_by == "wall-limit":
        return (
            "wall-limit",
            "its budget was not spent within the wall-clock limit; killed (a machine this busy, or a run that waits)",
        )
    if returncode == 0:
        late = " after the deadline (its model at the deadline is scored)" if watch.deadline_reached else ""
        return "finished", f"train returned{late or ' before the deadline'}"
    if returncode == -signal.SIGKILL:
        limit = memory_limit or os.environ.get("HAET_CONTAINER_MEMORY")  # its own container's, or the one it is in
        where = f"over the container's memory limit of {limit}" if limit else "the kernel's OOM killer"
        return "out-of-memory", f"killed by a SIGKILL the harness did not send: out of memory ({where})"
    last = next((line.strip() for line in reversed(_tail(log)) if line.strip()), None)
    said = f": {last[:300]}" if last else ""
    return "crashed", f"train exited with code {returncode}{said} (its output's last lines are in the record)"


def read_predictions(folder: Path, count: int, num_classes: int) -> tuple[np.ndarray | None, str | None]:
    """The predictions file, checked here: count class indices, an integer array; else why not."""
    data = read_hostile(folder, child.PREDICTIONS, count * 8 + 4096)
    if data is None:
        return None, "predict wrote no predictions file of the expected size"
    try:
        predictions = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # a hostile file: anything may be wrong with it
        return None, f"predict's predictions are not a numpy array file ({type(exc).__name__})"
    if not isinstance(predictions, np.ndarray) or predictions.shape != (count,) or predictions.dtype.kind not in "iu":
        shape, dtype = getattr(predictions, "shape", None), getattr(predictions, "dtype", None)
        return None, (f"predict returned shape {shape} of {dtype} for {count} images; it must return {count} class "
                      f"indices (an integer array of shape ({count},))")  # fmt: skip
    if count and (predictions.min() < 0 or predictions.max() >= num_classes):
        return None, f"predict returned class indices outside 0..{num_classes - 1}"
    return predictions.astype(np.int64), None


def read_model_size(folder: Path) -> dict:
    """Parameters and MACs as the predict child counted them (integers or null; anything else is null)."""
    data = read_hostile(folder, child.MODEL_SIZE, 4096)
    try:
        size = json.loads(data) if data else {}
    except ValueError:
        size = {}
    size = size if isinstance(size, dict) else {}
    ok = lambda value: value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None  # noqa: E731
    return {"params": ok(size.get("params")), "macs": ok(size.get("macs")) or None}


def answer_paths() -> list[Path]:
    """Files inside the Python environment that hold a dataset's labels (scikit-learn's embedded digits)."""
    import site

    sites = {
        *site.getsitepackages(),
        *(entry for entry in sys.path if entry.endswith(("site-packages", "dist-packages"))),
    }
    return sorted({Path(directory) / "sklearn" / "datasets" / "data" for directory in sites})


def _stage(kind: str, folder: Path, limits: Limits, container: ContainerSpec | None):
    if container is not None:
        from haet.containers import ContainerStage

        folder.mkdir(parents=True, exist_ok=True)
        return ContainerStage(folder, dataclasses.replace(container, workdir=folder, data_roots=()), limits)
    if kind == "none":
        return Unsandboxed(folder)
    return NativeSandbox(folder, limits, answer_paths())


def _launch(stage, stage_name: str, log: Path, threads: int):
    threads_env = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if stage.kind == "container":  # the image's own PATH and HOME
        return stage.launch(["challenge", "child", stage_name, str(stage.folder)], log, threads_env)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    env |= threads_env | {name: os.environ[name] for name in MACHINE_VARIABLES if name in os.environ}
    inside = INSIDE_WORK if stage.kind == "bwrap" else stage.folder
    return stage.launch([sys.executable, "-I", "-m", "haet.challenge.child", stage_name, str(inside)], log, env)


MACHINE_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES")  # this machine's, kept


def _prepare(folder: Path, resolved: Resolved, job: dict, inside: Path) -> None:
    """The stage's inputs in its folder: the job, and the submission's files when it came as a path."""
    if resolved.by_path:
        target = folder / "submission" / resolved.source.name
        if resolved.source.is_dir():
            shutil.copytree(resolved.source, target, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir()
            shutil.copyfile(resolved.source, target)
        job = job | {"path": str(inside / "submission" / resolved.source.name)}
    (folder / "job.json").write_text(json.dumps(job))


def _keep_files(folder: Path, into: Path, skip: tuple[str, ...]) -> None:
    """The sandbox's top-level regular files, copied out for a look while they fit in KEPT_BYTES (never read back
    by the harness)."""
    into.mkdir(parents=True, exist_ok=True)
    left = KEPT_BYTES
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda entry: entry.name):
            if entry.name not in skip and entry.is_file(follow_symlinks=False):
                data = read_hostile(folder, entry.name, left)
                if data is not None:
                    (into / entry.name).write_bytes(data)
                    left -= len(data)


def run_submission(
    entry: str,
    spec: str,
    subset: Subset,
    work: Path,
    budget_s: float,
    grace_s: float = 5.0,
    device: str = "auto",
    seed: int | None = None,
    threads: int = 1,
    container: ContainerSpec | None = None,
    startup_s: float = 600.0,
    predict_s: float = 600.0,
    clock: str = "auto",
    sandbox: str = "bwrap",
    limits: Limits | None = None,
    wall_limit_s: float | None = None,
) -> tuple[dict, dict | None]:
    """Train, predict and score one submission on subset (its validation images are the test images); returns
    the run record's body (provenance is added when it is written) and, with container, what the submission's
    processes ran in (the image's digest, the limits) for the provenance. sandbox: bwrap, or none (unsandboxed)."""
    if budget_s <= 0 or grace_s < 0:
        raise HaetError(f"a submission's budget must be positive and its grace not negative ({budget_s}, {grace_s})")
    resolved = resolve(spec)  # a missing file or module stops here, in one line; nothing of it runs here
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    clock = ("cpu" if device == "cpu" else "wall") if clock == "auto" else clock
    if clock == "cpu" and device != "cpu":
        raise HaetError("--clock cpu counts CPU seconds, which see none of a GPU's work: use --clock wall on a GPU")
    if clock == "cpu" and sandbox == "none" and container is None:
        raise HaetError("the CPU clock needs the sandbox's cgroup: give --clock wall with --unsandboxed")
    limits = dataclasses.replace(limits or Limits(), cores=threads)
    wall_limit_s = wall_limit_s or (WALL_LIMIT_FACTOR * budget_s + 60 if clock == "cpu" else float("inf"))
    seed = subset.manifest["subset_seed"] if seed is None else seed
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("train", "predict", "kept"):
        shutil.rmtree(work / stale, ignore_errors=True)
    (work / "kept").mkdir()
    kind = "container" if container is not None else sandbox
    num_classes = len(subset.train.class_names)
    job = {"submission": spec, "module": resolved.module, "num_classes": num_classes, "device": device,
           "budget_s": budget_s, "seed": seed, "threads": threads, "clock": clock}  # fmt: skip
    watch, returncode, outcome, message, tail, ran_in = _train_stage(
        work, kind, resolved, job, subset, limits, container, grace_s, startup_s, wall_limit_s
    )
    predictions, predict_wall_s, model_size = None, 0.0, {"params": None, "macs": None}
    if watch.model_taken:
        predictions, predict_wall_s, model_size, failed, tail_p = _predict_stage(
            work, kind, resolved, job, subset, limits, container, predict_s
        )
        if failed:
            outcome, message, tail = "bad-predict", failed, tail_p
    elif outcome in ("finished", "killed-at-deadline", "wall-limit"):
        outcome, message = "no-model", "it handed in no model before the deadline; scored as no model"
    labels = subset.validation.labels
    accuracy = float((predictions == labels).mean()) if predictions is not None else 0.0
    body = record_body(entry, resolved, subset, job, watch, outcome, message, tail, grace_s, accuracy,
                       predict_wall_s, model_size, kind, limits)  # fmt: skip
    return body, ran_in


def _open_stage(name: str, work: Path, kind: str, resolved: Resolved, job: dict, limits: Limits, container):
    """A stage's sandbox (or container), its inputs in its folder: the job, the submission's files, and where the
    submission's clock reads the stage's CPU seconds."""
    folder = work / name
    stage = _stage(kind, folder, limits, container)
    try:
        inside = INSIDE_WORK if kind == "bwrap" else folder
        cpu_stat = str(INSIDE_CPU_STAT) if kind == "bwrap" else getattr(stage, "inside_cpu_stat", None)
        _prepare(folder, resolved, job | ({"cpu_stat": cpu_stat} if cpu_stat else {}), inside)
    except BaseException:
        stage.close()
        raise
    return stage, folder, work / f"{name}.log"


def _train_stage(work, kind, resolved, job, subset, limits, container, grace_s, startup_s, wall_limit_s):
    stage, folder, log = _open_stage("train", work, kind, resolved, job, limits, container)
    try:
        np.savez(folder / "train.npz", images=subset.train.images, labels=subset.train.labels)
        process = _launch(stage, "train", log, job["threads"])
        watch = supervise_train(stage, process, job["clock"], job["budget_s"], grace_s, startup_s, wall_limit_s,
                                work / "kept" / child.HAND_IN)  # fmt: skip
        stage.stop()  # every process it started, however it left its parent
        returncode = process.wait()
        if returncode == child.INTERFACE_EXIT and watch.ended_by is None and not stage.limit_hit():
            raise SubmissionError(_error_line(folder) or f"submission {job['submission']}: its interface is wrong")
        outcome, message = train_outcome(watch, returncode, stage, log, limits, getattr(container, "memory", None))
        _keep_files(folder, work / "train-files", ("train.npz", "job.json"))
        return watch, returncode, outcome, message, _tail(log), getattr(stage, "ran_in", None)
    finally:
        stage.close()


def _predict_stage(work, kind, resolved, job, subset, limits, container, predict_s):
    stage, folder, log = _open_stage("predict", work, kind, resolved, job, limits, container)
    try:
        shutil.copyfile(work / "kept" / child.HAND_IN, folder / child.HAND_IN)
        np.savez(folder / "test.npz", images=subset.validation.images)  # written only now, and without labels
        started = time.monotonic()
        process = _launch(stage, "predict", log, job["threads"])
        stopped = supervise_predict(stage, process, job["clock"], predict_s)
        wall_s = time.monotonic() - started
        stage.stop()
        returncode = process.wait()
        hit = stage.limit_hit() or _file_limit_hit(stage, log, limits)
        failed = None
        if hit:
            failed = "predict " + limit_message(hit, limits, "container" if stage.kind == "container" else "sandbox")[1]
        elif stopped or returncode != 0:
            failed = stopped or _error_line(folder) or f"predict exited with code {returncode}"
            failed = failed if failed.startswith("submission") else f"submission {job['submission']}: {failed}"
        predictions = None
        if failed is None:
            predictions, failed = read_predictions(folder, len(subset.validation.labels), job["num_classes"])
            failed = f"submission {job['submission']}: {failed}" if failed else None
        model_size = read_model_size(folder) if failed is None else {"params": None, "macs": None}
        _keep_files(folder, work / "predict-files", ("test.npz", "job.json", child.HAND_IN))
        return predictions, wall_s, model_size, failed, _tail(log)
    finally:
        stage.close()


def record_body(entry, resolved, subset, job, watch, outcome, message, output_tail, grace_s, accuracy,
                predict_wall_s, model_size, sandbox, limits) -> dict:  # fmt: skip
    from haet.train.loop import subset_summary

    config = {
        "model": {"submission": entry},
        "recipe": {"module": resolved.spec},
        "budget": {"mode": "competition", "seconds": job["budget_s"], "grace_s": grace_s, "clock": job["clock"]},
        "runtime": {"device": job["device"], "seed": job["seed"], "threads": job["threads"]},
    }
    last_s = watch.last_hand_in_s or 0.0
    point = {"epoch": 0, "steps": 0, "train_s": round(last_s, 3), "train_loss": None, "val_acc": accuracy, "lr": 0.0}
    return {
        "schema": "haet/run-record/v1",
        "status": "complete",
        "config": config,
        "config_sha256": sha256_bytes(canonical_json(config).encode()),
        "subset": subset_summary(subset),
        "seed": job["seed"],
        "seeds": {"init": job["seed"], "shuffle": job["seed"], "augment": job["seed"]},
        "model": {
            "name": entry,
            "depth": 1,
            "width": 1,
            "resolution": 1,
            "input_px": int(subset.train.images.shape[1]),
            "num_classes": job["num_classes"],
            "macs": model_size["macs"],
            "params": model_size["params"],
        },
        "budget": {
            "mode": "competition",
            "clock": job["clock"],
            "seconds": job["budget_s"],
            "max_epochs": None,
            "stopped_by": {"finished": "submission", "killed-at-deadline": "budget"}.get(outcome, "crash"),
            "budget_elapsed_s": round(max(watch.spent_s, 0.0), 3),
        },
        "metrics": {
            "val_acc_final": accuracy,
            "val_acc_best_optimistic": accuracy,
            "val_acc_best_epoch": 0,
            "train_loss_final": None,
            "epochs": 0,
            "steps": 0,
            "steps_per_epoch": 1,
            "images_seen": 0,
            "images_per_s": 0.0,
            "train_s": round(last_s, 3),
            "eval_s": round(predict_wall_s, 3),
            "setup_s": round(watch.setup_s, 3),
            "longest_step_s": 0.0,
            "curve": [point],
        },
        "runtime": {"device": job["device"], "pipeline": "submission", "precision": "submission"},
        "submission": {
            "entry": entry,
            "module": resolved.spec,
            "files": resolved.files(),
            "outcome": outcome,
            "message": message,
            "output_tail": output_tail,
            "enforcement": "hard-kill",
            "sandbox": sandbox,
            "limits": {
                "memory_bytes": limits.memory_bytes,
                "processes": limits.processes,
                "file_bytes": limits.file_bytes,
                "disk_bytes": limits.disk_bytes,
                "cores": limits.cores,
            },  # fmt: skip
            "grace_s": grace_s,
            "models_handed_in": watch.hand_ins,
            "late_hand_ins": watch.late,
            "last_hand_in_s": watch.last_hand_in_s,
            "train_wall_s": round(watch.wall_s, 3),
            "train_cpu_s": round(watch.cpu_s, 3) if job["clock"] == "cpu" else None,
            "test_images": len(subset.validation.labels),
        },
        "notes": [SUBMISSION_NOTE] + (subset.manifest.get("notes") or []),
    }


SUBMISSION_NOTE = (
    "A submission's record: val_acc_final is the harness's score of the model in place when the budget ended (0 with "
    "none) on test images the submission never saw; its loop is its own, so epochs, steps and images seen are not "
    "counted (0), train_s is when the supervisor saw that model handed in (on the run's clock), eval_s is the predict "
    "process's wall time, and params and MACs are as the sandboxed predict process counted them."
)
