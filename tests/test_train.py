"""The budgeted trainer: learns, keeps its budget, is deterministic, and refuses bad recipes before training."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR_FOLDER, REPO, needs_real_cifar, write_mini_imagenet_cache

from haet import HaetError
from haet.cli import main
from haet.data.subsets import SubsetSpec, load_subset, make_manifest, write_manifest
from haet.models import build
from haet.train import Budget, ModelSpec, Recipe, RecipeError, Runtime, TrainConfig, read_run_record, train
from haet.train.data import (
    CROP_PADDING,
    CUTOUT_SIZE,
    LoaderPipeline,
    ResidentPipeline,
    batch_crop_flip,
    batch_cutout,
    normalized,
    train_transform,
)
from haet.train.loop import BudgetClock, learning_rate
from haet.train.record import write_run_record

SMALL = ModelSpec("ResNet18", width=0.25)
FAST = Recipe(lr=0.05, batch_size=64, augment="basic", schedule="cosine_time", weight_decay=5e-4)
# What precision auto resolves to here: bf16 on a GPU that has it, else fp32 (the suite runs on either).
AUTO_PRECISION = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
TIMINGS = {"train_s", "eval_s", "setup_s", "images_per_s", "longest_step_s", "budget_elapsed_s", "finished_at"}


@pytest.fixture(scope="module")
def digits():
    return load_subset(make_manifest(SubsetSpec("digits", train_per_class=40, val_per_class=20)))


@pytest.fixture(scope="module")
def digits_large():
    return load_subset(make_manifest(SubsetSpec("digits", train_per_class=100, val_per_class=30)))


def without_timings(value):
    if isinstance(value, dict):
        return {key: without_timings(item) for key, item in value.items() if key not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


def test_digits_training_beats_chance_by_a_wide_margin(digits_large, tmp_path):
    # an epoch budget alone (about 6 s here): how much it trains does not depend on how loaded the machine is
    config = TrainConfig(SMALL, FAST, Budget(seconds=None, max_epochs=5), Runtime(pipeline="resident", workers=0))
    record = write_run_record(train(config, digits_large), tmp_path / "run.json")
    metrics = record["metrics"]
    assert metrics["val_acc_final"] > 0.6  # chance is 0.1
    assert metrics["val_acc_best_optimistic"] >= metrics["val_acc_final"]
    assert record["budget"]["stopped_by"] == "max_epochs" and record["status"] == "complete"
    assert record["model"]["macs"] > 0 and record["provenance"]["packages"]["torch"] == torch.__version__
    assert any("optimistic" in note for note in record["notes"])
    assert read_run_record(tmp_path / "run.json") == record


def test_a_diverged_run_stops_and_still_writes_a_valid_record(digits, tmp_path):
    """A loss that stops being finite (an absurd rate here; a NAS point whose Cutout covers its tiny input in the
    wild) ends the run as diverged, with no NaN in the record, whose JSON is strict."""
    recipe = Recipe(lr=1e30, batch_size=64, augment="none", schedule="constant", weight_decay=0.0)
    config = TrainConfig(SMALL, recipe, Budget(seconds=None, max_epochs=20), Runtime(pipeline="resident"))
    record = write_run_record(train(config, digits), tmp_path / "run.json")
    assert record["budget"]["stopped_by"] == "diverged" and record["metrics"]["epochs"] < 20
    assert record["metrics"]["train_loss_final"] is None and record["status"] == "complete"
    assert read_run_record(tmp_path / "run.json") == record


@pytest.mark.parametrize("pipeline", ["loader", "resident"])
def test_mini_imagenet_kept_at_84_px_is_resized_inside_the_training_loop(tmp_path, pipeline, monkeypatch):
    """size: null keeps the cache's 84x84 images in the subset; each batch is resized to the run's input side in
    the loop, inside the budget, as the challenge's transform list did."""
    cache = tmp_path / "mini-imagenet-cache-train.pkl"
    write_mini_imagenet_cache(cache, ["n03017168", "n01532829"], per_class=10)
    options = {"num_classes": 2, "train_per_class": 6, "test_per_class": 4, "size": None}
    manifest = make_manifest(SubsetSpec("mini-imagenet", str(cache), options, train_per_class=6, val_per_class=4))
    assert manifest["train"]["image_shape"] == [84, 84, 3] and manifest["dataset"]["options"]["size"] is None
    config = TrainConfig(SMALL, FAST, Budget(seconds=None, max_epochs=1), Runtime(pipeline=pipeline, workers=0))
    config = TrainConfig(config.model, Recipe(batch_size=4, augment="cutout"), config.budget, config.runtime)
    sides = set()

    def build_watched(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: sides.add(tuple(inputs[0].shape[-2:])))
        return model

    monkeypatch.setattr("haet.train.loop.build", build_watched)
    record = train(config, load_subset(manifest))
    assert record["model"]["input_px"] == 32 and record["metrics"]["epochs"] == 1
    assert sides == {(32, 32)}  # training batches and validation alike


