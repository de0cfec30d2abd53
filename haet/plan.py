"""What a study will cost before it runs: trainings, GPU-hours and wall time per stage on G GPUs.

Every training of the study holds one GPU (or, on a CPU machine, one training slot: cores / runtime.threads) for
its budget plus an overhead (process start, set-up, evaluation, record). Searches are sequential rounds of blocks:
a round trains search.block_size points on each of the search's subsets at once, then NOMAD chooses the next;
their counts here are upper bounds (every evaluation trained; NOMAD answers some without training). With the
benchmark files of a run of the same study, the overhead is measured instead of assumed, and each stage's
prediction is set beside what its jobs took.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from haet import HaetError

DEFAULT_OVERHEAD_S = 10.0  # per training, when no benchmark files measure it (CPU: about 5 s; GPU: 10-30 s)
SINGLE_TRAINING_STAGES = ("screening", "augment", "hpo_runs", "final", "reference")
# A fidelity arm's images/s against the reference arm's where its runtime differs, as measured on one H200
# (README, Speed): fp32 trains at about half bf16's rate, the loader's PIL AutoAugment at about half the resident
# pipeline's. Rough: `haet plan --benchmarks` of a run replaces every estimate with what the arm's jobs took.
SPEED_FACTORS = {("precision", "fp32"): 0.5, ("pipeline", "loader"): 0.5}


@dataclass(frozen=True)
class Stage:
    name: str
    trainings: int  # upper bound for searches
    budget_s: float | None  # a training's budget (None: epochs, timed only by benchmark files)
    searches: int = 0  # searches run side by side (NAS: one per model); 0 for independent trainings
    rounds: int = 0  # rounds of blocks per search
    block_trainings: int = 0  # trainings a round runs at once (block_size x subsets)


def _get(config: dict, *keys: str):
    value = config
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise HaetError(f"the study config has no {'.'.join(keys[: depth + 1])}: is it a haet study config?")
        value = value[key]
    return value


def _budget_s(*layers: dict) -> float | None:
    budget: dict = {}
    for layer in layers:
        budget |= layer.get("budget", {}) or {}
    return budget.get("seconds", 600.0)  # haet train's default budget


def stages(config: dict) -> list[Stage]:
    """The study's training stages, in the order they run."""
    screening = _get(config, "screening", "train")
    augment = [screening, _get(config, "augment", "train")]
    hpo_layers = [*augment, _get(config, "hpo", "train")]
    final_layers = [*hpo_layers, _get(config, "final", "train")]
    runs, models, top_k = (
        _get(config, "subsets", "runs"),
        _get(config, "screening", "models"),
        _get(config, "nas", "top_k"),
    )
    searches = []
    for model in models:  # which k models screening puts on top is not known yet: the k longest searches
        search = _get(config, "nas", "search") | config["nas"].get("per_model", {}).get(model, {})
        searches.append((search["max_evaluations"], search.get("block_size", 1)))
    nas_searches = sorted(searches, key=lambda s: -math.ceil(s[0] / s[1]) * s[1])[:top_k]
    nas_subsets, hpo_subsets = _get(config, "nas", "subsets"), _get(config, "hpo", "subsets")
    nas_rounds = max(math.ceil(evaluations / block) for evaluations, block in nas_searches)
    nas_block = max(block for _, block in nas_searches) * nas_subsets
    hpo_search = _get(config, "hpo", "search")
    hpo_block = hpo_search.get("block_size", 1)
    hpo_runs, final_runs = _get(config, "hpo", "runs"), _get(config, "final", "subsets", "runs")
    # the paper's submission beside Tables 3 and 4: reference.runs per table, else as many as the tuned rows
    reference_runs = (config.get("reference") or {}).get("runs") or max(hpo_runs, final_runs)
    return [
        Stage("screening", len(models) * runs, _budget_s(screening)),
        Stage(
            "nas",
            sum(evaluations for evaluations, _ in nas_searches) * nas_subsets,
            _budget_s(screening),
            searches=len(nas_searches),
            rounds=nas_rounds,
            block_trainings=nas_block,
        ),
        Stage(
            "augment",
            top_k * len(_get(config, "augment", "recipes")) * _get(config, "augment", "runs"),
            _budget_s(*augment),
        ),
        Stage(
            "hpo",
            hpo_search["max_evaluations"] * hpo_subsets,
            _budget_s(*hpo_layers),
            searches=1,
            rounds=math.ceil(hpo_search["max_evaluations"] / hpo_block),
            block_trainings=hpo_block * hpo_subsets,
        ),
        Stage("hpo_runs", hpo_runs, _budget_s(*hpo_layers)),
        Stage("final", final_runs, _budget_s(*final_layers)),
        Stage("reference", min(hpo_runs, reference_runs) + min(final_runs, reference_runs), _budget_s(*final_layers)),
    ] + leaderboard_stages(config)


