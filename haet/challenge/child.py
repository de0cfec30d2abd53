"""The processes a submission runs in: `python -I -m haet.challenge.child train|predict WORK`, in the sandbox.

Everything here up to the import of the submission is the harness's own code, so the file READY it creates marks
when the harness's part of start-up ended; the supervisor starts the budget's clock when it sees that file, on its
own clock, and the submission's import counts against the budget. The supervisor trusts nothing else this process
writes: it reads the model (HAND_IN), the predictions and the model's size as hostile data.

train reads WORK/job.json and WORK/train.npz (images and labels only), seeds random, numpy and torch with the
run's seed, checks the submission's interface and calls its train; hand_in saves the model to WORK/model.pt
(atomically). predict reads WORK/model.pt (the supervisor's copy of the model in place at the deadline) and
WORK/test.npz (images only: labels never reach a submission's process), writes WORK/predictions.npy and the
model's parameters and MACs to WORK/model-size.json. A submission's own mistake is written, one line, to
WORK/error.txt, and the process exits with ERROR_EXIT; a missing or misshapen interface exits INTERFACE_EXIT.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ERROR_EXIT = 3
INTERFACE_EXIT = 4
READY = "ready"
HAND_IN = "model.pt"
PREDICTIONS = "predictions.npy"
MODEL_SIZE = "model-size.json"
ERROR = "error.txt"


class Deadline(float):
    """The end of the budget on the run's clock, given to train as deadline. Compare deadline.now() with it (or
    use deadline.remaining_s()). On the wall clock now() is time.time(), so `time.time() < deadline` also works;
    on the CPU clock now() is the CPU seconds every process of the run has used, from the sandbox's own count."""

    clock: str
    now: object

    def __new__(cls, budget_s: float, clock: str, cpu_stat: str | None = None):
        now = time.time if clock == "wall" else (lambda: read_cpu_s(cpu_stat))
        deadline = super().__new__(cls, now() + budget_s)
        deadline.clock, deadline.now = clock, now
        return deadline

    def remaining_s(self) -> float:
        return float(self) - self.now()


# Where a container sees its own cgroup's count (read_cpu_s("auto")): cgroup v2, then v1's two usual mounts
CONTAINER_CPU_STATS = ("/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/cpuacct/cpuacct.usage",
                       "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage")  # fmt: skip


def read_cpu_s(path: str) -> float:
    """CPU seconds from a cgroup's count: v2's cpu.stat (usage_usec) or v1's cpuacct.usage (nanoseconds); auto:
    the container's own, else this process's and its waited-for children's (an estimate: the harness counts)."""
    if path == "auto":
        path = next((candidate for candidate in CONTAINER_CPU_STATS if os.path.exists(candidate)), None)
        if path is None:
            import resource

            own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    text = Path(path).read_text()
    for line in text.splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e6
    return int(text) / 1e9


def write_json(path: Path, value: dict) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


def fail(work: Path, message: str, code: int = ERROR_EXIT) -> None:
    (work / ERROR).write_text(message + "\n")
    sys.exit(code)


def load(work: Path, job: dict):
    """The submission, imported: the first of its code to run, on the budget's clock."""
    from haet.challenge.submission import SubmissionError, load_submission

    try:
        return load_submission(job["submission"], job["module"], job.get("path"))
    except SubmissionError as exc:
        fail(work, str(exc), INTERFACE_EXIT)


def run_train(work: Path, job: dict) -> None:
    import torch

    data = np.load(work / "train.npz")
    images, labels = data["images"], data["labels"]
    torch.set_num_threads(job["threads"])
    random.seed(job["seed"])
    np.random.seed(job["seed"] % 2**32)
    torch.manual_seed(job["seed"])
    (work / READY).touch()
    module = load(work, job)
    deadline = Deadline(job["budget_s"], job["clock"], job.get("cpu_stat"))

    def hand_in(model) -> None:
        torch.save(model, work / "model.partial")
        os.replace(work / "model.partial", work / HAND_IN)

    module.train(images, labels, job["num_classes"], job["device"], deadline, hand_in)


def run_predict(work: Path, job: dict) -> None:
    import torch

    torch.set_num_threads(job["threads"])
    images = np.load(work / "test.npz")["images"]
    (work / READY).touch()
    module = load(work, job)
    model = torch.load(work / HAND_IN, weights_only=False)
    predictions = module.predict(model, images)
    try:
        predictions = np.asarray(predictions.cpu() if isinstance(predictions, torch.Tensor) else predictions)
    except Exception as exc:  # a submission may return anything
        fail(work, f"predict returned {type(predictions).__name__}, not an array ({exc})")
    np.save(work / PREDICTIONS, predictions, allow_pickle=False)
    write_json(work / MODEL_SIZE, model_size(model, images.shape[1]))


def model_size(model, input_px: int) -> dict:
    """Parameters and MACs of a handed-in torch.nn.Module (None for anything else)."""
    import torch

    from haet.models.cost import count

    if not isinstance(model, torch.nn.Module):
        return {"params": None, "macs": None}
    try:
        macs = count(model.cpu(), input_px).macs
    except Exception:  # a model that cannot run on the meta device: its MACs are not known here
        macs = None
    return {"params": sum(p.numel() for p in model.parameters()), "macs": macs or None}


def main(argv: list[str]) -> None:
    stage, work = argv[0], Path(argv[1])
    job = json.loads((work / "job.json").read_text())
    (run_train if stage == "train" else run_predict)(work, job)


if __name__ == "__main__":
    main(sys.argv[1:])
