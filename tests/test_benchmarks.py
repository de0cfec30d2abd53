"""Speed is measured here with pytest-benchmark, never asserted.

`make bench` (or pytest tests/test_benchmarks.py --benchmark-enable) times it; the default test run executes each
case once, untimed, so the benchmark code itself stays working.
"""

from __future__ import annotations

import pytest

from haet.data.subsets import SubsetSpec, load_subset, make_manifest
from haet.train import Budget, ModelSpec, Recipe, Runtime, TrainConfig, train


@pytest.fixture(scope="module")
def digits():
    return load_subset(make_manifest(SubsetSpec("digits", train_per_class=64, val_per_class=10)))


@pytest.mark.parametrize("pipeline", ["loader", "resident"])
def test_cpu_training_steps_per_second_resnet18_width_quarter(benchmark, digits, pipeline):
    config = TrainConfig(
        ModelSpec("ResNet18", width=0.25),
        Recipe(batch_size=64, augment="basic", schedule="constant", lr=0.05),
        Budget(seconds=None, max_epochs=1),
        Runtime(device="cpu", pipeline=pipeline, workers=1, seed=0),
    )
    record = benchmark.pedantic(train, args=(config, digits), rounds=3, warmup_rounds=1)
    metrics = record["metrics"]
    benchmark.extra_info["steps_per_epoch"] = metrics["steps"]
    benchmark.extra_info["steps_per_s"] = metrics["steps"] / metrics["train_s"]
