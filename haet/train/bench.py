"""Pipeline benchmark: the same model and subset through the DataLoader pipeline and the resident pipeline.

Epoch times come from the run records' curves (training seconds only, evaluation excluded); the first epoch is
left out as warm-up (worker start, cuDNN autotuning, allocator growth).
"""

from __future__ import annotations

import statistics

from haet.data.subsets import Subset
from haet.train.config import Budget, ModelSpec, Recipe, Runtime, TrainConfig
from haet.train.loop import train


def epoch_seconds(record: dict) -> list[float]:
    times = [point["train_s"] for point in record["metrics"]["curve"] if point["epoch"] > 0]
    return [later - earlier for earlier, later in zip([0.0, *times], times, strict=False)]


def bench_pipelines(
    subset: Subset,
    model: ModelSpec,
    augment: str = "basic",
    batch_size: int = 512,
    epochs: int = 4,
    device: str = "auto",
    workers: int = 2,
) -> list[dict]:
    """One row per pipeline: median epoch seconds and images per second over epochs 2..epochs."""
    rows = []
    for pipeline in ("loader", "resident"):
        config = TrainConfig(
            model=model,
            recipe=Recipe(batch_size=batch_size, augment=augment, schedule="constant", lr=0.01),
            budget=Budget(seconds=None, max_epochs=epochs),
            runtime=Runtime(device=device, pipeline=pipeline, workers=workers, seed=0),
        )
        record = train(config, subset)
        measured = epoch_seconds(record)[1:] or epoch_seconds(record)
        median_s = statistics.median(measured)
        images = record["metrics"]["images_seen"] / record["metrics"]["epochs"]
        rows.append(
            {
                "pipeline": pipeline,
                "device": record["runtime"]["device"],
                "epoch_s": median_s,
                "images_per_s": images / median_s,
                "epochs_measured": len(measured),
            }
        )
    rows[1]["speedup"] = rows[0]["epoch_s"] / rows[1]["epoch_s"]
    return rows
