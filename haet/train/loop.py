"""train(config, subset) -> run record: one model, one subset, one wall-clock budget.

Budget modes:
- step (default): the clock counts training only (data loading, forward, backward, optimiser step), is checked
  after every step, and stops within one step of the budget; evaluation is timed separately.
- competition: the HAET challenge's loop. The clock starts after data loading and model construction and is
  checked once per epoch, after training and a validation pass, so evaluation counts and the last epoch overruns.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from haet.data.subsets import Subset
from haet.files import canonical_json, content_hash, sha256_bytes
from haet.models import build, input_size
from haet.models.cost import model_cost
from haet.train.config import Budget, RecipeError, TrainConfig
from haet.train.data import LoaderPipeline, ResidentPipeline, batch_sizes, normalized, resize, to_device_images
from haet.train.step import EagerStep, StaticStep, resolve_capture

OPTIMISM_NOTE = (
    "val_acc_best_optimistic is the best validation accuracy over evaluated epochs: choosing the epoch on the "
    "validation images makes it optimistic. The paper reported this number; val_acc_final is the accuracy after "
    "the last step."
)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise RecipeError(f"unknown device {name!r} ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"device {name!r} asked for, but torch sees no CUDA device here")
    return device


def resolve_pipeline(config: TrainConfig, device: torch.device) -> str:
    if config.runtime.pipeline == "auto":
        return "resident" if device.type == "cuda" else "loader"
    return config.runtime.pipeline


def resolve_precision(name: str, device: torch.device) -> str:
    """The arithmetic a run trains in; on CUDA it also sets TF32 on or off for the process."""
    on_cuda = device.type == "cuda"
    if name == "auto":
        name = "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "fp32"
    if name == "tf32" and not on_cuda:
        raise RecipeError("precision tf32 is a CUDA mode (TF32 tensor cores); on the CPU use fp32 or bf16")
    if name == "bf16" and on_cuda and not torch.cuda.is_bf16_supported():
        raise RecipeError(f"precision bf16 asked for, but {torch.cuda.get_device_name(device)} has no bf16")
    if on_cuda:  # cuDNN allows TF32 by default: fp32 must switch it off to be fp32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
    return name


def make_optimizer(config: TrainConfig, parameters) -> torch.optim.Optimizer:
    recipe = config.recipe
    common = {"lr": recipe.lr, "weight_decay": recipe.weight_decay}
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(parameters, momentum=recipe.momentum, **common)
    optimizers = {
        "adadelta": torch.optim.Adadelta,
        "adagrad": torch.optim.Adagrad,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "adamax": torch.optim.Adamax,
        "asgd": torch.optim.ASGD,
    }
    return optimizers[recipe.optimizer](parameters, **common)


def learning_rate(config: TrainConfig, epoch: int, epoch_progress: float, time_progress: float) -> float:
    """The learning rate of the next step; epoch_progress is the fraction of the current epoch done."""
    recipe = config.recipe
    if recipe.schedule == "cosine_epochs":  # CosineAnnealingLR's closed form, stepped once per epoch
        if recipe.freeze_lr_at_epoch is None:
            step = min(epoch, recipe.t_max_epochs)  # eta_min from T_max on
        else:
            step = min(epoch, recipe.freeze_lr_at_epoch)  # periodic until the freeze, as the authors' loop
        lr = recipe.eta_min + (recipe.lr - recipe.eta_min) * (1 + math.cos(math.pi * step / recipe.t_max_epochs)) / 2
    elif recipe.schedule == "cosine_time":
        lr = recipe.eta_min + (recipe.lr - recipe.eta_min) * (1 + math.cos(math.pi * min(time_progress, 1.0))) / 2
    else:
        lr = recipe.lr
    if recipe.warmup_epochs > 0:
        lr *= min(1.0, (epoch + epoch_progress) / recipe.warmup_epochs)
    return lr


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, autocast: bool) -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in range(0, len(labels), batch_size):
        with torch.autocast(labels.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(images[start : start + batch_size])
        correct += (logits.argmax(1) == labels[start : start + batch_size]).sum()
    model.train()
    return correct.item() / len(labels)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_seeds(seed: int) -> dict[str, int]:
    init, shuffle, augment = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint32)
    return {"init": int(init), "shuffle": int(shuffle), "augment": int(augment)}


@dataclass
class Setup:
    """Everything the epoch loop needs, made before the budget's clock starts."""

    model: nn.Module
    step: EagerStep | StaticStep
    pipeline: LoaderPipeline | ResidentPipeline
    val_images: torch.Tensor
    val_labels: torch.Tensor
    device: torch.device
    precision: str
    seed: int
    seeds: dict[str, int]
    input_px: int
    num_classes: int
    macs: int
    params: int
    setup_s: float


