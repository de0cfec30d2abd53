"""Pipeline benchmark: one model and subset through the loader pipeline, the resident pipeline, and a bare loop.

The bare loop is the resident pipeline's data and augmentation, the same model, optimiser and precision, and
nothing else: no budget clock, no learning-rate updates, no evaluation, no record. It is what the trainer could
reach, so resident / bare says what the harness's bookkeeping costs. Epoch times of the trainer come from its run
records (training seconds only); the first epoch is left out as warm-up (worker start, cuDNN autotuning,
allocator growth).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from haet.data.subsets import Subset
from haet.train.config import Budget, ModelSpec, Recipe, Runtime, TrainConfig
from haet.train.loop import set_up, sync, train

RECIPES = ("basic", "paper")
PIPELINES = ("loader", "resident", "bare")


def epoch_seconds(record: dict) -> list[float]:
    times = [point["train_s"] for point in record["metrics"]["curve"] if point["epoch"] > 0]
    return [later - earlier for earlier, later in zip([0.0, *times], times, strict=False)]


def bare_epoch_seconds(config: TrainConfig, subset: Subset, epochs: int) -> list[float]:
    """Epoch seconds of the bare loop: forward, backward and step over the resident pipeline, one sync an epoch."""
    run = set_up(dataclasses.replace(config, runtime=dataclasses.replace(config.runtime, pipeline="resident")), subset)
    run.model.train()
    seconds = []
    for _ in range(epochs):
        sync(run.device)
        start = time.perf_counter()
        for inputs, targets in run.pipeline.epoch():
            if run.device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.precision == "bf16"):
                loss = run.loss_fn(run.model(inputs), targets)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
        sync(run.device)
        seconds.append(time.perf_counter() - start)
    return seconds


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
    """One row per recipe and pipeline: median epoch seconds over epochs 2..epochs, images/s, and ratios."""
    rows = []
    for augment in recipes:
        by_pipeline = {}
        for pipeline in PIPELINES:
            runtime = Runtime(device, "resident" if pipeline == "bare" else pipeline, workers, 0, precision=precision)
            config = TrainConfig(
                model=model,
                recipe=Recipe(batch_size=batch_size, augment=augment, schedule="constant", lr=0.01),
                budget=Budget(seconds=None, max_epochs=epochs),
                runtime=runtime,
            )
            if pipeline == "bare":
                measured = bare_epoch_seconds(config, subset, epochs)
                # the same device and precision as the resident run just before it (set_up resolves both alike)
                images, used_device, used_precision = (
                    len(subset.train.labels),
                    rows[-1]["device"],
                    rows[-1]["precision"],
                )
            else:
                record = train(config, subset)
                measured = epoch_seconds(record)
                images = record["metrics"]["images_seen"] / record["metrics"]["epochs"]
                used_device, used_precision = record["runtime"]["device"], record["runtime"]["precision"]
            measured = measured[1:] or measured
            median_s = statistics.median(measured)
            by_pipeline[pipeline] = row = {
                "recipe": augment,
                "pipeline": pipeline,
                "device": used_device,
                "precision": used_precision,
                "epoch_s": median_s,
                "images_per_s": images / median_s,
                "epochs_measured": len(measured),
            }
            rows.append(row)
        for row in by_pipeline.values():
            row["vs_loader"] = by_pipeline["loader"]["epoch_s"] / row["epoch_s"]
            row["vs_bare"] = by_pipeline["bare"]["epoch_s"] / row["epoch_s"]
    return rows
