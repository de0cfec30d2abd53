"""The training step (runtime.capture): the captured path's SGD and warm-up on the CPU, its refusal off CUDA, and on a
GPU the captured training beside the eager one."""

from __future__ import annotations

import dataclasses
import statistics

import pytest
import torch
from torch import nn

from haet.data.subsets import SubsetSpec, load_subset, make_manifest
from haet.models import build
from haet.train import Budget, ModelSpec, Recipe, RecipeError, Runtime, TrainConfig, read_run_record, train
from haet.train.data import batch_sizes
from haet.train.record import write_run_record
from haet.train.step import EagerStep, StaticStep

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the captured step replays CUDA graphs")


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build("ResNet18", 10, 1.0, 0.125)


def batches(count: int, batch_size: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, 16, 16, generator=generator)
    labels = torch.randint(10, (count,), generator=generator)
    return [(images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, count, batch_size)]


def static_step(model: nn.Module, recipe: Recipe, sizes: list[int]) -> StaticStep:
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    return StaticStep(
        model, loss_fn, recipe.momentum, recipe.weight_decay, False, (3, 16, 16), sizes, 10, torch.contiguous_format
    )


def train_steps(step, data, rates) -> list[float]:
    return [step(inputs, targets, lr).item() for (inputs, targets), lr in zip(data, rates, strict=True)]


@pytest.fixture
def float64():
    """In fp32 two equal algorithms drift apart by rounding that a small BatchNorm batch amplifies a thousandfold
    in a few steps; in fp64 they agree to 1e-15, so a real difference cannot hide in a tolerance."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_the_static_step_trains_as_torch_sgd_with_the_rate_changed_each_step_and_a_short_last_batch(momentum, float64):
    """The captured path's own SGD (a device-tensor rate) follows torch.optim.SGD step for step, partial batch
    included, so capture changes how the step is launched, not what it computes."""
    recipe = Recipe(lr=0.1, momentum=momentum, weight_decay=5e-3, label_smoothing=0.1)
    data = batches(100, 32) * 2  # 32, 32, 32, 4, twice
    rates = [0.1 * (1 - i / len(data)) for i in range(len(data))]
    eager_model, static_model = small_model(), small_model()
    optimizer = torch.optim.SGD(eager_model.parameters(), lr=recipe.lr, momentum=momentum, weight_decay=5e-3)
    eager = EagerStep(eager_model, optimizer, nn.CrossEntropyLoss(label_smoothing=0.1), False)
    static = static_step(static_model, recipe, batch_sizes(100, 32))
    assert static.batches.keys() == {32, 4}
    eager_losses, static_losses = train_steps(eager, data, rates), train_steps(static, data, rates)
    assert eager_losses == pytest.approx(static_losses, rel=1e-12)
    assert static.lr == eager.lr == rates[-1]
    for name, value in eager_model.state_dict().items():
        torch.testing.assert_close(static_model.state_dict()[name], value, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="no static buffer for a batch of 7"):
        static(*batches(7, 7)[0], 0.1)


def test_warm_up_trains_nothing_the_run_keeps():
    """The steps capture needs run on random data; the model (BatchNorm statistics included) and the momentum are
    put back, so a warmed-up step trains exactly as a fresh one."""
    recipe, data = Recipe(lr=0.05), batches(64, 32)
    fresh, warmed = static_step(small_model(), recipe, [32]), static_step(small_model(), recipe, [32])
    before = {name: value.clone() for name, value in warmed.model.state_dict().items()}
    assert warmed.warm_up_and_capture(graphs=False) > 0
    for name, value in warmed.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(not buffer.any() for buffer in warmed.momentum_buffers)
    assert train_steps(warmed, data, [0.05, 0.05]) == train_steps(fresh, data, [0.05, 0.05])
    for name, value in fresh.model.state_dict().items():
        assert torch.equal(warmed.model.state_dict()[name], value), name


@pytest.fixture(scope="module")
def digits():
    return load_subset(make_manifest(SubsetSpec("digits", train_per_class=30, val_per_class=10)))


def config(capture: str, **recipe) -> TrainConfig:
    return TrainConfig(
        model=ModelSpec("ResNet18", width=0.25),
        recipe=Recipe(batch_size=64, augment="basic", lr=0.05, **recipe),
        budget=Budget(seconds=None, max_epochs=1),
        runtime=Runtime(device="cpu", capture=capture),
    )


@pytest.mark.parametrize(
    ("capture", "optimizer", "message"),
    [
        (
            "cuda-graph",
            "sgd",
            "runtime.capture cuda-graph replays the training step as a CUDA graph, and this run's "
            "device is cpu: set runtime.capture to eager",
        ),
        ("bogus", "sgd", "unknown capture 'bogus'; choose one of auto, eager, cuda-graph"),
    ],
)
def test_a_captured_step_off_cuda_is_refused_before_training_naming_the_setting(digits, capture, optimizer, message):
    with pytest.raises(RecipeError, match=message):
        train(config(capture, optimizer=optimizer), digits)


def test_a_record_names_the_step_it_took_and_what_capture_cost(digits, tmp_path):
    write_run_record(train(config("auto"), digits), tmp_path / "run.json")
    record = read_run_record(tmp_path / "run.json")
    assert record["runtime"]["capture"] == "eager" and record["metrics"]["capture_s"] == 0.0
    assert record["config"]["runtime"]["capture"] == "auto"


@needs_cuda
def test_a_captured_step_on_cuda_refuses_an_optimizer_it_does_not_capture(digits):
    cuda = dataclasses.replace(config("cuda-graph", optimizer="adam"), runtime=Runtime(capture="cuda-graph"))
    with pytest.raises(RecipeError, match="captures an SGD step .* recipe.optimizer is adam"):
        train(cuda, digits)


@needs_cuda
def test_the_captured_step_trains_as_the_eager_one_within_the_spread_of_seeds():
    """Same seeds and epoch budget, eager vs captured: the captured run's final accuracy lies within the eager runs'
    spread over 3 seeds (widened by the two-sided noise a 300-image validation set has), and it trains faster."""
    subset = load_subset(make_manifest(SubsetSpec("digits", train_per_class=150, val_per_class=30)))
    results = {}
    for capture in ("eager", "cuda-graph"):
        for seed in range(3):
            run = TrainConfig(
                model=ModelSpec("SENet18", width=0.67),
                recipe=Recipe(batch_size=256, augment="basic", t_max_epochs=8),
                budget=Budget(seconds=None, max_epochs=8),
                runtime=Runtime(capture=capture, seed=seed),
            )
            results[capture, seed] = train(run, subset)
    eager = [results["eager", seed]["metrics"]["val_acc_final"] for seed in range(3)]
    captured = [results["cuda-graph", seed]["metrics"]["val_acc_final"] for seed in range(3)]
    spread = max(eager) - min(eager) + 2 * (0.25 / 300) ** 0.5
    assert abs(statistics.mean(captured) - statistics.mean(eager)) <= spread, (eager, captured)
    record = results["cuda-graph", 0]
    assert record["runtime"]["capture"] == "cuda-graph" and record["metrics"]["capture_s"] > 0
    speed = {
        capture: statistics.median(results[capture, s]["metrics"]["images_per_s"] for s in range(3))
        for capture in ("eager", "cuda-graph")
    }
    print(f"images/s eager {speed['eager']:.0f}, captured {speed['cuda-graph']:.0f}; acc {eager} vs {captured}")