def set_up(config: TrainConfig, subset: Subset) -> Setup:
    """Model, training step, input pipeline and validation images on the device, seeded from the run's seed; a
    captured step is captured here, before any budget clock starts."""
    start = time.perf_counter()
    spec, recipe, runtime = config.model, config.recipe, config.runtime
    train_count = len(subset.train.labels)
    if recipe.batch_size > train_count:
        raise RecipeError(f"batch_size {recipe.batch_size} is larger than the {train_count} training images")
    if runtime.threads is not None:
        torch.set_num_threads(runtime.threads)
    device = resolve_device(runtime.device)
    pipeline_name = resolve_pipeline(config, device)
    # Every optimiser's first step imports torch._dynamo (over a second on a CPU core): imported in set-up so that
    # the budget does not pay for it, whichever pipeline trains.
    importlib.import_module("torch._dynamo")
    precision = resolve_precision(runtime.precision, device)
    capture = resolve_capture(runtime.capture, device, recipe.optimizer)
    loader_workers = pipeline_name == "loader" and runtime.workers > 0
    if config.budget.clock == "process" and (device.type != "cpu" or loader_workers):
        raise RecipeError(
            "budget.clock process counts this process's CPU seconds, which see a training's whole work only on the "
            "CPU with no DataLoader workers (pipeline resident, or workers 0); use clock wall here"
        )
    input_px = input_size(spec.resolution)
    seed = subset.manifest["subset_seed"] if runtime.seed is None else runtime.seed
    seeds = run_seeds(seed)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    torch.manual_seed(seeds["init"])
    num_classes = len(subset.train.class_names)
    model = build(spec.name, num_classes, spec.depth, spec.width).to(device, memory_format=memory_format)
    cost = model_cost(spec.name, spec.depth, spec.width, input_px, num_classes)
    images, labels = subset.train.images, subset.train.labels
    common = (images, labels, recipe.augment, recipe.normalize, recipe.batch_size)
    if pipeline_name == "resident":
        pipeline = ResidentPipeline(*common, seeds["shuffle"], device, input_px, recipe.autoaugment)
    else:
        pipeline = LoaderPipeline(*common, runtime.workers, seeds["shuffle"], device, input_px, recipe.autoaugment)
        torch.manual_seed(seeds["augment"])  # the workers' transforms draw from seeds derived from this
    val_images = resize(normalized(to_device_images(subset.validation.images, device), recipe.normalize), input_px)
    loss_fn, bf16 = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing), precision == "bf16"
    if capture == "cuda-graph":
        sizes = batch_sizes(train_count, recipe.batch_size)
        shape = tuple(val_images.shape[1:])
        step = StaticStep(
            model, loss_fn, recipe.momentum, recipe.weight_decay, bf16, shape, sizes, num_classes, memory_format
        )
        step.warm_up_and_capture()
    else:
        step = EagerStep(model, make_optimizer(config, model.parameters()), loss_fn, bf16)
    return Setup(
        model=model,
        step=step,
        pipeline=pipeline,
        val_images=val_images.contiguous(memory_format=memory_format),
        val_labels=torch.as_tensor(subset.validation.labels, device=device),
        device=device,
        precision=precision,
        seed=seed,
        seeds=seeds,
        input_px=input_px,
        num_classes=num_classes,
        macs=cost.macs,
        params=cost.params,
        setup_s=time.perf_counter() - start,
    )


