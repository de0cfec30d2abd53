"""Analytic blackboxes for search tests (no training), usable in-process or as a script to kill mid-way.

python tests/analytic_search.py OUT_DIR MAX_EVALUATIONS [DELAY_S]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from haet.search import SearchSettings, Variable, run_search


class ConstrainedQuadratic:
    """min (x - 1.3)^2 + (n - 2)^2  s.t.  x >= 1.6 (so the optimum is x = 1.6, n = 2), x real, n integer."""

    kind = "analytic"
    output_types = ["OBJ", "EB"]

    def __init__(self, calls_file: Path | None = None, delay_s: float = 0.0, constraint: str = "EB"):
        self.variables = [Variable("x", "R", 0.0, 5.0, 4.0, 0.01), Variable("n", "I", -5, 5, -4)]
        self.output_types = ["OBJ", constraint]
        self.calls_file, self.delay_s, self.blocks = calls_file, delay_s, []

    def fingerprint(self) -> dict:
        return {"name": "constrained-quadratic", "constraint": self.output_types[1]}

    def evaluate(self, points, first_index, history):
        self.blocks.append(len(points))
        results = []
        for x, n in points:
            time.sleep(self.delay_s)
            if self.calls_file is not None:
                with open(self.calls_file, "a") as handle:
                    handle.write(json.dumps([x, n]) + "\n")
            objective, shortfall = (x - 1.3) ** 2 + (n - 2) ** 2, 1.6 - x
            results.append(
                {
                    "ok": True,
                    "outputs": [objective, shortfall],
                    "status": "trained",
                    "objective": objective,
                    "feasible": shortfall <= 0,
                }
            )
        return results

    def columns(self):
        return ["objective", "feasible"]

    def replay_problem(self, entry):
        return None  # an analytic function: nothing outside the log to check an entry against

    def best(self, history):
        feasible = [entry for entry in history if entry["status"] == "trained" and entry["feasible"]]
        return min(feasible, key=lambda entry: entry["objective"]) if feasible else None


if __name__ == "__main__":
    out_dir, max_evaluations = Path(sys.argv[1]), int(sys.argv[2])
    delay_s = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    problem = ConstrainedQuadratic(out_dir.parent / f"{out_dir.name}-calls.jsonl", delay_s)
    result = run_search(problem, SearchSettings(max_evaluations=max_evaluations, seed=3), out_dir)
    print(result.status, len(result.evaluations), result.replayed)
    sys.exit(130 if result.status == "interrupted" else 0)
