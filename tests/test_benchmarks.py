"""Speed is measured here with pytest-benchmark, never asserted.

`make bench` (or pytest tests/test_benchmarks.py --benchmark-enable) times it; the default test run executes each
case once, untimed, so the benchmark code itself stays working.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms import AutoAugment, AutoAugmentPolicy

from haet.data.subsets import SubsetSpec, load_subset, make_manifest
from haet.train import Budget, ModelSpec, Recipe, Runtime, TrainConfig, train
from haet.train.autoaugment import batch_autoaugment


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


@pytest.fixture(scope="module")
def images_512():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("path", ["loader (PIL, per image)", "resident (batched)"])
def test_cpu_autoaugment_images_per_second(benchmark, images_512, path):
    """The paper's AutoAugment on 512 images: torchvision on PIL images one by one (what a loader worker does)
    against the batched version the resident pipeline runs on the device."""
    if path.startswith("loader"):
        policy = AutoAugment(AutoAugmentPolicy.CIFAR10, fill=128)
        pil_images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images_512]
        benchmark.pedantic(lambda: [policy(image) for image in pil_images], rounds=3, warmup_rounds=1)
    else:
        generator = torch.Generator().manual_seed(0)
        benchmark.pedantic(batch_autoaugment, args=(images_512, generator), rounds=3, warmup_rounds=1)
    benchmark.extra_info["images"] = len(images_512)