def leaderboard_stages(config: dict) -> list[Stage]:
    """The challenge's leaderboard: each entry's runs, each run its budget plus the grace (the kill comes then)."""
    board = config.get("leaderboard")
    if not board:
        return []
    trainings = len(_get(config, "leaderboard", "submissions")) * _get(config, "leaderboard", "runs")
    return [Stage("leaderboard", trainings, _get(config, "leaderboard", "budget_s") + board.get("grace_s", 5))]


def _layered(*layers: dict) -> dict:
    """Training configs merged section by section, later layers winning (as repeated --config layers)."""
    merged: dict = {}
    for layer in layers:
        for section, values in (layer or {}).items():
            merged[section] = merged.get(section, {}) | (values or {})
    return merged


def _trains_for_epochs(train: dict) -> bool:
    """Whether a layered training config has an epoch budget alone (haet train's default budget is 600 s)."""
    return train.get("budget", {}).get("seconds", 600.0) is None


def _fidelity_training_s(arm: dict, reference: dict, config: dict, images_per_s: float | None, overhead_s: float):
    """One training of an arm, estimated: its budget in seconds, or its epochs' images at the reference arm's
    images_per_s scaled by MACs and SPEED_FACTORS; and whether it trains for epochs (and so may share a GPU)."""
    budget = {"seconds": 600.0, "max_epochs": None} | arm.get("budget", {})  # haet train's default: 600 s
    if not _trains_for_epochs(arm):
        return budget["seconds"] + overhead_s, False
    if images_per_s is None:
        raise HaetError(
            "the fidelity arms train for epochs: give --images-per-s (the trainer's images/s for the reference arm "
            "on this GPU, from `haet bench`; one H200: 19,920 with the paper recipe) or --benchmarks of a run"
        )
    from haet.models import input_size
    from haet.models.cost import model_cost

    def macs(train: dict) -> int:
        model = {"name": "ResNet18", "depth": 1.0, "width": 1.0, "resolution": 1.0} | train.get("model", {})
        return model_cost(model["name"], model["depth"], model["width"], input_size(model["resolution"])).macs

    speed = images_per_s * macs(reference) / macs(arm)
    for (section, value), factor in SPEED_FACTORS.items():
        if arm.get("runtime", {}).get(section) == value != reference.get("runtime", {}).get(section):
            speed *= factor
    fidelity = config["fidelity"]
    spec = fidelity.get("subsets") or _get(config, "subsets")
    data = fidelity.get("data") or config.get("data") or {}
    images = spec["train_per_class"] * (data.get("options") or {}).get("num_classes", 10)
    return budget["max_epochs"] * images / speed + overhead_s, True


def fidelity_rows(
    config: dict, gpus: int, overhead_s: float, images_per_s: float | None, sharing_speedup: float, jobs: dict
) -> list[dict]:
    """A row an arm of the fidelity study: its runs, each training's seconds, GPU-hours and wall time on `gpus`
    GPUs. Epoch-budget arms share a GPU trainings_per_gpu at once: their compute at sharing_speedup times one
    training's rate, their overheads overlapped."""
    fidelity = _get(config, "fidelity")
    runs, sharing = fidelity["runs"], fidelity.get("trainings_per_gpu", 1)
    reference = _layered(fidelity["train"], fidelity["arms"][fidelity["reference"]].get("train", {}))
    rows = []
    for name, settings in fidelity["arms"].items():
        arm = _layered(fidelity["train"], settings.get("train", {}))
        measured = jobs.get(f"fidelity {name}")
        if measured:  # what its jobs took; it shares a GPU when it trains for epochs
            training_s, epochs = statistics.median(measured), _trains_for_epochs(arm)
        else:
            training_s, epochs = _fidelity_training_s(arm, reference, config, images_per_s, overhead_s)
        if epochs and sharing > 1:
            compute_s = max(training_s - overhead_s, 0.0)
            wall_s = runs * (compute_s / sharing_speedup + overhead_s / sharing) / gpus
        else:
            wall_s = math.ceil(runs / gpus) * training_s
        rows.append(
            {
                "stage": f"fidelity {name}",
                "trainings": runs,
                "upper_bound": False,
                "training_s": training_s,
                "gpu_hours": runs * training_s / 3600,
                "wall_s": wall_s,
                "predicted_job_s": runs * training_s,
                "measured_job_s": sum(measured) if measured else None,
                "measured_jobs": len(measured or []),
            }
        )
    return rows