class BudgetClock:
    """Seconds spent against a budget.

    step mode counts training seconds and stops within one step of the budget, without synchronising the GPU
    after every step (which would empty its launch queue each time): from the mean step time measured at the last
    synchronisation it predicts when the queued steps end, and synchronises when the next step, taken as up to
    SAFETY times that mean, might cross the budget, or when the time predicted since the last measurement reaches
    half of what is left (so the measurements close in on the budget and a step time that drifts is caught: about
    log2(budget / step) synchronisations an epoch). Where the host's clock sees finished work (the CPU) every step
    is measured exactly. competition mode is the challenge's wall clock from the end of set-up, read between
    epochs. now and synchronise are the clock and the device wait (injectable, so the guarantee is testable).
    """

    SAFETY = 2.0

    def __init__(
        self, budget: Budget, device: torch.device, now: Callable[[], float] = time.perf_counter, synchronise=None
    ):
        self.budget, self.now = budget, now
        self.synchronise = synchronise or (lambda: sync(device))
        self.exact = device.type != "cuda"
        self.started = now()
        self.train_s = 0.0  # finished epochs' training seconds, measured after synchronising
        self.step_s: float | None = None  # mean step seconds over the last synchronised interval
        self.longest_step_s = 0.0
        self.synchronisations = 0

    def begin_epoch(self) -> None:
        self.epoch_start = self.last_sync = self.now()
        self.steps_since_sync = 0

    def spent_s(self) -> float:
        """The budget used so far, as the host sees it (what cosine_time anneals by; no synchronisation)."""
        if self.budget.mode == "competition":
            return self.now() - self.started
        return self.train_s + self.now() - self.epoch_start

    def _measure(self) -> float:
        """Synchronise, update the step time, and return the epoch's training seconds so far."""
        self.synchronise()
        self.synchronisations += 1
        now = self.now()
        if self.steps_since_sync:
            self.step_s = (now - self.last_sync) / self.steps_since_sync
            self.longest_step_s = max(self.longest_step_s, self.step_s)
        self.last_sync, self.steps_since_sync = now, 0
        return now - self.epoch_start

    def step_done(self) -> bool:
        """Called after each step is queued: whether step mode's budget is spent."""
        self.steps_since_sync += 1
        if self.budget.mode != "step" or self.budget.seconds is None:
            return False
        left_s = self.budget.seconds - self.train_s
        if not self.exact and self.step_s is not None:
            synced_s = self.last_sync - self.epoch_start
            predicted_s = max(self.now() - self.epoch_start, synced_s + self.steps_since_sync * self.step_s)
            # far from the budget, and the prediction since the last measurement is short next to what is left
            # (so a drift of the step time cannot carry it past): let the queue run
            far = predicted_s + self.SAFETY * self.step_s < left_s
            if far and predicted_s - synced_s < (left_s - predicted_s) / 2:
                return False
        return self._measure() >= left_s

    def end_epoch(self) -> None:
        self.train_s += self._measure()

    def exhausted(self) -> bool:
        """Between epochs: whether the budget is spent (the only check competition mode makes)."""
        if self.budget.seconds is None:
            return False
        spent = self.now() - self.started if self.budget.mode == "competition" else self.train_s
        return spent >= self.budget.seconds


def train_epoch(run: Setup, config: TrainConfig, clock: BudgetClock, epoch: int) -> tuple[torch.Tensor, int, int, str]:
    """One pass over the pipeline: (loss sum, images, steps, how it ended: finished, budget or interrupt)."""
    budget = config.budget
    steps_per_epoch = len(run.pipeline)
    loss_sum, images, steps, ended = torch.zeros((), device=run.device), 0, 0, "finished"
    clock.begin_epoch()
    try:
        for step, (inputs, targets) in enumerate(run.pipeline.epoch()):
            # cosine_time anneals towards whichever budget ends first: seconds or epochs
            progress = clock.spent_s() / budget.seconds if budget.seconds is not None else 0.0
            if budget.max_epochs is not None:
                progress = max(progress, (epoch + step / steps_per_epoch) / budget.max_epochs)
            lr = learning_rate(config, epoch, step / steps_per_epoch, progress)
            if run.device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            loss_sum += run.step(inputs, targets, lr) * len(targets)
            images, steps = images + len(targets), steps + 1
            if clock.step_done():
                ended = "budget"
                break
    except KeyboardInterrupt:
        ended = "interrupt"  # the steps taken so far count; the record says interrupted
    clock.end_epoch()
    return loss_sum, images, steps, ended


