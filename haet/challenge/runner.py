"""Run one submission as the HAET challenge ran its entries: train in a child process with a hard deadline, predict
in another on test images without labels, score in this one.

The deadline is the budget from the moment the child calls train (competition mode: the clock starts at train,
after the interpreter, the imports and the data load; the HAET organisers' own check ran once per epoch, this one is
a hard kill, and the record says so). At the deadline plus grace_s the child's whole process group is killed
(SIGKILL: children too). The last model handed in before the deadline is scored; none, and the run scores 0 as
"no-model". Outcomes, one per record: finished (train returned), killed-at-deadline, crashed (with the last lines of
its output), out-of-memory (a SIGKILL the harness did not send: on Linux the kernel's OOM killer), bad-predict
(predict raised, or returned the wrong shape or dtype), no-model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from haet import HaetError
from haet.challenge.child import ERROR_EXIT
from haet.challenge.submission import load_submission, submission_files
from haet.containers import ContainerSpec
from haet.data.subsets import Subset
from haet.files import canonical_json, sha256_bytes

OUTCOMES = ("finished", "killed-at-deadline", "crashed", "out-of-memory", "bad-predict", "no-model")
TAIL_LINES = 20
POLL_S = 0.05


def _launch(stage: str, work: Path, container: ContainerSpec | None):
    """The train or predict process: a child process here, or a container of the image with work alone mounted."""
    if container is not None:
        from haet.containers import Detached

        spec = dataclasses.replace(container, workdir=work, data_roots=())
        return Detached(spec, ["challenge", "child", stage, str(work)], work / f"{stage}.log")
    log = open(work / f"{stage}.log", "wb")  # noqa: SIM115 (the child holds it; closed when it ends)
    command = [sys.executable, "-m", "haet.challenge.child", stage, str(work)]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_group(process) -> None:
    """SIGKILL to the process and every process it started (a container: everything in it)."""
    if not isinstance(process, subprocess.Popen):
        process.kill()
        return
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(process.pid, signal.SIGKILL)


def _tail(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-TAIL_LINES:] if path.exists() else []


def _error_line(work: Path) -> str | None:
    path = work / "error.txt"
    return path.read_text().strip() if path.exists() else None


def _started_at(work: Path) -> float | None:
    started = work / "started.json"
    return json.loads(started.read_text())["at"] if started.exists() else None


def supervise(process, work: Path, budget_s: float, grace_s: float, startup_s: float, timed_from_train: bool) -> dict:
    """Wait for a child; kill its group at budget plus grace, counted from its call of train (timed_from_train:
    the train child, which is killed too when it never calls train within startup_s) or from its launch."""
    launched = time.time()
    killed = False
    while process.poll() is None:
        start = _started_at(work) if timed_from_train else launched
        limit = launched + startup_s if start is None else start + budget_s + grace_s
        if time.time() > limit:
            _kill_group(process)
            killed = True
            process.wait()
            break
        time.sleep(POLL_S)
    _kill_group(process)  # whatever the submission left running
    return {"returncode": process.returncode, "killed": killed, "started_at": _started_at(work),
            "ended_at": time.time(), "launched_at": launched}  # fmt: skip


def outcome_of(supervised: dict, work: Path, memory_limit: str | None = None) -> tuple[str, str]:
    """The train child's outcome and its one-line message (memory_limit: its container's, if any)."""
    code = supervised["returncode"]
    if supervised["killed"]:
        if supervised["started_at"] is None:
            return "crashed", "it never called train within the start-up limit; killed"
        return "killed-at-deadline", "still running at the deadline plus grace; killed with its children"
    if code == 0:
        return "finished", "train returned before the deadline"
    if code == -signal.SIGKILL:
        limit = memory_limit or os.environ.get("HAET_CONTAINER_MEMORY")  # its own container's, or the one it is in
        where = f"over the container's memory limit of {limit}" if limit else "the kernel's OOM killer"
        return "out-of-memory", f"killed by a SIGKILL the harness did not send: out of memory ({where})"
    message = _error_line(work) if code == ERROR_EXIT else None
    last = next((line.strip() for line in reversed(_tail(work / "train.log")) if line.strip()), None)
    said = f": {last[:300]}" if last else ""
    return "crashed", message or f"train exited with code {code}{said} (its output's last lines are in the record)"


def handed(work: Path) -> dict:
    path = work / "handed.json"
    return json.loads(path.read_text()) if path.exists() else {"count": 0, "late": 0, "last_at_s": None}


def run_submission(
    entry: str,
    spec: str,
    subset: Subset,
    work: Path,
    budget_s: float,
    grace_s: float = 5.0,
    device: str = "auto",
    seed: int | None = None,
    threads: int | None = None,
    container: ContainerSpec | None = None,
    startup_s: float = 600.0,
    predict_s: float = 600.0,
) -> tuple[dict, dict | None]:
    """Train, predict and score one submission on subset (its validation images are the test images); returns
    the run record's body (provenance is added when it is written) and, with container, what the submission's
    processes ran in (the image's digest, the limits) for the provenance."""
    if budget_s <= 0 or grace_s < 0:
        raise HaetError(f"a submission's budget must be positive and its grace not negative ({budget_s}, {grace_s})")
    module = load_submission(spec)  # a missing or misshapen train or predict stops here, in one line
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    seed = subset.manifest["subset_seed"] if seed is None else seed
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.iterdir():
        stale.unlink()
    num_classes = len(subset.train.class_names)
    job_spec = spec
    if container is not None and Path(spec).suffix == ".py":  # the container sees the work folder alone
        job_spec = str(work / Path(spec).name)
        shutil.copyfile(spec, job_spec)
    job = {"submission": job_spec, "num_classes": num_classes, "device": device, "budget_s": budget_s, "seed": seed,
           "threads": threads}  # fmt: skip
    (work / "job.json").write_text(json.dumps(job))
    np.savez(work / "train.npz", images=subset.train.images, labels=subset.train.labels)
    trainer = _launch("train", work, container)
    supervised = supervise(trainer, work, budget_s, grace_s, startup_s, timed_from_train=True)
    outcome, message = outcome_of(supervised, work, container.memory if container else None)
    output_tail = _tail(work / "train.log")
    predictions, predict_wall_s = None, 0.0
    if (work / "model.pt").exists():
        np.savez(work / "test.npz", images=subset.validation.images)  # written only now, and without labels
        predict_start = time.time()
        predictor = _launch("predict", work, container)
        predicted = supervise(predictor, work, predict_s, 0.0, predict_s, timed_from_train=False)
        predict_wall_s = time.time() - predict_start
        if predicted["returncode"] == 0:
            predictions = np.load(work / "predictions.npy")
        else:
            reason = _error_line(work) or f"predict exited with code {predicted['returncode']}"
            outcome, message = "bad-predict", reason
            output_tail = _tail(work / "predict.log")
    elif outcome in ("finished", "killed-at-deadline"):
        outcome, message = "no-model", "it handed in no model before the deadline; scored as no model"
    labels = subset.validation.labels
    accuracy = float((predictions == labels).mean()) if predictions is not None else 0.0
    model_size = _model_size(work / "model.pt", module, subset.train.images.shape[1], num_classes)
    body = record_body(entry, spec, module, subset, job, supervised, outcome, message, output_tail, grace_s,
                       accuracy, predict_wall_s, model_size, handed(work))  # fmt: skip
    return body, getattr(trainer, "ran_in", None)


def _model_size(path: Path, module, input_px: int, num_classes: int) -> dict:
    """Parameters and MACs of a handed-in torch.nn.Module (None for anything else)."""
    if not path.exists():
        return {"params": None, "macs": None}
    import torch

    from haet.models.cost import count

    model = torch.load(path, weights_only=False, map_location="cpu")
    if not isinstance(model, torch.nn.Module):
        return {"params": None, "macs": None}
    try:
        macs = count(model, input_px).macs
    except Exception:  # a model that cannot run on the meta device: its MACs are not known here
        macs = None
    return {"params": sum(p.numel() for p in model.parameters()), "macs": macs or None}


def record_body(entry, spec, module, subset, job, supervised, outcome, message, output_tail, grace_s, accuracy,
                predict_wall_s, model_size, hand) -> dict:  # fmt: skip
    from haet.train.loop import subset_summary

    config = {
        "model": {"submission": entry},
        "recipe": {"module": spec},
        "budget": {"mode": "competition", "seconds": job["budget_s"], "grace_s": grace_s},
        "runtime": {"device": job["device"], "seed": job["seed"]},
    }
    started = supervised["started_at"]
    trained_s = (supervised["ended_at"] - started) if started is not None else 0.0
    last_s = hand["last_at_s"] or 0.0
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
            "clock": "wall",
            "seconds": job["budget_s"],
            "max_epochs": None,
            "stopped_by": {"finished": "submission", "killed-at-deadline": "budget"}.get(outcome, "crash"),
            "budget_elapsed_s": round(max(trained_s, 0.0), 3),
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
            "setup_s": round((started or supervised["ended_at"]) - supervised["launched_at"], 3),
            "longest_step_s": 0.0,
            "curve": [point],
        },
        "runtime": {"device": job["device"], "pipeline": "submission", "precision": "submission"},
        "submission": {
            "entry": entry,
            "module": spec,
            "files": submission_files(module),
            "outcome": outcome,
            "message": message,
            "output_tail": output_tail,
            "enforcement": "hard-kill",
            "grace_s": grace_s,
            "models_handed_in": hand["count"],
            "late_hand_ins": hand["late"],
            "last_hand_in_s": hand["last_at_s"],
            "test_images": len(subset.validation.labels),
        },
        "notes": [SUBMISSION_NOTE] + (subset.manifest.get("notes") or []),
    }


SUBMISSION_NOTE = (
    "A submission's record: val_acc_final is the harness's score of the last model handed in before the deadline on "
    "test images the submission never saw (0 with none); its loop is its own, so epochs, steps and images seen are "
    "not counted (0), train_s is when that model was handed in, and eval_s is the predict process's wall time."
)