def stage_wall_s(stage: Stage, gpus: int, training_s: float) -> float:
    """Wall time of a stage on `gpus` GPUs (or training slots), each training `training_s` long."""
    if not stage.searches:
        return math.ceil(stage.trainings / gpus) * training_s
    per_search = min(stage.block_trainings, gpus)  # a search with fewer GPUs than its block runs it in rounds
    side_by_side = max(1, gpus // per_search)
    waves = math.ceil(stage.searches / side_by_side)
    return waves * stage.rounds * math.ceil(stage.block_trainings / per_search) * training_s


def measured_jobs(benchmarks: Path) -> dict[str, list[float]]:
    """Seconds of every job of a run, by stage, from Snakemake's benchmark files (RESULTS/benchmarks)."""
    if not benchmarks.is_dir():
        raise HaetError(f"{benchmarks}: no benchmark folder (Snakemake writes results/<study>/benchmarks)")
    folders = {"screening": "screening", "nas": "nas", "augment": "augment", "final": "final", "reference": "reference",
               "leaderboard": "leaderboard"}  # fmt: skip
    jobs: dict[str, list[float]] = {}
    for path in sorted(benchmarks.rglob("*.tsv")):
        relative = path.relative_to(benchmarks)
        folder, stem = relative.parts[0], path.stem
        if folder == "hpo":
            stage = "hpo" if stem == "search" else "hpo_runs"
        elif folder in ("final", "fidelity", "leaderboard") and stem.startswith("subset"):
            continue
        elif folder == "fidelity":  # ARM-runK.tsv
            stage = f"fidelity {stem.rsplit('-run', 1)[0]}"
        else:
            stage = folders.get(folder)
        if stage is None or stem == "rank":
            continue
        with path.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows or "s" not in rows[-1]:
            raise HaetError(f"{path}: not a Snakemake benchmark file (no column s)")
        jobs.setdefault(stage, []).append(float(rows[-1]["s"]))  # the last repeat: the run the results are of
    return jobs


def overhead_from(jobs: dict[str, list[float]], study_stages: list[Stage]) -> float:
    """Median seconds a single training took beyond its budget, over the measured single-training jobs."""
    budgets = {stage.name: stage.budget_s for stage in study_stages}
    extra = [
        seconds - budgets[name]
        for name in SINGLE_TRAINING_STAGES
        if budgets.get(name) is not None
        for seconds in jobs.get(name, [])
    ]
    if not extra:
        raise HaetError("the benchmark files hold no single-training job with a budget in seconds to measure from")
    return statistics.median(extra)


def plan(
    config: dict,
    gpus: int,
    overhead_s: float | None = None,
    benchmarks: Path | None = None,
    target: str | None = None,
    images_per_s: float | None = None,
    sharing_speedup: float = 1.0,
) -> dict:
    """Per stage and in total: trainings, GPU-hours and wall time on `gpus` GPUs; with benchmark files, the
    measured overhead and each stage's measured job-seconds beside the prediction. target fidelity: the fidelity
    study's arms alone (Snakemake's `fidelity` target); study: the paper's stages alone; None: whatever the config
    has."""
    if not isinstance(gpus, int) or gpus < 1:
        raise HaetError(f"--gpus must be a positive number of GPUs (or training slots), got {gpus!r}")
    if sharing_speedup <= 0 or (images_per_s is not None and images_per_s <= 0):
        raise HaetError("--images-per-s and --sharing-speedup must be positive")
    with_study = target == "study" or (target is None and ("screening" in config or "fidelity" not in config))
    with_fidelity = target == "fidelity" or (target is None and "fidelity" in config)
    study_stages = stages(config) if with_study else []
    jobs = measured_jobs(benchmarks) if benchmarks is not None else {}
    measured = any(name in jobs for name in SINGLE_TRAINING_STAGES)  # single trainings time the overhead
    if overhead_s is None:
        overhead_s = overhead_from(jobs, study_stages) if measured else DEFAULT_OVERHEAD_S
    rows = []
    for stage in study_stages:
        if stage.budget_s is not None:
            training_s = stage.budget_s + overhead_s
        else:  # an epoch budget: as long as the run's single trainings of this stage took, else of any stage
            measured = jobs.get(stage.name) if not stage.searches else None
            measured = measured or [s for name in SINGLE_TRAINING_STAGES for s in jobs.get(name, [])]
            if not measured:
                raise HaetError(f"{stage.name} trains for epochs, not seconds: give --benchmarks of a run to time it")
            training_s = statistics.median(measured)
        # what its jobs hold their GPUs for: each training, or each search for its rounds (it holds a block's GPUs)
        job_s = stage.searches * stage.rounds * training_s if stage.searches else stage.trainings * training_s
        row = {
            "stage": stage.name,
            "trainings": stage.trainings,
            "upper_bound": bool(stage.searches),
            "training_s": training_s,
            "gpu_hours": stage.trainings * training_s / 3600,
            "wall_s": stage_wall_s(stage, gpus, training_s),
            "predicted_job_s": job_s,
            "measured_job_s": sum(jobs[stage.name]) if stage.name in jobs else None,
            "measured_jobs": len(jobs.get(stage.name, [])),
        }
        rows.append(row)
    if with_fidelity:
        rows += fidelity_rows(config, gpus, overhead_s, images_per_s, sharing_speedup, jobs)
    total = {
        "trainings": sum(row["trainings"] for row in rows),
        "gpu_hours": sum(row["gpu_hours"] for row in rows),
        "wall_s": sum(row["wall_s"] for row in rows),
    }
    return {"gpus": gpus, "overhead_s": overhead_s, "overhead_measured": measured, "stages": rows, "total": total}