def train(
    config: TrainConfig,
    subset: Subset,
    on_epoch: Callable[[dict], None] | None = None,
    on_model: Callable[[nn.Module], None] | None = None,
) -> dict:
    """Train config's model on subset within config's budget; returns the run record's body. on_epoch gets each
    evaluated epoch's curve point, on_model the model after it (a challenge submission hands it in)."""
    run = set_up(config, subset)
    budget = config.budget
    # competition mode's clock starts here, after set-up
    clock = BudgetClock(budget, run.device, time.process_time if budget.clock == "process" else time.perf_counter)
    epoch = steps = images_seen = 0
    eval_s, curve, stopped_by, last_loss = 0.0, [], None, None

    def curve_point() -> dict:
        nonlocal eval_s
        sync(run.device)
        start = time.perf_counter()
        bf16 = run.precision == "bf16"
        accuracy = evaluate(run.model, run.val_images, run.val_labels, config.runtime.eval_batch_size, bf16)
        eval_s += time.perf_counter() - start
        return {
            "epoch": epoch,
            "steps": steps,
            "train_s": round(clock.train_s, 3),
            "train_loss": last_loss,
            "val_acc": accuracy,
            "lr": run.step.lr,
        }

    run.model.train()
    try:
        while stopped_by is None:
            if budget.max_epochs is not None and epoch >= budget.max_epochs:
                stopped_by = "max_epochs"
                break
            if clock.exhausted():
                stopped_by = "budget"
                break
            loss_sum, epoch_images, epoch_steps, ended = train_epoch(run, config, clock, epoch)
            steps, images_seen = steps + epoch_steps, images_seen + epoch_images
            epoch += 1 if ended == "finished" else 0
            stopped_by = None if ended == "finished" else ended
            mean_loss = (loss_sum / max(epoch_images, 1)).item()
            last_loss = mean_loss if math.isfinite(mean_loss) else None
            if last_loss is None and epoch_images and stopped_by != "interrupt":
                stopped_by = "diverged"  # NaN or inf: more steps cannot bring it back
            if stopped_by == "interrupt":
                break
            if budget.mode == "competition" or (ended == "finished" and epoch % budget.eval_every_epochs == 0):
                curve.append(curve_point())
                if on_epoch is not None:
                    on_epoch(curve[-1] | {"budget_s": budget.seconds, "max_epochs": budget.max_epochs})
                if on_model is not None:
                    on_model(run.model)
            early = budget.early_stop_epoch is not None and epoch >= budget.early_stop_epoch
            if stopped_by is None and early and curve and max(p["val_acc"] for p in curve) <= budget.early_stop_acc:
                stopped_by = "early_stop"
    except KeyboardInterrupt:  # during an evaluation or between epochs
        stopped_by = "interrupt"
        sync(run.device)
    if not curve or curve[-1]["steps"] != steps:
        curve.append(curve_point())
    return run_record_body(config, subset, run, clock, curve, stopped_by, epoch, steps, images_seen, eval_s, last_loss)


def subset_summary(subset: Subset) -> dict:
    """What a run record says of the subset it used: its manifest's hash, and what the manifest drew."""
    manifest = subset.manifest
    return {
        "manifest_sha256": manifest.get("content_sha256") or content_hash(manifest),
        "dataset": manifest["dataset"]["name"],
        "run": manifest["run"],
        "subset_seed": manifest["subset_seed"],
        "train_count": len(subset.train.labels),
        "validation_count": len(subset.validation.labels),
        "validation_from_test_split": manifest["validation_from_test_split"],
    }


def run_record_body(
    config: TrainConfig,
    subset: Subset,
    run: Setup,
    clock: BudgetClock,
    curve: list[dict],
    stopped_by: str | None,
    epochs: int,
    steps: int,
    images_seen: int,
    eval_s: float,
    last_loss: float | None,
) -> dict:
    """The run record's body (provenance is added when it is written)."""
    manifest, spec, budget = subset.manifest, config.model, config.budget
    best = max(curve, key=lambda point: point["val_acc"])
    config_dict = config.to_dict()
    return {
        "schema": "haet/run-record/v1",
        "status": "interrupted" if stopped_by == "interrupt" else "complete",
        "config": config_dict,
        "config_sha256": sha256_bytes(canonical_json(config_dict).encode()),
        "subset": subset_summary(subset),
        "seed": run.seed,
        "seeds": run.seeds,
        "model": {
            "name": spec.name,
            "depth": spec.depth,
            "width": spec.width,
            "resolution": spec.resolution,
            "input_px": run.input_px,
            "num_classes": run.num_classes,
            "macs": run.macs,
            "params": run.params,
        },
        "budget": {
            "mode": budget.mode,
            "clock": budget.clock,
            "seconds": budget.seconds,
            "max_epochs": budget.max_epochs,
            "stopped_by": stopped_by,
            "budget_elapsed_s": round(clock.now() - clock.started, 3),
        },
        "metrics": {
            "val_acc_final": curve[-1]["val_acc"],
            "val_acc_best_optimistic": best["val_acc"],
            "val_acc_best_epoch": best["epoch"],
            "train_loss_final": last_loss,
            "epochs": epochs,
            "steps": steps,
            "steps_per_epoch": len(run.pipeline),
            "images_seen": images_seen,
            "images_per_s": round(images_seen / clock.train_s, 2) if clock.train_s > 0 else 0.0,
            "train_s": round(clock.train_s, 3),
            "eval_s": round(eval_s, 3),
            "setup_s": round(run.setup_s, 3),
            "capture_s": round(run.step.capture_s, 3),
            "longest_step_s": round(clock.longest_step_s, 4),
            "curve": curve,
        },
        "runtime": {
            "device": str(run.device),
            "pipeline": run.pipeline.name,
            "precision": run.precision,
            "capture": run.step.mode,
        },
        "notes": [OPTIMISM_NOTE] + (manifest.get("notes") or []),
    }