@needs_real_cifar
def test_real_cifar10_thousand_images_well_above_chance():
    subset = load_subset(
        make_manifest(SubsetSpec("imagefolder", root=str(CIFAR_FOLDER), train_per_class=100, val_per_class=50))
    )
    budget = Budget(seconds=240, max_epochs=10, eval_every_epochs=5)  # about 20 s on a 2-core CPU
    record = train(TrainConfig(SMALL, FAST, budget, Runtime(pipeline="resident")), subset)
    assert record["metrics"]["val_acc_final"] > 0.25  # chance is 0.1


@pytest.mark.parametrize("pipeline", ["loader", "resident"])
def test_no_run_exceeds_its_budget_by_more_than_one_step(digits, pipeline):
    budget_s = 2.0
    config = TrainConfig(SMALL, FAST, Budget(seconds=budget_s), Runtime(pipeline=pipeline, workers=1))
    metrics = train(config, digits)["metrics"]
    assert metrics["train_s"] <= budget_s + metrics["longest_step_s"] + 0.05
    assert metrics["train_s"] >= budget_s  # and it used the budget it had


def test_a_process_clock_budget_counts_cpu_time_so_a_busy_core_does_not_shorten_the_training(digits):
    """Pinned to one core beside a busy loop, the training gets about half the core: its wall time is about twice
    its budget, and the budget it counted (CPU seconds) is the budget, as on an idle machine."""
    budget_s = 2.0
    config = TrainConfig(
        SMALL, FAST, Budget(seconds=budget_s, clock="process"), Runtime(pipeline="resident", workers=0, threads=1)
    )
    core = min(os.sched_getaffinity(0))
    previous = os.sched_getaffinity(0)
    busy = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{core}}})\nwhile True: pass"])
    try:
        os.sched_setaffinity(0, {core})
        start = time.perf_counter()
        record = train(config, digits)
        wall_s = time.perf_counter() - start
    finally:
        os.sched_setaffinity(0, previous)
        busy.kill()
        busy.wait()
    metrics = record["metrics"]
    assert record["budget"]["clock"] == "process" and record["budget"]["stopped_by"] == "budget"
    assert budget_s <= metrics["train_s"] <= budget_s + metrics["longest_step_s"] + 0.05
    assert wall_s > 1.5 * budget_s  # the busy loop took its share of the core; the budget did not pay for it


def test_a_process_clock_is_refused_where_the_process_does_not_see_the_whole_training(digits):
    config = TrainConfig(SMALL, FAST, Budget(seconds=1, clock="process"), Runtime(pipeline="loader", workers=1))
    with pytest.raises(RecipeError, match="budget.clock process counts this process's CPU seconds"):
        train(config, digits)


def test_competition_mode_checks_once_per_epoch_and_counts_evaluation(digits):
    config = TrainConfig(SMALL, FAST, Budget(seconds=2.0, mode="competition"), Runtime(pipeline="resident"))
    record = train(config, digits)
    assert record["budget"]["mode"] == "competition" and record["budget"]["stopped_by"] == "budget"
    assert record["budget"]["budget_elapsed_s"] >= 2.0
    epochs = [point["epoch"] for point in record["metrics"]["curve"]]
    assert epochs == list(range(1, record["metrics"]["epochs"] + 1))  # whole epochs only, each evaluated


