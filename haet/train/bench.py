"""Pipeline benchmark: one model and subset through the loader pipeline, the resident pipeline, a bare loop, and the
resident pipeline's data work alone; on CUDA the resident and bare rows again with the captured step.

The bare loop is the resident pipeline's data and augmentation, the same model, optimiser, precision and step
(eager, or captured as the trainer captures it) and nothing else: no budget clock, no learning-rate schedule, no
evaluation, no record. It is what the trainer could reach, so resident / bare (of the same step) says what the
harness's bookkeeping costs. The data row iterates the resident pipeline's batches with no model: its share of the
resident epoch is what AutoAugment and Cutout cost. Epoch times of the trainer come from its run records (training
seconds only); the first epoch is left out as warm-up (worker start, cuDNN autotuning, allocator growth).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import statistics
import time
from pathlib import Path

import torch

from haet import HaetError
from haet.data.subsets import Subset, load_subset
from haet.records import read_run_record
from haet.train.config import Budget, ModelSpec, Recipe, Runtime, TrainConfig
from haet.train.data import batch_sizes
from haet.train.loop import resolve_device, set_up, sync, train
from haet.train.record import write_run_record

RECIPES = ("basic", "paper")
PIPELINES = ("loader", "resident", "bare", "data")
CAPTURED_PIPELINES = ("resident", "bare")  # repeated with runtime.capture cuda-graph where the device is CUDA


def epoch_seconds(record: dict) -> list[float]:
    times = [point["train_s"] for point in record["metrics"]["curve"] if point["epoch"] > 0]
    return [later - earlier for earlier, later in zip([0.0, *times], times, strict=False)]


def bare_epoch_seconds(config: TrainConfig, subset: Subset, epochs: int, train_step: bool = True) -> dict:
    """Epoch seconds of the bare loop over the resident pipeline, one sync an epoch (train_step False: the
    pipeline's batches alone), with the device and precision set-up resolved."""
    run = set_up(dataclasses.replace(config, runtime=dataclasses.replace(config.runtime, pipeline="resident")), subset)
    run.model.train()
    seconds = []
    for _ in range(epochs):
        sync(run.device)
        start = time.perf_counter()
        for inputs, targets in run.pipeline.epoch():
            if run.device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            if train_step:
                run.step(inputs, targets, config.recipe.lr)
        sync(run.device)
        seconds.append(time.perf_counter() - start)
    images = sum(batch_sizes(len(subset.train.labels), config.recipe.batch_size))
    return {"seconds": seconds, "images": images, "device": str(run.device), "precision": run.precision}


def measure(pipeline: str, config: TrainConfig, subset: Subset, epochs: int) -> dict:
    if pipeline in ("bare", "data"):
        return bare_epoch_seconds(config, subset, epochs, train_step=pipeline == "bare")
    record = train(config, subset)
    return {
        "seconds": epoch_seconds(record),
        "images": record["metrics"]["images_seen"] / record["metrics"]["epochs"],
        "device": record["runtime"]["device"],
        "precision": record["runtime"]["precision"],
    }


def bench(
    subset: Subset,
    model: ModelSpec,
    batch_size: int = 512,
    epochs: int = 4,
    device: str = "auto",
    workers: int = 2,
    precision: str = "auto",
    recipes: tuple[str, ...] = RECIPES,
) -> list[dict]:
    """One row per recipe, pipeline and step: median epoch seconds over epochs 2..epochs, images/s, and ratios
    (vs_bare: to the bare loop of the same step; data_share: the data row's share of the eager resident epoch)."""
    captures = ("eager", "cuda-graph") if resolve_device(device).type == "cuda" else ("eager",)
    rows = []
    for augment in recipes:
        by_name = {}
        for pipeline in PIPELINES:
            for capture in captures if pipeline in CAPTURED_PIPELINES else ("eager",):
                runtime = Runtime(device, "loader" if pipeline == "loader" else "resident", workers, 0,
                                  precision=precision, capture=capture)  # fmt: skip
                config = TrainConfig(
                    model=model,
                    recipe=Recipe(batch_size=batch_size, augment=augment, schedule="constant", lr=0.01),
                    budget=Budget(seconds=None, max_epochs=epochs),
                    runtime=runtime,
                )
                measured = measure(pipeline, config, subset, epochs)
                seconds = measured["seconds"][1:] or measured["seconds"]
                median_s = statistics.median(seconds)
                by_name[pipeline, capture] = row = {
                    "recipe": augment,
                    "pipeline": pipeline,
                    "step": capture,
                    "device": measured["device"],
                    "precision": measured["precision"],
                    "epoch_s": median_s,
                    "images_per_s": measured["images"] / median_s,
                    "epochs_measured": len(seconds),
                }
                rows.append(row)
        for (pipeline, capture), row in by_name.items():
            row["vs_loader"] = by_name["loader", "eager"]["epoch_s"] / row["epoch_s"]
            bare = by_name["bare", capture if pipeline in CAPTURED_PIPELINES else "eager"]
            row["vs_bare"] = bare["epoch_s"] / row["epoch_s"]
        by_name["data", "eager"]["data_share"] = (
            by_name["data", "eager"]["epoch_s"] / by_name["resident", "eager"]["epoch_s"]
        )
    return rows


def _train_to(config: dict, manifest: dict, out: str, shared_by: int) -> None:
    """A sharing measurement's child: one training, its record written where the parent reads it."""
    os.environ["HAET_GPU_SHARED_BY"] = str(shared_by)  # the record says how many trainings held the GPU
    write_run_record(train(TrainConfig.from_dict(config), load_subset(manifest)), out)


def sharing(manifest: dict, config: TrainConfig, counts: list[int], folder: Path) -> list[dict]:
    """For each N in counts, N trainings of config at once, one process each (seeds 0..N-1), as epoch-budget
    trainings share a GPU in a study: their total images/s, its gain over one training, each run's final accuracy,
    and the mean of what a training process spends outside its training seconds (interpreter, torch and CUDA start,
    set-up, capture, evaluation, record)."""
    if config.budget.seconds is not None:
        raise HaetError("GPU sharing is measured with epoch budgets: under a seconds budget the trainings would "
                        "spend each other's time (budget.seconds null, budget.max_epochs E)")  # fmt: skip
    if not counts or min(counts) < 1:
        raise HaetError(f"a sharing measurement takes training counts of 1 or more, got {counts}")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each, as a workflow's jobs are
    rows = []
    for count in counts:
        children, ended_at = {}, {}
        started_at = time.perf_counter()
        for index in range(count):
            runtime = dataclasses.replace(config.runtime, seed=index)
            out = folder / f"share{count}-seed{index}.json"
            child = context.Process(
                target=_train_to,
                args=(dataclasses.replace(config, runtime=runtime).to_dict(), manifest, str(out), count),
            )
            child.start()
            children[child.sentinel] = (child, out)
        while len(ended_at) < count:
            for sentinel in multiprocessing.connection.wait([s for s in children if s not in ended_at]):
                ended_at[sentinel] = time.perf_counter()
        for child, _ in children.values():
            child.join()
            if child.exitcode != 0:
                raise HaetError(f"a training of the sharing measurement (N={count}) ended with code {child.exitcode}")
        records = {sentinel: read_run_record(out) for sentinel, (_, out) in children.items()}
        wall_s = max(ended_at.values()) - started_at
        row = {
            "trainings": count,
            "step": config.runtime.capture,
            "wall_s": wall_s,
            "images_per_s": sum(r["metrics"]["images_seen"] for r in records.values()) / wall_s,
            "val_acc_final": [r["metrics"]["val_acc_final"] for r in records.values()],
            "overhead_s": statistics.mean(
                ended_at[s] - started_at - r["metrics"]["train_s"] for s, r in records.items()
            ),
        }
        rows.append(row)
    one = next((row for row in rows if row["trainings"] == 1), None)
    for row in rows:
        row["vs_one"] = row["images_per_s"] / one["images_per_s"] if one else None
    return rows
