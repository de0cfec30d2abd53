"""Depth and width multipliers, MobileNet-style, applied the way the paper's code applied them.

Width: every layer's channel count c becomes round(c * width) (Python's round, as the authors' code), rounded
to a multiple of the group count where grouped convolutions need it. Depth: a stage of n blocks gets
max(1, round(n * depth)) blocks.
"""

from __future__ import annotations

import math

from haet import HaetError


class ModelError(HaetError):
    """An unknown model or multipliers it cannot be built with."""


# The largest multiplier: the paper's searches went up to depth 4, width 2.5 and resolution 10; past 16 a model
# builds for minutes and trains nothing in any budget (depth 10000 hung its build, width 1000 ran out of memory).
MAX_MULTIPLIER = 16.0


def check_multiplier(name: str, value: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ModelError(f"{name} multiplier must be a positive number, got {value!r}")
    if value > MAX_MULTIPLIER:
        raise ModelError(f"{name} multiplier must be at most {MAX_MULTIPLIER:g}, got {value!r}")
    return float(value)


def channels(base: int, width: float, divisor: int = 1) -> int:
    """round(base * width), as a multiple of divisor when divisor > 1; refuses zero channels."""
    count = round(base * width)
    if divisor > 1:
        count = max(divisor, round(count / divisor) * divisor)
    if count < 1:
        raise ModelError(
            f"width {width} leaves a layer of {base} channels with {count}: this model needs a width above "
            f"{0.5 / base:.4g} (every layer needs at least one channel)"
        )
    return count


def blocks(base: int, depth: float) -> int:
    """Blocks in a stage of base blocks at depth multiplier depth: at least one."""
    return max(1, round(base * depth))