@pytest.mark.parametrize(("pipeline", "augment"), [("loader", "paper"), ("resident", "cutout"), ("resident", "paper")])
def test_same_seed_and_epoch_budget_give_identical_records(digits, pipeline, augment):
    config = TrainConfig(
        SMALL,
        Recipe(batch_size=64, augment=augment, lr=0.05),
        Budget(seconds=None, max_epochs=2),
        Runtime(pipeline=pipeline, workers=1),
    )
    first, second = train(config, digits), train(config, digits)
    assert without_timings(first) == without_timings(second)
    other_seed = train(
        TrainConfig(config.model, config.recipe, config.budget, Runtime(pipeline=pipeline, seed=7)), digits
    )
    assert other_seed["metrics"]["train_loss_final"] != first["metrics"]["train_loss_final"]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Recipe(optimizer="lion"), r"unknown optimizer 'lion'"),
        (lambda: Budget(seconds=-1), r"budget seconds must be a positive number"),
        (lambda: Budget(seconds=None), r"needs seconds, max_epochs, or both"),
        (lambda: ModelSpec(resolution=0.2), r"gives 6x6 inputs; the smallest allowed is 8x8"),
        (lambda: Recipe(augment="autoaugment"), r"unknown augment recipe"),
        (lambda: TrainConfig.from_dict({"recipe": {"learning_rate": 0.1}}), r"recipe.learning_rate is not known"),
        (lambda: Budget(max_epochs=2, early_stop_acc="x"), r"budget early_stop_acc must be a number in \[0, 1\]"),
        (lambda: Recipe(label_smoothing="x"), r"label_smoothing must be a number in \[0, 1\)"),
        (lambda: ModelSpec(name=18), r"model name must be a model's name"),
        (lambda: TrainConfig.from_dict({"recipe": [1, 2]}), r"config section 'recipe' must be a mapping"),
        (lambda: TrainConfig.from_dict({"recipe": None}), r"config section 'recipe' is empty \(null\)"),
        (lambda: ModelSpec(depth=10000), r"depth multiplier must be at most 16"),
        (lambda: ModelSpec(width=1000), r"width multiplier must be at most 16"),
        (lambda: ModelSpec(depth=1e308), r"depth multiplier must be at most 16"),
        (lambda: Runtime(threads=100000), r"threads must be at most 512"),
        (lambda: Runtime(workers=10**6), r"workers must be at most 256"),
    ],
)
def test_bad_recipes_are_refused_before_training(build, message):
    with pytest.raises(HaetError, match=message):
        build()


@pytest.mark.parametrize(
    ("layer", "error"),
    [
        ('{"recipe": null}', "config section 'recipe' is empty (null) in --config"),
        ('{"recipe": {"lr": 0.1, "lr": 0.2}}', "the inline --config names 'lr' twice"),
        ("file:recipe:\n  lr: 0.1\n  lr: 0.2\n", "key 'lr' appears twice (first on line 2)"),
    ],
)
def test_a_null_section_or_a_key_given_twice_is_refused_not_silently_resolved(tmp_path, capsys, layer, error):
    from haet.cli import main

    if layer.startswith("file:"):
        (tmp_path / "twice.yaml").write_text(layer.removeprefix("file:"))
        layer = str(tmp_path / "twice.yaml")
    argv = ["train", "--manifest", "m.json", "--config", '{"recipe": {"lr": 0.05}}', "--config", layer]
    assert main([*argv, "--out", str(tmp_path / "r.json")]) == 2
    assert error in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_config_section_that_is_a_list_is_a_one_line_error_on_the_command_line(tmp_path, capsys):
    from haet.cli import main

    (tmp_path / "recipe.yaml").write_text("recipe: [1, 2]\n")
    argv = ["train", "--manifest", "m.json", "--config", str(tmp_path / "recipe.yaml"), "--out", "r.json"]
    assert main(argv) == 2
    assert capsys.readouterr().err == "haet: error: config section 'recipe' must be a mapping of keys, got [1, 2]\n"


def test_batch_larger_than_the_subset_is_refused(digits):
    config = TrainConfig(SMALL, Recipe(batch_size=401), Budget(seconds=1))
    with pytest.raises(RecipeError, match=r"batch_size 401 is larger than the 400 training images"):
        train(config, digits)


