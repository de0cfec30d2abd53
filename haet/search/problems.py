"""The paper's two formulations as problems the search driver can evaluate.

NAS (Formulation 1): minimise MACs g(phi) over phi = (depth, width, resolution) subject to validation accuracy
f(phi) >= the baseline accuracy; NOMAD sees [MACs, baseline - accuracy] with the constraint as EB or PB. The
multipliers scale the base training's model, so phi = (1, 1, 1) is the screened model itself.
HPO (Formulation 2): maximise validation accuracy over batch size, weight decay, log10 learning rate and
optimiser, encoded as NOMAD integers and a real as the authors' code did; NOMAD minimises -accuracy.

Every trained point runs `haet train` once per subset manifest, in its own process and session (a crash or a
Ctrl-C there cannot take the search down), and the point's accuracy is the mean over those subsets.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from haet import HaetError
from haet.files import sha256_file, write_atomic
from haet.models import ModelError, input_size
from haet.models.cost import model_cost
from haet.records import SEARCH_METRICS, read_run_record
from haet.search.driver import check_seconds
from haet.search.gpus import SHARED_BY_VARIABLE, gpu_slots
from haet.search.space import SearchError, Variable
from haet.train import ModelSpec, TrainConfig

PR_SET_PDEATHSIG = 1  # linux/prctl.h

# Paper's NAS bounds (the authors' ResNet-18 code) with resolution from 0.25: their 0.03 gives 0-pixel inputs.
# The granularity 0.005 is the harness's own choice (the authors' variables were continuous): NOMAD then proposes
# multipliers with three decimals, which keeps the logged points and model names readable. Override it per
# variable (search.variables.NAME.granularity, 0 for continuous) to run the authors' continuous search.
NAS_VARIABLES = [
    Variable("depth", "R", 0.25, 2.5, 1.0, 0.005),
    Variable("width", "R", 0.015, 2.5, 1.0, 0.005),
    Variable("resolution", "R", 0.25, 2.5, 1.0, 0.005),
]
BATCH_SIZES = {1: 128, 2: 256, 3: 512}
WEIGHT_DECAYS = {1: 0.0, 2: 5e-5, 3: 5e-4, 4: 5e-3, 5: 5e-2, 6: 0.5}
# optimiser index -> (name, learning-rate multiplier): the paper scaled 10**x3 by each optimiser's usual range.
# code: the multipliers of the authors' HPO code. paper_text: the paper's list of rates (Adadelta 1, Adagrad 0.01,
# SGD 0.1, Adam 0.01, AdamW 0.01, Adamax 0.002) relative to SGD's, which gives Adam and AdamW 1/10, not 1/100.
OPTIMIZERS = {
    1: ("adadelta", 10.0),
    2: ("adagrad", 0.1),
    3: ("sgd", 1.0),
    4: ("adam", 0.01),
    5: ("adamw", 0.01),
    6: ("adamax", 0.02),
    7: ("asgd", 0.1),
}
LR_SCALINGS = {
    "code": OPTIMIZERS,
    "paper_text": OPTIMIZERS | {4: ("adam", 0.1), 5: ("adamw", 0.1)},
}
HPO_VARIABLES = [
    Variable("batch_size_index", "I", 1, 3, 2),
    Variable("weight_decay_index", "I", 1, 6, 3),
    Variable("log10_lr", "R", -3.0, -0.22, -1.0),
    Variable("optimizer_index", "I", 1, 7, 3),
]
# What a point's accuracy is, per subset: the last evaluation (the harness's default, honest) or the best epoch
# (what the authors' searches scored, "Best valid acc": chosen on the validation images, so optimistic).
NOT_TRAINED_CONSTRAINT = 1.0  # what an answered-without-training NAS point reports: a full accuracy shortfall


def with_overrides(defaults: list[Variable], overrides: dict | None) -> list[Variable]:
    """The default variables with {name: {lower, upper, x0, granularity}} changes applied."""
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise SearchError(f"search.variables must map variable names to settings, got {overrides!r}")
    unknown = sorted(set(overrides) - {variable.name for variable in defaults})
    if unknown:
        raise SearchError(f"unknown search variable {unknown[0]!r}; variables: {', '.join(v.name for v in defaults)}")
    fields = {"lower", "upper", "x0", "granularity"}
    variables = []
    for variable in defaults:
        change = overrides.get(variable.name) or {}
        if not isinstance(change, dict):
            raise SearchError(
                f"search.variables.{variable.name} takes a mapping of {', '.join(sorted(fields))}, got {change!r}"
            )
        if set(change) - fields:
            raise SearchError(
                f"variable {variable.name} takes {', '.join(sorted(fields))}, not {sorted(set(change) - fields)}"
            )
        variables.append(dataclasses.replace(variable, **change))
    for variable in variables:
        variable.check()
    return variables


def check_metric(metric: object) -> str:
    if metric not in SEARCH_METRICS:
        raise SearchError(f"search.metric must be one of {', '.join(SEARCH_METRICS)}, got {metric!r}")
    return metric


def baseline_accuracy(paths: list[str], base: ModelSpec, metric: str = "final") -> float:
    """Mean accuracy (the search's metric) of the base model's screening records, each read back against its hash."""
    key = SEARCH_METRICS[check_metric(metric)]
    wanted = (base.name, base.depth, base.width, base.resolution)
    accuracies = []
    for path in paths:
        record = read_run_record(path)
        model = record["model"]
        if (model["name"], model["depth"], model["width"], model["resolution"]) != wanted:
            raise SearchError(
                f"{path}: a baseline record must be of the search's base model {base.name} at depth {base.depth}, "
                f"width {base.width}, resolution {base.resolution}, not {model['name']} at depth "
                f"{model['depth']}, width {model['width']}, resolution {model['resolution']}"
            )
        accuracies.append(record["metrics"][key])
    return statistics.fmean(accuracies)


def training_command(manifest: Path, config: Path, out: Path) -> list[str]:
    """The command one training of a search runs: the same `haet train` a user would type."""
    return [
        sys.executable,
        "-m",
        "haet",
        "train",
        "--quiet",
        "--manifest",
        str(manifest),
        "--config",
        str(config),
        "--out",
        str(out),
    ]


def _die_with_parent() -> None:
    """In the training's process before exec: ask Linux to SIGKILL it when the search that started it dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# A failed evaluation's reason starts so when the cause lay outside its point (a full or read-only disk, memory, a
# kill): a resume trains it again. A point that fails on its own merits (unbuildable, a recipe that cannot run)
# stays failed.
TRANSIENT = "outside the point, so a resume trains it again: "
MACHINE_FAULTS = ("No space left on device", "Read-only file system", "Disk quota exceeded", "cannot write",
                  "out of memory", "MemoryError", "Cannot allocate memory")  # fmt: skip


def _outside_the_point(returncode: int, log: Path) -> bool:
    """Whether a training failed for its machine rather than its point: killed (the OOM killer's SIGKILL, a
    SIGTERM or SIGINT; a crash such as SIGSEGV counts as the point's), or its output names a disk or memory fault."""
    if -returncode in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a kill, not a crash
        return True
    try:
        output = log.read_text(errors="replace")[-20_000:]
    except OSError:
        return True  # the log itself could not be read back: the disk, not the point
    return any(fault in output for fault in MACHINE_FAULTS)


class TrainingProblem:
    """What NAS and HPO share: train a config on every subset, in parallel processes, and read the records."""

    kind = "training"

    def __init__(
        self,
        base: TrainConfig,
        manifests: list[str | Path],
        out_dir: str | Path,
        eval_timeout_s: float | None,
        metric: str = "final",
        slots: int = 1,
        gpus: list[str] | None = None,
        share_gpus: bool = False,
    ):
        self.metric = check_metric(metric)
        # (GPU, trainings on it) per training run at once; empty on the CPU, where a block's trainings all run
        self.gpu_slots = gpu_slots(gpus or [], slots, share_gpus)
        self.slots = len(self.gpu_slots) or slots
        if not manifests:
            raise SearchError("a search needs at least one subset manifest (k subsets give each point k trainings)")
        if eval_timeout_s is not None:
            check_seconds("search.eval_timeout_s", eval_timeout_s)
        self.base = base
        self.manifests = [Path(m) for m in manifests]
        missing = [str(m) for m in self.manifests if not m.is_file()]
        if missing:
            raise SearchError(f"subset manifest {missing[0]} does not exist: make it with `haet data subset`")
        self.manifest_hashes = [sha256_file(m) for m in self.manifests]
        self.runs_dir = Path(out_dir) / "runs"
        budget = base.budget.seconds or 600.0
        self.eval_timeout_s = eval_timeout_s or 3 * budget + 300

    def fingerprint(self) -> dict:
        return {
            "kind": self.kind,
            "base": self.base.to_dict(),
            "manifests": self.manifest_hashes,
            "metric": self.metric,
        }

    def train_all(self, configs: list[TrainConfig], first_index: int, slots: int) -> list[list[tuple] | str]:
        """Train each config on every manifest, at most `slots` processes at once: (path, record) pairs or an error."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        jobs = []
        for offset, config in enumerate(configs):
            stem = self.runs_dir / f"eval-{first_index + offset:04d}"
            (stem.with_suffix(".yaml")).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
            for subset, manifest in enumerate(self.manifests):
                out = Path(f"{stem}-subset-{subset}.json")
                out.unlink(missing_ok=True)  # not in the log, so any file here is from an attempt that died
                command = training_command(manifest, stem.with_suffix(".yaml"), out)
                jobs.append((offset, out, command, Path(f"{stem}-subset-{subset}.log")))
        outcomes: dict[int, list] = {offset: [] for offset in range(len(configs))}
        running: list[tuple] = []
        pending = list(jobs)
        try:
            self._run_jobs(pending, running, outcomes, slots)
        finally:  # an exception or Ctrl-C here must not leave trainings behind to write into the next attempt
            for process, *_ in running:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        results: list[list[dict] | str] = []
        for offset in range(len(configs)):
            errors = [item for item in outcomes[offset] if isinstance(item, str)]
            results.append(errors[0] if errors else outcomes[offset])
        return results

    def _run_jobs(self, pending: list[tuple], running: list[tuple], outcomes: dict[int, list], slots: int) -> None:
        free_slots = list(range(slots))
        while pending or running:
            while pending and free_slots:
                offset, out, command, log = pending.pop(0)
                slot = free_slots.pop(0)
                environment = None
                if self.gpu_slots:  # this slot's GPU alone, seen as cuda:0
                    gpu, shared_by = self.gpu_slots[slot]
                    environment = os.environ | {"CUDA_VISIBLE_DEVICES": gpu, SHARED_BY_VARIABLE: str(shared_by)}
                with open(log, "w") as log_handle:
                    # its own session: a Ctrl-C at the terminal lets the evaluation under way finish; and it dies
                    # with the search (parent-death signal), even when the search is killed with SIGKILL
                    process = subprocess.Popen(
                        command,
                        stdout=log_handle,
                        stderr=subprocess.STDOUT,
                        env=environment,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    )
                running.append((process, time.monotonic(), offset, out, log, slot))
            time.sleep(0.05)
            for item in list(running):
                process, started, offset, out, log, slot = item
                if process.poll() is None and time.monotonic() - started < self.eval_timeout_s:
                    continue
                if process.poll() is None:
                    process.kill()
                    process.wait()
                    outcomes[offset].append(f"training timed out after {self.eval_timeout_s:g} s ({log})")
                elif process.returncode != 0 or not out.exists():
                    failure = f"training failed with exit code {process.returncode} ({log})"
                    outcomes[offset].append(
                        TRANSIENT + failure if _outside_the_point(process.returncode, log) else failure
                    )
                else:
                    try:
                        outcomes[offset].append((str(out), read_run_record(out)))
                    except HaetError as exc:
                        outcomes[offset].append(f"{TRANSIENT}unreadable run record: {exc}")
                running.remove(item)
                free_slots.append(slot)

    def write_choice(self, result, out_dir: str | Path) -> dict:
        """best.yaml (the chosen training config) and tuned.yaml (only what the search chose), with provenance."""
        provenance = {
            "search_kind": self.kind,
            "metric": self.metric,
            "subsets": len(self.manifests),
            "summary_sha256": sha256_file(result.summary_path),
            "evaluations": len(result.evaluations),
        }
        best = result.best
        if best is not None:
            chosen = self.best_config(best)
            provenance |= {
                "best_index": best["index"],
                "best_point": best["point"],
                "accuracy": best["accuracy"],
                "accuracies": best["accuracies"],
                "records": best["records"],
                "macs": best.get("macs"),
            }
        else:
            chosen, provenance["fallback"] = self.fallback(Path(out_dir))
        provenance |= self.extra_provenance()
        out_dir = Path(out_dir)
        write_atomic(
            out_dir / "best.yaml", yaml.safe_dump(chosen.to_dict() | {"provenance": provenance}, sort_keys=False)
        )
        tuned = self.tuned_sections(chosen.to_dict()) | {"provenance": provenance}
        write_atomic(out_dir / "tuned.yaml", yaml.safe_dump(tuned, sort_keys=False))
        return provenance

    def replay_problem(self, entry: dict) -> str | None:
        """Why a logged evaluation may not be replayed on resume (None: it may): a trained one whose run records do
        not read back as the ones it cites, or whose accuracy or outputs to NOMAD are not its records'."""
        if entry.get("status") == "failed" and str(entry.get("reason", "")).startswith(TRANSIENT):
            return f"it failed for a cause outside its point ({entry['reason'].removeprefix(TRANSIENT)})"
        if entry.get("status") != "trained":
            return None
        try:
            records = [(source["path"], read_run_record(source["path"])) for source in entry["records"]]
            cited = [source["content_sha256"] for source in entry["records"]]
        except (HaetError, KeyError, TypeError) as exc:
            return f"its run records do not read back ({exc})"
        if [record["content_sha256"] for _, record in records] != cited:
            return "its run records are not the ones it cites"
        measured = self.trained_fields(records)
        if entry.get("accuracy") != measured["accuracy"] or entry.get("accuracies") != measured["accuracies"]:
            return f"its accuracy {entry.get('accuracy')!r} is not its run records' ({measured['accuracy']!r})"
        if entry.get("outputs") != self.outputs_of(entry):
            return f"its outputs to NOMAD {entry.get('outputs')!r} are not its accuracy's"
        return None

    def outputs_of(self, entry: dict) -> list[float]:
        """What a trained evaluation reports to NOMAD, from its logged fields."""
        raise NotImplementedError

    def trained_fields(self, records: list[tuple[str, dict]]) -> dict:
        """A trained point: the mean of the search's metric over its subsets, and the records behind it."""
        accuracies = [record["metrics"][SEARCH_METRICS[self.metric]] for _, record in records]
        return {
            "accuracy": statistics.fmean(accuracies),
            "accuracies": accuracies,
            "records": [{"path": path, "content_sha256": record["content_sha256"]} for path, record in records],
        }


class NasProblem(TrainingProblem):
    kind = "nas"

    def __init__(
        self,
        base: TrainConfig,
        manifests: list[str | Path],
        out_dir: str | Path,
        baseline_acc: float,
        constraint: str = "EB",
        variables: dict | None = None,
        slots: int = 1,
        eval_timeout_s: float | None = None,
        metric: str = "final",
        gpus: list[str] | None = None,
        share_gpus: bool = False,
    ):
        super().__init__(base, manifests, out_dir, eval_timeout_s, metric, slots, gpus, share_gpus)
        if constraint not in ("EB", "PB"):
            raise SearchError(
                f"the accuracy constraint is EB (extreme barrier) or PB (progressive), not {constraint!r}"
            )
        numeric = isinstance(baseline_acc, int | float) and not isinstance(baseline_acc, bool)
        if not numeric or not 0 < baseline_acc <= 1:
            raise SearchError(f"search.baseline_acc must be an accuracy in (0, 1], got {baseline_acc!r}")
        self.baseline_acc, self.constraint = baseline_acc, constraint
        self.variables = with_overrides(NAS_VARIABLES, variables)
        self.output_types = ["OBJ", constraint]

    def fingerprint(self) -> dict:
        return super().fingerprint() | {
            "baseline_acc": self.baseline_acc,
            "constraint": self.constraint,
            "variables": [dataclasses.asdict(v) for v in self.variables],
        }

    def columns(self) -> list[str]:
        return ["input_px", "macs", "params", "accuracy", "feasible"]

    def config_at(self, point: list[float]) -> TrainConfig:
        """The base training with its model scaled by the point (multipliers relative to the base model)."""
        depth, width, resolution = point
        base = self.base.model
        model = ModelSpec(
            base.name, depth=base.depth * depth, width=base.width * width, resolution=base.resolution * resolution
        )
        return dataclasses.replace(self.base, model=model)

    def evaluate(self, points: list[list[float]], first_index: int, history: list[dict]) -> list[dict]:
        feasible = [entry["macs"] for entry in history if entry["status"] == "trained" and entry["feasible"]]
        best_feasible = min(feasible) if feasible else None
        results: list[dict | None] = [None] * len(points)
        to_train: list[tuple[int, TrainConfig, dict]] = []
        for position, point in enumerate(points):
            try:
                config = self.config_at(point)
                pixels = input_size(config.model.resolution)
                cost = model_cost(config.model.name, config.model.depth, config.model.width, pixels)
            except (ModelError, HaetError) as exc:
                results[position] = {
                    "ok": False,
                    "outputs": None,
                    "status": "failed",
                    "reason": f"not buildable: {exc}",
                }
                continue
            fields = {"input_px": pixels, "macs": cost.macs, "params": cost.params}
            if best_feasible is not None and cost.macs >= best_feasible:
                results[position] = fields | {
                    "ok": True,
                    "outputs": [cost.macs, NOT_TRAINED_CONSTRAINT],
                    "status": "answered",
                    "accuracy": None,
                    "feasible": None,
                    "reason": f"MACs {cost.macs:,} >= best feasible {best_feasible:,}: cannot improve the objective, "
                    f"answered without training as infeasible",
                }
            else:
                to_train.append((position, config, fields))
        trained = self.train_all([config for _, config, _ in to_train], first_index, self.slots)
        for (position, _, fields), outcome in zip(to_train, trained, strict=True):
            if isinstance(outcome, str):
                results[position] = fields | {"ok": False, "outputs": None, "status": "failed", "reason": outcome}
                continue
            measured = fields | self.trained_fields(outcome)
            outputs = self.outputs_of(measured)
            trained = {"ok": True, "outputs": outputs, "status": "trained", "feasible": outputs[1] <= 0}
            results[position] = measured | trained
        return results

    def outputs_of(self, entry: dict) -> list[float]:
        return [entry["macs"], self.baseline_acc - entry["accuracy"]]  # the objective, and the accuracy shortfall

    def replay_problem(self, entry: dict) -> str | None:
        reason = super().replay_problem(entry)
        if reason is None and entry.get("status") == "trained" and entry.get("feasible") != (entry["outputs"][1] <= 0):
            return f"it is logged {'feasible' if entry.get('feasible') else 'infeasible'} against its accuracy"
        return reason

    def baseline_macs(self) -> int:
        model = self.base.model
        return model_cost(model.name, model.depth, model.width, input_size(model.resolution)).macs

    def best(self, history: list[dict]) -> dict | None:
        """The smallest feasible point, if it is smaller than the baseline: the baseline itself meets its own
        accuracy by definition, so a feasible point at or above its MACs (met by noise) shrinks nothing."""
        baseline_macs = self.baseline_macs()
        feasible = [
            entry
            for entry in history
            if entry["status"] == "trained" and entry["feasible"] and entry["macs"] < baseline_macs
        ]
        return min(feasible, key=lambda entry: (entry["macs"], -entry["accuracy"])) if feasible else None

    def best_config(self, entry: dict) -> TrainConfig:
        return self.config_at(entry["point"])

    def fallback(self, out_dir: Path) -> tuple[TrainConfig, str]:
        return self.base, "no feasible point smaller than the baseline: the screened model is kept"

    def extra_provenance(self) -> dict:
        return {"baseline_acc": self.baseline_acc}

    @staticmethod
    def tuned_sections(config: dict) -> dict:
        return {"model": config["model"]}


class HpoProblem(TrainingProblem):
    kind = "hpo"
    output_types = ["OBJ"]

    def __init__(
        self,
        base: TrainConfig,
        manifests: list[str | Path],
        out_dir: str | Path,
        variables: dict | None = None,
        slots: int = 1,
        eval_timeout_s: float | None = None,
        metric: str = "final",
        lr_scaling: str = "code",
        gpus: list[str] | None = None,
        share_gpus: bool = False,
    ):
        super().__init__(base, manifests, out_dir, eval_timeout_s, metric, slots, gpus, share_gpus)
        if lr_scaling not in LR_SCALINGS:
            raise SearchError(f"search.lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {lr_scaling!r}")
        self.variables = with_overrides(HPO_VARIABLES, variables)
        self.lr_scaling = lr_scaling

    def fingerprint(self) -> dict:
        return super().fingerprint() | {
            "variables": [dataclasses.asdict(v) for v in self.variables],
            "lr_scaling": self.lr_scaling,
        }

    def columns(self) -> list[str]:
        return ["optimizer", "lr", "weight_decay", "batch_size", "accuracy"]

    def decode(self, point: list[float]) -> dict:
        batch_index, decay_index, log10_lr, optimizer_index = point
        name, multiplier = LR_SCALINGS[self.lr_scaling][int(optimizer_index)]
        return {
            "optimizer": name,
            "lr": 10**log10_lr * multiplier,
            "weight_decay": WEIGHT_DECAYS[int(decay_index)],
            "batch_size": BATCH_SIZES[int(batch_index)],
        }

    def config_at(self, point: list[float]) -> TrainConfig:
        return dataclasses.replace(self.base, recipe=dataclasses.replace(self.base.recipe, **self.decode(point)))

    def evaluate(self, points: list[list[float]], first_index: int, history: list[dict]) -> list[dict]:
        results: list[dict | None] = [None] * len(points)
        to_train = []
        for position, point in enumerate(points):
            try:
                to_train.append((position, self.config_at(point), self.decode(point)))
            except HaetError as exc:
                results[position] = {"ok": False, "outputs": None, "status": "failed", "reason": str(exc)}
        trained = self.train_all([config for _, config, _ in to_train], first_index, self.slots)
        for (position, _, decoded), outcome in zip(to_train, trained, strict=True):
            if isinstance(outcome, str):
                results[position] = decoded | {"ok": False, "outputs": None, "status": "failed", "reason": outcome}
                continue
            measured = self.trained_fields(outcome)
            trained = {"ok": True, "outputs": self.outputs_of(measured), "status": "trained"}
            results[position] = decoded | measured | trained
        return results

    def outputs_of(self, entry: dict) -> list[float]:
        return [-entry["accuracy"]]  # NOMAD minimises

    def best(self, history: list[dict]) -> dict | None:
        trained = [entry for entry in history if entry["status"] == "trained"]
        return max(trained, key=lambda entry: entry["accuracy"]) if trained else None

    def best_config(self, entry: dict) -> TrainConfig:
        return self.config_at(entry["point"])

    def fallback(self, out_dir: Path) -> tuple[TrainConfig, str]:
        raise SearchError(f"no HPO evaluation trained successfully; see {out_dir / 'history.csv'}")

    def extra_provenance(self) -> dict:
        return {"lr_scaling": self.lr_scaling}

    @staticmethod
    def tuned_sections(config: dict) -> dict:
        return {"recipe": {key: config["recipe"][key] for key in ("optimizer", "lr", "weight_decay", "batch_size")}}
