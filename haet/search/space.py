"""Search spaces as NOMAD sees them, validated in Python first.

PyNomadBBO kills the interpreter (rather than raising) on invalid parameters, such as bounds or X0 that are not
multiples of the granularity, so every such check happens here, with a message that names the variable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from haet import HaetError


class SearchError(HaetError):
    """A search that cannot start, or that NOMAD could not finish."""


@dataclass(frozen=True)
class Variable:
    name: str
    kind: str  # "R" real or "I" integer, NOMAD's BB_INPUT_TYPE letters
    lower: float
    upper: float
    x0: float
    granularity: float = 0.0  # 0: continuous

    def check(self) -> None:
        if self.kind not in ("R", "I"):
            raise SearchError(f"variable {self.name}: type must be R (real) or I (integer), got {self.kind!r}")
        values = {"lower": self.lower, "upper": self.upper, "x0": self.x0, "granularity": self.granularity}
        for label, value in values.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise SearchError(f"variable {self.name}: {label} must be a finite number, got {value!r}")
        if not self.lower < self.upper:
            raise SearchError(f"variable {self.name}: lower bound {self.lower} must be below upper {self.upper}")
        if not self.lower <= self.x0 <= self.upper:
            raise SearchError(f"variable {self.name}: x0 {self.x0} lies outside [{self.lower}, {self.upper}]")
        if self.granularity < 0:
            raise SearchError(f"variable {self.name}: granularity must be >= 0, got {self.granularity}")
        if self.kind == "I":
            for label, value in (("lower", self.lower), ("upper", self.upper), ("x0", self.x0)):
                if value != int(value):
                    raise SearchError(f"variable {self.name}: integer variable's {label} {value} is not whole")
        elif self.granularity > 0:
            for label, value in (("lower", self.lower), ("upper", self.upper), ("x0", self.x0)):
                steps = value / self.granularity
                if abs(steps - round(steps)) > 1e-9 * max(1.0, abs(steps)):
                    raise SearchError(
                        f"variable {self.name}: {label} {value} is not a multiple of its granularity "
                        f"{self.granularity} (NOMAD would abort the process)"
                    )


MAX_SEED = 2**31 - 1


def nomad_parameters(
    variables: list[Variable],
    output_types: list[str],
    max_evaluations: int,
    seed: int,
    block_size: int,
    direction_type: str,
) -> list[str]:
    """NOMAD's parameter lines; full blocks need ORTHO 2N, no opportunism and no model or speculative searches."""
    for variable in variables:
        variable.check()
    if not isinstance(max_evaluations, int) or max_evaluations < 1:
        raise SearchError(f"max_evaluations must be a positive integer, got {max_evaluations!r}")
    if not isinstance(block_size, int) or block_size < 1:
        raise SearchError(f"block_size must be a positive integer, got {block_size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise SearchError(f"seed must be an integer in [0, {MAX_SEED}] (NOMAD's seed is a C int), got {seed!r}")
    types = " ".join(variable.kind for variable in variables)
    lines = [
        f"DIMENSION {len(variables)}",
        f"BB_INPUT_TYPE ( {types} )",
        f"BB_OUTPUT_TYPE {' '.join(output_types)}",
        f"MAX_BB_EVAL {max_evaluations}",
        f"SEED {seed}",
        f"DIRECTION_TYPE {direction_type}",
        "DISPLAY_DEGREE 0",
    ]
    if any(variable.granularity > 0 and variable.kind == "R" for variable in variables):
        lines.append(
            "GRANULARITY ( " + " ".join(repr(v.granularity if v.kind == "R" else 0.0) for v in variables) + " )"
        )
    if block_size > 1:
        lines += [
            f"BB_MAX_BLOCK_SIZE {block_size}",
            "EVAL_OPPORTUNISTIC false",
            "QUAD_MODEL_SEARCH false",
            "NM_SEARCH false",
            "SPECULATIVE_SEARCH false",
        ]
    return lines