def test_the_paper_recipe_trains_on_the_resident_pipeline(digits):
    config = TrainConfig(SMALL, Recipe(augment="paper", batch_size=64), Budget(seconds=None, max_epochs=1))
    record = train(dataclasses.replace(config, runtime=Runtime(pipeline="resident")), digits)
    assert record["runtime"]["pipeline"] == "resident" and record["metrics"]["epochs"] == 1


def test_interrupt_stops_cleanly_with_a_record_marked_interrupted(digits):
    def interrupt(point):
        raise KeyboardInterrupt

    config = TrainConfig(SMALL, FAST, Budget(seconds=30), Runtime(pipeline="resident"))
    record = train(config, digits, on_epoch=interrupt)
    assert record["status"] == "interrupted" and record["budget"]["stopped_by"] == "interrupt"
    assert record["metrics"]["epochs"] == 1 and 0 <= record["metrics"]["val_acc_final"] <= 1


def test_cli_trains_from_a_config_and_a_crash_leaves_no_record(tmp_path, monkeypatch, capsys):
    manifest = tmp_path / "subset.json"
    write_manifest(make_manifest(SubsetSpec("digits", train_per_class=20, val_per_class=10)), manifest)
    config = tmp_path / "train.yaml"
    config.write_text(
        "model: {name: ResNet18, width: 0.25, resolution: 1.18}\n"
        "recipe: {batch_size: 32, augment: none}\nbudget: {seconds: null, max_epochs: 1}\n"
    )
    out = tmp_path / "run.json"
    assert (
        main(
            [
                "train",
                "--manifest",
                str(manifest),
                "--config",
                str(config),
                "--out",
                str(out),
                "--quiet",
                "--optimizer",
                "adam",
                "--lr",
                "0.001",
            ]
        )
        == 0
    )
    record = read_run_record(out)
    assert record["model"]["input_px"] == 37 and record["config"]["recipe"]["optimizer"] == "adam"
    assert "val_acc_final" in capsys.readouterr().out

    def crash(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr("haet.train.train", crash)
    crashed = tmp_path / "crashed.json"
    assert main(["train", "--manifest", str(manifest), "--config", str(config), "--out", str(crashed)]) == 1
    error = capsys.readouterr().err  # an unexpected error keeps its traceback and asks to be reported
    assert "RuntimeError: CUDA error: an illegal memory access" in error and "please report it" in error
    assert not crashed.exists()
    assert main(["train", "--manifest", str(manifest), "--out", str(crashed), "--budget-s", "-1"]) == 2
    assert not crashed.exists()


def test_a_training_without_autoaugment_leaves_torchvision_unimported_yet_records_its_version(tmp_path):
    """torchvision's import costs every training process about 2 s; the record still names its exact build."""
    manifest = tmp_path / "subset.json"
    write_manifest(make_manifest(SubsetSpec("digits", train_per_class=10, val_per_class=5)), manifest)
    out = tmp_path / "run.json"
    probe = (
        "import sys; from haet.cli import main; "
        f"code = main(['train', '--manifest', {str(manifest)!r}, '--out', {str(out)!r}, '--quiet', '--model', "
        "'ResNet18', '--width', '0.125', '--batch-size', '32', '--augment', 'basic', '--max-epochs', '1', "
        "'--pipeline', 'resident']); print(code, 'torchvision' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["0", "False"]
    import torchvision

    assert read_run_record(out)["provenance"]["packages"]["torchvision"] == torchvision.__version__


def test_edited_run_record_is_refused(digits, tmp_path):
    config = TrainConfig(SMALL, FAST, Budget(seconds=None, max_epochs=1), Runtime(pipeline="resident"))
    path = tmp_path / "run.json"
    write_run_record(train(config, digits), path)
    record = json.loads(path.read_text())
    record["metrics"]["val_acc_final"] = 0.99
    path.write_text(json.dumps(record))
    with pytest.raises(HaetError, match=r"edited after it was written"):
        read_run_record(path)


@pytest.mark.parametrize("optimizer", ["adadelta", "adagrad", "sgd", "adam", "adamw", "adamax", "asgd"])
def test_each_optimizer_of_the_paper_trains(digits, optimizer):
    recipe = Recipe(optimizer=optimizer, lr=0.01, batch_size=100, augment="none", label_smoothing=0.1)
    record = train(
        TrainConfig(
            ModelSpec("ResNet18", width=0.125), recipe, Budget(seconds=None, max_epochs=1), Runtime(pipeline="resident")
        ),
        digits,
    )
    assert math.isfinite(record["metrics"]["train_loss_final"]) and record["metrics"]["steps"] == 4


def test_cosine_over_epochs_matches_torch_cosine_annealing():
    config = TrainConfig(recipe=Recipe(lr=0.042, t_max_epochs=6, eta_min=1e-8))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.042)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6, eta_min=1e-8)
    for epoch in range(6):
        assert learning_rate(config, epoch, 0.5, 0.0) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9)
        optimizer.step()
        scheduler.step()
    past = [learning_rate(config, epoch, 0.0, 0.0) for epoch in (6, 7, 12, 100)]
    assert past == [pytest.approx(1e-8)] * 4  # held at eta_min past T_max: a long budget does not cycle it
    warm = TrainConfig(recipe=Recipe(lr=0.1, schedule="constant", warmup_epochs=2))
    assert learning_rate(warm, 0, 0.5, 0.0) == pytest.approx(0.025)
    timed = TrainConfig(recipe=Recipe(lr=0.1, schedule="cosine_time", eta_min=0.0))
    assert learning_rate(timed, 3, 0.0, 0.5) == pytest.approx(0.05)


