"""train(config, subset) -> run record: one model, one subset, one wall-clock budget.

Budget modes:
- step (default): the clock counts training only (data loading, forward, backward, optimiser step), is checked
  after every step, and stops within one step of the budget; evaluation is timed separately.
- competition: the HAET challenge's loop. The clock starts after data loading and model construction and is
  checked once per epoch, after training and a validation pass, so evaluation counts and the last epoch overruns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from haet.data.subsets import Subset
from haet.files import canonical_json, content_hash, sha256_bytes
from haet.models import build, input_size
from haet.models.cost import model_cost
from haet.train.config import RecipeError, TrainConfig
from haet.train.data import LoaderPipeline, ResidentPipeline, normalized, resize, to_device_images

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
    pipeline, augment = config.runtime.pipeline, config.recipe.augment
    if pipeline == "auto":
        return "resident" if device.type == "cuda" and augment != "paper" else "loader"
    if pipeline == "resident" and augment == "paper":
        raise RecipeError("the paper recipe's AutoAugment picks a sub-policy per image: use pipeline loader")
    return pipeline


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
        lr = recipe.eta_min + (recipe.lr - recipe.eta_min) * (1 + math.cos(math.pi * epoch / recipe.t_max_epochs)) / 2
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


def train(config: TrainConfig, subset: Subset, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train config's model on subset within config's budget; returns the run record's body."""
    setup_start = time.perf_counter()
    model_spec, recipe, budget, runtime = config.model, config.recipe, config.budget, config.runtime
    manifest = subset.manifest
    train_count = len(subset.train.labels)
    if recipe.batch_size > train_count:
        raise RecipeError(f"batch_size {recipe.batch_size} is larger than the {train_count} training images")
    device = resolve_device(runtime.device)
    pipeline_name = resolve_pipeline(config, device)
    input_px = input_size(model_spec.resolution)
    seed = manifest["subset_seed"] if runtime.seed is None else runtime.seed
    seeds = run_seeds(seed)
    on_cuda = device.type == "cuda"

    torch.manual_seed(seeds["init"])
    num_classes = len(subset.train.class_names)
    model = build(model_spec.name, num_classes, model_spec.depth, model_spec.width)
    cost = model_cost(model_spec.name, model_spec.depth, model_spec.width, input_px, num_classes)
    model = model.to(device, memory_format=torch.channels_last if on_cuda else torch.contiguous_format)
    optimizer = make_optimizer(config, model.parameters())
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    images, labels = subset.train.images, subset.train.labels
    if pipeline_name == "resident":
        pipeline = ResidentPipeline(
            images, labels, recipe.augment, recipe.normalize, recipe.batch_size, seeds["shuffle"], device, input_px
        )
    else:
        pipeline = LoaderPipeline(
            images,
            labels,
            recipe.augment,
            recipe.normalize,
            recipe.batch_size,
            runtime.workers,
            seeds["shuffle"],
            device,
            input_px,
        )
        torch.manual_seed(seeds["augment"])  # the workers' transforms draw from seeds derived from this
    val_images = resize(normalized(to_device_images(subset.validation.images, device), recipe.normalize), input_px)
    val_images = val_images.contiguous(memory_format=torch.channels_last) if on_cuda else val_images
    val_labels = torch.as_tensor(subset.validation.labels, device=device)
    steps_per_epoch = len(pipeline)
    setup_s = time.perf_counter() - setup_start

    train_s = eval_s = 0.0
    epoch = steps = images_seen = 0
    curve: list[dict] = []
    stopped_by = None
    last_loss = None  # the mean loss of the last epoch; None before any step, and once it stops being finite
    longest_step_s = 0.0
    budget_start = time.perf_counter()  # competition mode: after data loading and model construction

    def out_of_budget(extra_s: float = 0.0) -> bool:
        if budget.seconds is None:
            return False
        if budget.mode == "competition":
            return time.perf_counter() - budget_start >= budget.seconds
        return train_s + extra_s >= budget.seconds

    def validate() -> float:
        nonlocal eval_s
        sync(device)
        start = time.perf_counter()
        accuracy = evaluate(model, val_images, val_labels, runtime.eval_batch_size, on_cuda)
        eval_s += time.perf_counter() - start
        return accuracy

    def curve_point() -> dict:
        return {
            "epoch": epoch,
            "steps": steps,
            "train_s": round(train_s, 3),
            "train_loss": last_loss,
            "val_acc": validate(),
            "lr": optimizer.param_groups[0]["lr"],
        }

    model.train()
    try:
        while stopped_by is None:
            if budget.max_epochs is not None and epoch >= budget.max_epochs:
                stopped_by = "max_epochs"
                break
            if out_of_budget():
                stopped_by = "budget"
                break
            epoch_start = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            epoch_images = 0
            last_check = epoch_start
            for step_in_epoch, (inputs, targets) in enumerate(pipeline.epoch()):
                # cosine_time anneals towards whichever budget ends first: seconds or epochs
                time_progress = 0.0
                if budget.seconds is not None:
                    spent_s = (
                        time.perf_counter() - budget_start
                        if budget.mode == "competition"
                        else train_s + time.perf_counter() - epoch_start
                    )
                    time_progress = spent_s / budget.seconds
                if budget.max_epochs is not None:
                    epoch_progress = (epoch + step_in_epoch / steps_per_epoch) / budget.max_epochs
                    time_progress = max(time_progress, epoch_progress)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, epoch, step_in_epoch / steps_per_epoch, time_progress)
                # the whole training step
                if on_cuda:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda):
                    loss = loss_fn(model(inputs), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * len(targets)
                epoch_images += len(targets)
                steps += 1
                if budget.mode == "step" and budget.seconds is not None:
                    sync(device)  # the clock must see finished GPU work, or a run could overrun unseen
                    now = time.perf_counter()
                    longest_step_s, last_check = max(longest_step_s, now - last_check), now
                    if out_of_budget(now - epoch_start):
                        stopped_by = "budget"
                        break
            sync(device)
            train_s += time.perf_counter() - epoch_start
            images_seen += epoch_images
            full_epoch = stopped_by is None
            epoch += 1 if full_epoch else 0
            mean_loss = (loss_sum / max(epoch_images, 1)).item()
            last_loss = mean_loss if math.isfinite(mean_loss) else None
            if last_loss is None and epoch_images:
                stopped_by = "diverged"  # NaN or inf: more steps cannot bring it back
            evaluate_now = budget.mode == "competition" or (full_epoch and epoch % budget.eval_every_epochs == 0)
            if evaluate_now:
                point = curve_point()
                curve.append(point)
                if on_epoch is not None:
                    on_epoch(point | {"budget_s": budget.seconds, "max_epochs": budget.max_epochs})
            if (
                stopped_by is None
                and budget.early_stop_epoch is not None
                and epoch >= budget.early_stop_epoch
                and curve
                and max(p["val_acc"] for p in curve) <= budget.early_stop_acc
            ):
                stopped_by = "early_stop"
    except KeyboardInterrupt:
        stopped_by = "interrupt"
        sync(device)

    if not curve or curve[-1]["steps"] != steps:
        curve.append(curve_point())
    best = max(curve, key=lambda point: point["val_acc"])
    config_dict = config.to_dict()
    return {
        "schema": "haet/run-record/v1",
        "status": "interrupted" if stopped_by == "interrupt" else "complete",
        "config": config_dict,
        "config_sha256": sha256_bytes(canonical_json(config_dict).encode()),
        "subset": {
            "manifest_sha256": manifest.get("content_sha256") or content_hash(manifest),
            "dataset": manifest["dataset"]["name"],
            "run": manifest["run"],
            "subset_seed": manifest["subset_seed"],
            "train_count": train_count,
            "validation_count": len(subset.validation.labels),
            "validation_from_test_split": manifest["validation_from_test_split"],
        },
        "seed": seed,
        "seeds": seeds,
        "model": {
            "name": model_spec.name,
            "depth": model_spec.depth,
            "width": model_spec.width,
            "resolution": model_spec.resolution,
            "input_px": input_px,
            "num_classes": num_classes,
            "macs": cost.macs,
            "params": cost.params,
        },
        "budget": {
            "mode": budget.mode,
            "seconds": budget.seconds,
            "max_epochs": budget.max_epochs,
            "stopped_by": stopped_by,
            "budget_elapsed_s": round(time.perf_counter() - budget_start, 3),
        },
        "metrics": {
            "val_acc_final": curve[-1]["val_acc"],
            "val_acc_best_optimistic": best["val_acc"],
            "val_acc_best_epoch": best["epoch"],
            "train_loss_final": last_loss,
            "epochs": epoch,
            "steps": steps,
            "steps_per_epoch": steps_per_epoch,
            "images_seen": images_seen,
            "images_per_s": round(images_seen / train_s, 2) if train_s > 0 else 0.0,
            "train_s": round(train_s, 3),
            "eval_s": round(eval_s, 3),
            "setup_s": round(setup_s, 3),
            "longest_step_s": round(longest_step_s, 4),
            "curve": curve,
        },
        "runtime": {"device": str(device), "pipeline": pipeline_name, "precision": "bf16" if on_cuda else "fp32"},
        "notes": [OPTIMISM_NOTE] + (manifest.get("notes") or []),
    }
