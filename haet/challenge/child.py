"""The processes a submission runs in: `python -m haet.challenge.child train|predict WORK`.

train reads WORK/job.json and WORK/train.npz (images and labels only), seeds random, numpy and torch with the run's
seed, writes WORK/started.json and calls the submission's train; hand_in saves the model to WORK/model.pt
(atomically) and counts it in WORK/handed.json. predict reads WORK/model.pt and WORK/test.npz (images only: labels
never reach a submission's process) and writes WORK/predictions.npy. A submission's own mistake is written, one
line, to WORK/error.txt, and the process exits with ERROR_EXIT.
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


def write_json(path: Path, value: dict) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


def fail(work: Path, message: str) -> None:
    (work / "error.txt").write_text(message + "\n")
    sys.exit(ERROR_EXIT)


def run_train(work: Path, job: dict, module) -> None:
    import torch

    data = np.load(work / "train.npz")
    images, labels = data["images"], data["labels"]
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    random.seed(job["seed"])
    np.random.seed(job["seed"] % 2**32)
    torch.manual_seed(job["seed"])
    handed = {"count": 0, "late": 0, "last_at_s": None}
    started = time.time()
    deadline = started + job["budget_s"]
    write_json(work / "started.json", {"at": started})

    def hand_in(model) -> None:
        now = time.time()
        if now > deadline:
            handed["late"] += 1
        else:
            torch.save(model, work / "model.partial")
            os.replace(work / "model.partial", work / "model.pt")
            handed.update(count=handed["count"] + 1, last_at_s=now - started)
        write_json(work / "handed.json", handed)

    module.train(images, labels, job["num_classes"], job["device"], deadline, hand_in)


def run_predict(work: Path, job: dict, module) -> None:
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    model = torch.load(work / "model.pt", weights_only=False)
    images = np.load(work / "test.npz")["images"]
    started = time.time()
    predictions = module.predict(model, images)
    spec, count = job["submission"], len(images)
    try:
        predictions = np.asarray(predictions.cpu() if isinstance(predictions, torch.Tensor) else predictions)
    except Exception as exc:  # a submission may return anything
        fail(work, f"submission {spec}: predict returned {type(predictions).__name__}, not an array ({exc})")
    if predictions.shape != (count,) or predictions.dtype.kind not in "iu":
        fail(
            work,
            f"submission {spec}: predict returned shape {predictions.shape} of {predictions.dtype} for {count} "
            f"images; it must return {count} class indices (an integer array of shape ({count},))",
        )
    if count and (predictions.min() < 0 or predictions.max() >= job["num_classes"]):
        fail(work, f"submission {spec}: predict returned class indices outside 0..{job['num_classes'] - 1}")
    np.save(work / "predictions.npy", predictions.astype(np.int64))
    write_json(work / "predicted.json", {"predict_s": time.time() - started})


def main(argv: list[str]) -> None:
    stage, work = argv[0], Path(argv[1])
    job = json.loads((work / "job.json").read_text())
    from haet.challenge.submission import SubmissionError, load_submission

    try:
        module = load_submission(job["submission"])
    except SubmissionError as exc:
        fail(work, str(exc))
    (run_train if stage == "train" else run_predict)(work, job, module)


if __name__ == "__main__":
    main(sys.argv[1:])