def test_precision_is_a_runtime_choice_and_the_record_names_the_one_used(digits):
    def run(precision: str) -> dict:
        runtime = Runtime(pipeline="resident", precision=precision)
        return train(TrainConfig(SMALL, FAST, Budget(seconds=None, max_epochs=1), runtime), digits)

    assert run("auto")["runtime"]["precision"] == AUTO_PRECISION  # bf16 only on a GPU that has it
    assert run("bf16")["runtime"]["precision"] == "bf16"  # bf16 autocast runs on the CPU too
    if torch.cuda.is_available():
        assert run("tf32")["runtime"]["precision"] == "tf32"
    else:
        with pytest.raises(HaetError, match=r"precision tf32 is a CUDA mode"):
            run("tf32")
    with pytest.raises(HaetError, match=r"unknown precision 'fp16'; choose one of auto, fp32, tf32, bf16"):
        Runtime(precision="fp16")


class QueuedDevice:
    """A GPU as the budget clock sees it: the host queues a step in host_step_s and runs ahead; the device runs each
    step in device_step_s once the host queued it and the previous one ended; synchronising waits for the queue."""

    def __init__(self, host_step_s: float, device_step_s: float):
        self.host_s, self.done_s, self.host_step_s, self.device_step_s = 0.0, 0.0, host_step_s, device_step_s

    def queue_step(self) -> None:
        self.host_s += self.host_step_s
        self.done_s = max(self.done_s, self.host_s) + self.device_step_s

    def synchronise(self) -> None:
        self.host_s = max(self.host_s, self.done_s)


def _run_clock(device: QueuedDevice, budget_s: float, steps_per_epoch: int, slow_down_at_s: float = 1e9) -> BudgetClock:
    clock = BudgetClock(Budget(seconds=budget_s), torch.device("cuda"), lambda: device.host_s, device.synchronise)
    while not clock.exhausted():
        clock.begin_epoch()
        for _ in range(steps_per_epoch):
            if device.done_s > slow_down_at_s:
                device.device_step_s = 0.015  # steps get 1.5x slower mid-run (thermal throttling, say)
            device.queue_step()
            if clock.step_done():
                break
        clock.end_epoch()
    return clock


