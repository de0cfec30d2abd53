"""Training: one model on one subset under one wall-clock budget -> one run record."""

from haet.records import read_run_record
from haet.train.config import Budget, ModelSpec, Recipe, RecipeError, Runtime, TrainConfig
from haet.train.loop import train
from haet.train.record import write_run_record

__all__ = [
    "Budget",
    "ModelSpec",
    "Recipe",
    "RecipeError",
    "Runtime",
    "TrainConfig",
    "read_run_record",
    "train",
    "write_run_record",
]
