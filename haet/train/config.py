"""What one training run is: the model, the recipe, the budget and the runtime, each a small validated dataclass.

A YAML file with sections model / recipe / budget / runtime maps onto them one to one; unknown keys and
impossible values are refused before any training starts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from haet import HaetError, key_name
from haet.models import build, input_size, model_info


class RecipeError(HaetError):
    """A training configuration that cannot run."""


OPTIMIZERS = ("adadelta", "adagrad", "sgd", "adam", "adamw", "adamax", "asgd")
SCHEDULES = ("cosine_epochs", "cosine_time", "constant")
AUGMENTS = ("none", "basic", "cutout", "paper")  # cutout: basic + Cutout, without AutoAugment
# whose AutoAugment the paper recipe applies: torchvision's, or the authors' PIL one (haet.train.autoaugment)
AUTOAUGMENTS = ("torchvision", "authors")
NORMALIZATIONS = {
    # The authors' code (and the popular CIFAR repository it copied) used this std, which is not CIFAR-10's.
    "paper": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
BUDGET_MODES = ("step", "competition")
# wall: seconds on the wall clock (the challenge's); process: this process's CPU seconds (all its threads), which a
# loaded machine does not shorten: a CPU training's amount of work then does not depend on what else runs
BUDGET_CLOCKS = ("wall", "process")
PIPELINES = ("auto", "loader", "resident")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")  # auto: bf16 where the GPU has it, else fp32
CAPTURES = ("auto", "eager", "cuda-graph")  # the training step: haet/train/step.py


def _positive(name: str, value: object, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise RecipeError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")


def _integer(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise RecipeError(f"{name} must be an integer >= {minimum}, got {value!r}")


# torch's CPU threads and the loader's worker processes: far above any machine's cores, below what crashes (100,000
# threads segfaulted torch)
MAX_THREADS, MAX_WORKERS = 512, 256


def _at_most(name: str, value: int, maximum: int) -> None:
    if value > maximum:
        raise RecipeError(f"{name} must be at most {maximum}, got {value!r}")


def _fraction(name: str, value: object, upper_inclusive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or value > 1 or (value == 1 and not upper_inclusive):
        raise RecipeError(f"{name} must be a number in [0, 1{']' if upper_inclusive else ')'}, got {value!r}")


def _choice(name: str, value: object, choices: tuple[str, ...] | dict) -> None:
    if value not in choices:
        raise RecipeError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class ModelSpec:
    # unscaled by default, so that naming a model (--model X, screening's model: {}) trains it at full size; the
    # paper's final submission is SENet18 at width 0.67
    name: str = "ResNet18"
    depth: float = 1.0
    width: float = 1.0
    resolution: float = 1.0  # input side int(32 * resolution), resized on the fly

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise RecipeError(f"model name must be a model's name (see `haet models`), got {self.name!r}")
        for multiplier in ("depth", "width", "resolution"):
            _positive(f"model {multiplier}", getattr(self, multiplier))
        model_info(self.name)
        input_size(self.resolution)
        with torch.device("meta"):  # checks the multipliers (and zero-channel widths) without allocating
            build(self.name, 10, self.depth, self.width)


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "sgd"
    lr: float = 0.042
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-3
    batch_size: int = 512
    label_smoothing: float = 0.0
    schedule: str = "cosine_epochs"
    t_max_epochs: int = 240  # cosine_epochs: CosineAnnealingLR's T_max, stepped once per epoch; eta_min after it
    eta_min: float = 1e-8
    # cosine_epochs as the authors' final submission ran it: CosineAnnealingLR's periodic closed form (past T_max
    # the rate climbs again), stepped only up to this epoch and held from then on (their loop: 261, i.e. after
    # epoch 260). None: the rate is held at eta_min from t_max_epochs on, so long budgets do not cycle it.
    freeze_lr_at_epoch: int | None = None
    warmup_epochs: float = 0.0  # linear warm-up, per step
    augment: str = "paper"
    autoaugment: str = "torchvision"
    normalize: str = "paper"

    def __post_init__(self) -> None:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("augment recipe", self.augment, AUGMENTS)
        _choice("autoaugment convention", self.autoaugment, AUTOAUGMENTS)
        _choice("normalization", self.normalize, NORMALIZATIONS)
        _positive("lr", self.lr)
        _positive("momentum", self.momentum, allow_zero=True)
        _positive("weight_decay", self.weight_decay, allow_zero=True)
        _positive("eta_min", self.eta_min, allow_zero=True)
        _positive("warmup_epochs", self.warmup_epochs, allow_zero=True)
        _integer("batch_size", self.batch_size, 1)
        _integer("t_max_epochs", self.t_max_epochs, 1)
        if self.freeze_lr_at_epoch is not None:
            _integer("freeze_lr_at_epoch", self.freeze_lr_at_epoch, 0)
        _fraction("label_smoothing", self.label_smoothing, upper_inclusive=False)


@dataclass(frozen=True)
class Budget:
    seconds: float | None = 600.0  # wall-clock training seconds
    max_epochs: int | None = None  # an epoch-count budget instead of (or as well as) seconds
    mode: str = "step"  # step: checked every step, evaluation excluded; competition: the challenge's loop
    clock: str = "wall"  # what seconds count: BUDGET_CLOCKS
    eval_every_epochs: int = 1
    early_stop_epoch: int | None = None  # stop after this epoch if the best accuracy is still <= early_stop_acc
    early_stop_acc: float = 0.5

    def __post_init__(self) -> None:
        if self.seconds is None and self.max_epochs is None:
            raise RecipeError("the budget needs seconds, max_epochs, or both")
        if self.seconds is not None:
            _positive("budget seconds", self.seconds)
        if self.max_epochs is not None:
            _integer("budget max_epochs", self.max_epochs, 1)
        _choice("budget mode", self.mode, BUDGET_MODES)
        _choice("budget clock", self.clock, BUDGET_CLOCKS)
        _integer("eval_every_epochs", self.eval_every_epochs, 1)
        if self.early_stop_epoch is not None:
            _integer("early_stop_epoch", self.early_stop_epoch, 1)
        _fraction("budget early_stop_acc", self.early_stop_acc, upper_inclusive=True)


@dataclass(frozen=True)
class Runtime:
    device: str = "auto"  # auto: cuda when available, else cpu
    pipeline: str = "auto"  # auto: resident on CUDA for none/basic, loader otherwise
    workers: int = 2  # DataLoader workers of the loader pipeline
    seed: int | None = None  # None: the subset manifest's seed, so one seed drives the whole run
    eval_batch_size: int = 1000
    # fp32: full fp32 (TF32 off); tf32: fp32 with TF32 matmuls and convolutions (CUDA); bf16: bf16 autocast
    precision: str = "auto"
    # torch's CPU threads for the training loop; None: torch's default (every core). A workflow running several
    # trainings at once gives each its share, so they do not oversubscribe the cores between them.
    threads: int | None = None
    # eager, or cuda-graph (the step captured once and replayed: CUDA and SGD only); auto: eager for now
    capture: str = "auto"

    def __post_init__(self) -> None:
        _choice("pipeline", self.pipeline, PIPELINES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("capture", self.capture, CAPTURES)
        _integer("workers", self.workers, 0)
        _at_most("workers", self.workers, MAX_WORKERS)
        if self.threads is not None:
            _integer("threads", self.threads, 1)
            _at_most("threads", self.threads, MAX_THREADS)
        _integer("eval_batch_size", self.eval_batch_size, 1)
        if self.seed is not None:
            _integer("seed", self.seed, 0)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    recipe: Recipe = field(default_factory=Recipe)
    budget: Budget = field(default_factory=Budget)
    runtime: Runtime = field(default_factory=Runtime)

    @classmethod
    def from_dict(cls, config: dict) -> TrainConfig:
        """Build from nested sections, naming any unknown section or key."""
        sections = {}
        for section in dataclasses.fields(cls):
            if section.name in config and config[section.name] is None:  # `recipe:` with nothing under it
                raise RecipeError(f"config section {section.name!r} is empty (null): give its keys or leave it out")
            values = config.get(section.name) or {}
            if not isinstance(values, dict):
                raise RecipeError(f"config section {section.name!r} must be a mapping")
            section_type = section.default_factory
            known = {f.name for f in dataclasses.fields(section_type)}
            unknown = sorted(key_name(key) for key in set(values) - known)
            if unknown:
                takes = ", ".join(sorted(known))
                raise RecipeError(f"config key {section.name}.{unknown[0]} is not known; {section.name} takes {takes}")
            try:
                sections[section.name] = section_type(**values)
            except TypeError as exc:
                raise RecipeError(f"config section {section.name}: {exc}") from None
        other_sections = {"data", "subsets", "study", "search", "provenance"}  # read by other stages
        known_sections = {f.name for f in dataclasses.fields(cls)} | other_sections
        unknown_sections = sorted(key_name(key) for key in set(config) - known_sections)
        if unknown_sections:
            raise RecipeError(f"config section {unknown_sections[0]} is not known")
        return cls(**sections)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