@pytest.mark.parametrize("steps_per_epoch", [10, 1000])
@pytest.mark.parametrize("slow_down_at_s", [1e9, 0.5])
def test_the_budget_clock_stops_within_one_step_without_synchronising_every_step(steps_per_epoch, slow_down_at_s):
    device = QueuedDevice(host_step_s=0.001, device_step_s=0.01)
    clock = _run_clock(device, budget_s=1.0, steps_per_epoch=steps_per_epoch, slow_down_at_s=slow_down_at_s)
    assert 1.0 <= clock.train_s <= 1.0 + 0.015  # the work the device really did: at most one step over
    steps = round(clock.train_s / 0.0125)  # between 67 and 100 steps of 10-15 ms
    epochs = -(-steps // steps_per_epoch)
    assert clock.synchronisations <= epochs + 12, (clock.synchronisations, steps)  # not one per step


def test_where_the_host_clock_sees_finished_work_every_step_is_measured():
    clock = BudgetClock(Budget(seconds=1.0), torch.device("cpu"), lambda: 0.0, lambda: None)
    clock.begin_epoch()
    for _ in range(5):
        assert not clock.step_done()
    assert clock.synchronisations == 5


def test_the_authors_freeze_follows_torch_past_t_max_then_holds_the_rate():
    """Their loop stepped CosineAnnealingLR only while epoch <= 260 (T_max 240): the rate climbs for 20 epochs past
    T_max, then stays. Checked against torch's scheduler with the same loop, scaled down (T_max 6, freeze 9)."""
    config = TrainConfig(recipe=Recipe(lr=0.042, t_max_epochs=6, eta_min=1e-8, freeze_lr_at_epoch=9))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.042)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6, eta_min=1e-8)
    for epoch in range(20):
        assert learning_rate(config, epoch, 0.0, 0.0) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-6)
        optimizer.step()
        if epoch <= 8:
            scheduler.step()
    assert learning_rate(config, 19, 0.0, 0.0) > learning_rate(config, 6, 0.0, 0.0)  # it climbed, then held


def test_batched_crop_and_flip_are_crops_of_the_zero_padded_image():
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(16, 3, 8, 8)
    out = batch_crop_flip(batch, generator)
    padded = torch.nn.functional.pad(batch, (4, 4, 4, 4))
    for image, source in zip(out, padded, strict=True):
        candidates = [source[:, y : y + 8, x : x + 8] for y in range(9) for x in range(9)]
        candidates += [crop.flip(-1) for crop in candidates]
        assert any(torch.equal(image, crop) for crop in candidates)


def test_batched_cutout_zeroes_one_clipped_16x16_square():
    generator = torch.Generator().manual_seed(1)
    out = batch_cutout(torch.ones(64, 3, 32, 32), generator)
    holes = (out[:, 0] == 0).sum(dim=(1, 2))
    assert holes.max() == 256 and holes.min() >= 64  # whole square inside, or clipped to a corner
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)  # same square in every channel


def test_paper_transform_order():
    names = [type(step).__name__ for step in train_transform("paper", "paper", 32).transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "AutoAugment", "ToTensor", "Cutout", "Normalize"]
    assert train_transform("paper", "paper", 32).transforms[-1].std == (0.2023, 0.1994, 0.2010)
    # a resolution multiplier resizes first, as the authors' scaled networks did
    scaled = train_transform("paper", "paper", 32, input_px=64).transforms
    assert [type(step).__name__ for step in scaled][:2] == ["Resize", "RandomCrop"] and scaled[1].size == (64, 64)


def _hole_sides(batch: torch.Tensor) -> list[int]:
    """Per image of a normalised batch of all-white images: the height of the zeroed square that is not the crop's
    padding (padding zeroes whole rows or columns; the hole is narrower than the image)."""
    zero = normalized(torch.zeros(1, 3, 1, 1), "paper")
    cut = torch.isclose(batch, zero, atol=1e-4).all(dim=1)  # N x H x W
    sides = []
    for image in cut:
        inside = image[:, ~image.all(dim=0)][~image.all(dim=1)]  # drop padding columns, then padding rows
        rows = inside.any(dim=1).nonzero()
        sides.append(int(rows.max() - rows.min() + 1) if len(rows) else 0)
    return sides


@pytest.mark.parametrize("pipeline", ["loader", "resident"])
def test_a_resolution_multiplier_resizes_before_crop_and_cutout_so_the_hole_stays_16_px(pipeline):
    white, labels = np.full((64, 32, 32, 3), 255, np.uint8), np.zeros(64, np.int64)
    args = (white, labels, "cutout", "paper", 64)
    if pipeline == "loader":
        torch.manual_seed(0)
        feed = LoaderPipeline(*args, workers=0, seed=0, device=torch.device("cpu"), input_px=64)
    else:
        feed = ResidentPipeline(*args, seed=0, device=torch.device("cpu"), input_px=64)
    batch, _ = next(iter(feed.epoch()))
    assert batch.shape == (64, 3, 64, 64)
    sides = _hole_sides(batch)
    assert max(sides) == CUTOUT_SIZE  # resized after augmenting, the hole would be 32 px
    zero = normalized(torch.zeros(1, 3, 1, 1), "paper")
    padding_rows = torch.isclose(batch, zero, atol=1e-4).all(dim=1).all(dim=2).sum(dim=1)
    assert padding_rows.max() <= 2 * CROP_PADDING  # 4 px a side at the new size, not 8


def test_ctrl_c_at_the_terminal_writes_a_record_marked_interrupted(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it: DataLoader workers get it too."""
    manifest = tmp_path / "subset.json"
    write_manifest(make_manifest(SubsetSpec("digits", train_per_class=60, val_per_class=20)), manifest)
    out = tmp_path / "run.json"
    command = [
        sys.executable,
        "-m",
        "haet",
        "train",
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--model",
        "ResNet18",
        "--width",
        "0.25",
        "--batch-size",
        "64",
        "--augment",
        "paper",
        "--budget-s",
        "300",
        "--workers",
        "2",
    ]
    # As at a terminal, SIGINT at its default (a suite started in the background by a script inherits it ignored,
    # and Python then never raises KeyboardInterrupt)
    process = subprocess.Popen(
        command,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    progress, deadline = b"", time.monotonic() + 120
    while b"val_acc" not in progress and time.monotonic() < deadline:  # the bar shows the first epoch's accuracy
        if select.select([process.stderr], [], [], 1.0)[0]:
            progress += os.read(process.stderr.fileno(), 4096)
    os.killpg(process.pid, signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    record = read_run_record(out)
    assert record["status"] == "interrupted" and record["budget"]["stopped_by"] == "interrupt"
    assert record["metrics"]["epochs"] >= 1


def test_make_gpu_check_runs_through_on_the_cpu_with_tiny_settings(tmp_path):
    subset = json.dumps({"data": {"dataset": "digits"}, "subsets": {"train_per_class": 12, "val_per_class": 4}})
    tiny = "--model ResNet18 --width 0.125 --batch-size 32 --workers 0"
    settings = [
        "GPU_CHECK_TESTS=",
        f"GPU_CHECK_DIR={tmp_path}",
        f"GPU_CHECK_SUBSET={subset}",
        f"GPU_CHECK_BENCH={tiny} --epochs 2",
        "GPU_CHECK_EPOCHS=2",
        f"GPU_CHECK_TRAIN={tiny}",
        "GPU_CHECK_CAPTURE=eager",
        "GPU_CHECK_SHARE=1 2",
        "GPU_CHECK_SHARE_EPOCHS=1",
        f"GPU_CHECK_SHARE_ARGS={tiny}",
    ]
    result = subprocess.run(["make", "-C", str(REPO), "gpu-check", *settings], capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    table = [line.split() for line in result.stdout.splitlines() if line.startswith(("basic ", "paper "))]
    assert [(row[0], row[1], row[2]) for row in table] == [
        (recipe, pipeline, "eager")
        for recipe in ("basic", "paper")
        for pipeline in ("loader", "resident", "bare", "data")
    ]
    sharing = [
        line.split() for line in result.stdout.splitlines() if line.split()[:2] in (["1", "eager"], ["2", "eager"])
    ]
    assert [row[:2] for row in sharing] == [["1", "eager"], ["2", "eager"]] and sharing[0][4] == "1.00x"
    assert len(sharing[1]) == 8  # two trainings' accuracies
    assert "stopped by max_epochs after 2 epochs" in result.stdout
    record = read_run_record(tmp_path / "paper-recipe-eager.json")
    assert record["config"]["recipe"]["augment"] == "paper" and record["runtime"]["capture"] == "eager"


def test_haet_bench_json_has_every_recipe_and_pipeline_with_ratios(tmp_path, capsys):
    manifest = tmp_path / "subset.json"
    write_manifest(make_manifest(SubsetSpec("digits", train_per_class=12, val_per_class=4)), manifest)
    argv = ["bench", "--manifest", str(manifest), "--model", "ResNet18", "--width", "0.125", "--batch-size", "32"]
    assert main([*argv, "--epochs", "2", "--workers", "0", "--recipes", "cutout", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    steps = ["eager", "cuda-graph"] if torch.cuda.is_available() else ["eager"]
    expected = [("loader", "eager")] + [(pipeline, step) for pipeline in ("resident", "bare") for step in steps]
    assert [(row["pipeline"], row["step"]) for row in rows] == [*expected, ("data", "eager")]
    by_name = {(row["pipeline"], row["step"]): row for row in rows}
    assert by_name["loader", "eager"]["vs_loader"] == 1.0
    assert all(by_name["bare", step]["vs_bare"] == 1.0 for step in steps)
    data = by_name["data", "eager"]
    assert data["data_share"] == pytest.approx(data["epoch_s"] / by_name["resident", "eager"]["epoch_s"])
    assert 0 < data["data_share"] < 1
    assert all(row["images_per_s"] > 0 and row["precision"] == AUTO_PRECISION for row in rows)


@pytest.fixture
def digits_manifest_file(tmp_path) -> Path:
    path = tmp_path / "subset.json"
    write_manifest(make_manifest(SubsetSpec("digits", train_per_class=20, val_per_class=10)), path)
    return path


TINY = (
    '{"model": {"width": 0.125, "resolution": 0.5}, "recipe": {"batch_size": 32, "augment": "none"}, '
    '"budget": {"seconds": null, "max_epochs": 1}, "runtime": {"pipeline": "resident", "workers": 0}}'
)


def _mounted(folder: Path, options: str) -> bool:
    folder.mkdir()
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode
        == 0
    )


@pytest.mark.parametrize("where", ["the manifest", "a folder", "under a file", "a full disk", "a read-only disk"])
def test_an_output_that_cannot_be_written_or_names_an_input_is_refused_before_training(
    tmp_path, digits_manifest_file, capsys, where
):
    """issue 21: such outputs were found only after the budget, as tracebacks, or replaced the input."""
    original = digits_manifest_file.read_bytes()
    out = {
        "the manifest": digits_manifest_file,
        "a folder": tmp_path,
        "under a file": digits_manifest_file / "run.json",
        "a full disk": tmp_path / "full" / "run.json",
        "a read-only disk": tmp_path / "ro" / "run.json",
    }[where]
    if where in ("a full disk", "a read-only disk"):
        options = "size=256k" if where == "a full disk" else "ro"
        if not _mounted(out.parent, options):
            if os.environ.get("CI"):
                pytest.fail(f"could not mount a tmpfs ({options}) to test {where}")
            pytest.skip(f"cannot mount a tmpfs here ({options}): needs root")
    try:
        argv = ["train", "--quiet", "--manifest", str(digits_manifest_file), "--config", TINY, "--out", str(out)]
        assert main(argv) == 2
        error = capsys.readouterr().err
    finally:
        if where in ("a full disk", "a read-only disk"):
            subprocess.run(["umount", str(out.parent)], check=False)
    assert error.startswith("haet: error: ") and error.count("\n") == 1 and "Traceback" not in error
    reason = {
        "the manifest": "is also an input of this command",
        "a folder": "is a directory",
        "under a file": "cannot write to",
        "a full disk": "No space left on device",
        "a read-only disk": "Read-only file system",
    }[where]
    assert reason in error and "epoch" not in error
    assert digits_manifest_file.read_bytes() == original


def test_an_interrupted_rerun_keeps_the_complete_record_and_writes_beside_it(
    tmp_path, digits_manifest_file, monkeypatch, capsys
):
    out = tmp_path / "run.json"
    argv = ["train", "--quiet", "--manifest", str(digits_manifest_file), "--config", TINY, "--out", str(out)]
    assert main(argv) == 0
    complete = out.read_bytes()
    finished = read_run_record(out)
    interrupted = {key: value for key, value in finished.items() if key not in ("provenance", "content_sha256")}
    interrupted = interrupted | {"status": "interrupted", "budget": finished["budget"] | {"stopped_by": "interrupt"}}
    monkeypatch.setattr("haet.train.train", lambda config, subset, on_epoch=None: interrupted)  # a Ctrl-C mid-run
    assert main(argv) == 130
    assert out.read_bytes() == complete
    beside = tmp_path / "run.interrupted.json"
    assert read_run_record(beside)["status"] == "interrupted"
    assert f"{out} holds a complete run: this interrupted one goes to {beside}" in capsys.readouterr().err
