"""The one command line: `haet <command>`. Each command parses, calls the package, and prints."""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import traceback
from pathlib import Path

import yaml

from haet import HaetError, __version__


def _options(pairs: list[str]) -> dict:
    """--option key=value pairs, values read as YAML scalars (32 -> int, true -> bool, null -> None)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HaetError(f"--option takes key=value, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def is_inline(text: str) -> bool:
    """A --config value given as inline JSON rather than a file path."""
    return text.lstrip().startswith("{")


def config_layer(text: str) -> dict:
    """One --config value: a YAML file, or a JSON object given inline (how Snakemake rules pass config sections)."""
    from haet.config import load_config

    if not is_inline(text):
        return load_config(text)

    def unique(pairs: list[tuple[str, object]]) -> dict:
        keys = [key for key, _ in pairs]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise HaetError(f"the inline --config names {twice[0]!r} twice; give each key once")
        return dict(pairs)

    try:
        config = json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise HaetError(f"--config {text[:40]!r}... is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise HaetError("an inline --config must be a JSON object of config sections")
    return config


def cmd_data_info(args: argparse.Namespace) -> int:
    from haet.data import class_counts, load_split

    options = _options(args.option)
    for split_name in ("train", "test"):
        split = load_split(args.dataset, split_name, args.root, **options)
        shape = split.images([0]).shape[1:]
        counts = class_counts(split.labels, split.class_names)
        print(
            f"{args.dataset}/{split_name}: {len(split)} images of {shape[1]}x{shape[0]}x{shape[2]}, "
            f"{len(split.class_names)} classes"
        )
        print("  " + ", ".join(f"{name}: {count}" for name, count in counts.items()))
    return 0


def cmd_data_subset(args: argparse.Namespace) -> int:
    from haet.config import subset_spec
    from haet.data.subsets import SubsetSpec, make_manifest, write_manifest
    from haet.files import check_writable

    if args.config:
        spec = subset_spec(config_layer(args.config))
    elif args.dataset:
        spec = SubsetSpec(dataset=args.dataset, root=args.root, options=_options(args.option))
    else:
        raise HaetError("give --config FILE (or inline JSON) or --dataset NAME")
    overrides = {
        name: getattr(args, name)
        for name in ("train_per_class", "val_per_class", "val_split", "seed")
        if getattr(args, name) is not None
    }
    from_config = bool(args.config)
    if from_config and args.root is not None:
        overrides["root"] = args.root
    if from_config and args.option:
        overrides["options"] = spec.options | _options(args.option)
    spec = dataclasses.replace(spec, **overrides)
    check_writable(args.out, (args.config if args.config and not is_inline(args.config) else None,))
    manifest = write_manifest(make_manifest(spec, args.run), args.out)
    train, val = manifest["train"], manifest["validation"]
    print(
        f"{args.out}: {train['count']} train ({train['split']}) + {val['count']} validation ({val['split']}) "
        f"images of {spec.dataset}, run {args.run}, subset seed {manifest['subset_seed']}"
    )
    if manifest["validation_from_test_split"]:
        print("note: validation images come from the test split, as in the paper")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from haet.data.subsets import derivation_problem, load_subset, read_manifest

    manifest = read_manifest(args.manifest)
    problem = derivation_problem(manifest, args.root)
    if problem:
        raise HaetError(f"{args.manifest}: not the subset its spec draws: {problem}")
    subset = load_subset(manifest, args.root)
    print(
        f"{args.manifest}: ok (drawn again from its spec, seed and run: the same indices; "
        f"{len(subset.train.labels)} train + {len(subset.validation.labels)} validation images match their sha256)"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from haet.models import input_size, list_models, model_info
    from haet.models.cost import model_cost

    second_column = "Table 1 name" if args.name is None else "variant"
    header = f"{'model':<18} {second_column:<18} {'depth':>5} {'width':>5} {'input':>7} {'params':>12} {'MACs':>15}"
    if args.name is None:
        print(header)
        for name in list_models():
            cost = model_cost(name, num_classes=args.classes)
            print(
                f"{name:<18} {model_info(name).table1_name:<18} {1.0:>5} {1.0:>5} {'32x32':>7} "
                f"{cost.params:>12,} {cost.macs:>15,}"
            )
        print("MACs: multiply-accumulates of one 32x32 image through conv and linear layers (see haet/models/cost.py)")
        return 0
    pixels = input_size(args.resolution)
    base = model_cost(args.name, num_classes=args.classes)
    cost = model_cost(args.name, args.depth, args.width, pixels, args.classes)
    print(header)
    for label, row, depth, width, px in (
        ("baseline", base, 1.0, 1.0, 32),
        ("scaled", cost, args.depth, args.width, pixels),
    ):
        print(f"{args.name:<18} {label:<18} {depth:>5} {width:>5} {f'{px}x{px}':>7} {row.params:>12,} {row.macs:>15,}")
    print(
        f"scaled vs baseline: {100 * (1 - cost.macs / base.macs):.1f}% fewer MACs, "
        f"{100 * (1 - cost.params / base.params):.1f}% fewer parameters "
        f"(thop-style count with BatchNorm: {cost.thop_macs:,} MACs)"
    )
    return 0


TRAIN_FLAGS = {  # flag -> (config section, key, type)
    "model": ("model", "name", str),
    "depth": ("model", "depth", float),
    "width": ("model", "width", float),
    "resolution": ("model", "resolution", float),
    "optimizer": ("recipe", "optimizer", str),
    "lr": ("recipe", "lr", float),
    "weight_decay": ("recipe", "weight_decay", float),
    "batch_size": ("recipe", "batch_size", int),
    "label_smoothing": ("recipe", "label_smoothing", float),
    "schedule": ("recipe", "schedule", str),
    "augment": ("recipe", "augment", str),
    "budget_s": ("budget", "seconds", float),
    "max_epochs": ("budget", "max_epochs", int),
    "budget_mode": ("budget", "mode", str),
    "device": ("runtime", "device", str),
    "pipeline": ("runtime", "pipeline", str),
    "precision": ("runtime", "precision", str),
    "workers": ("runtime", "workers", int),
    "threads": ("runtime", "threads", int),
    "seed": ("runtime", "seed", int),
}


def merged_config(args: argparse.Namespace) -> dict:
    """The --config layers in command-line order: a later layer's keys override an earlier layer's, per section."""
    merged: dict = {}
    for text in args.config or []:
        layer = config_layer(text)
        for name, section in layer.items():
            if section is None:  # `{"recipe": null}` would reset every earlier layer's recipe to the defaults
                raise HaetError(
                    f"config section {name!r} is empty (null) in --config {text[:60]}: give its keys or leave it out"
                )
            if isinstance(section, dict) and isinstance(merged.get(name), dict):
                merged[name] = merged[name] | section
            else:
                merged[name] = section
    return merged


def section_of(config: dict, name: str) -> dict:
    """One config section as a new mapping; a section that is not a mapping is a one-line error."""
    section = config.get(name)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise HaetError(f"config section {name!r} must be a mapping of keys, got {section!r}")
    return dict(section)


def train_config(args: argparse.Namespace, skip: tuple[str, ...] = ()):
    """A TrainConfig from the merged configs (sections model/recipe/budget/runtime) and the flags that override it."""
    from haet.train import TrainConfig

    config = merged_config(args)
    sections = {name: section_of(config, name) for name in ("model", "recipe", "budget", "runtime")}
    for flag, (section, key, _) in TRAIN_FLAGS.items():
        if flag not in skip and getattr(args, flag) is not None:
            sections[section][key] = getattr(args, flag)
    return TrainConfig.from_dict(config | sections)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


BAR_FORMAT = "{l_bar}{bar}| {n:.1f}/{total:g} {unit} [{elapsed}<{remaining}{postfix}]"


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from haet.containers import container_provenance
    from haet.data.subsets import load_subset, read_manifest
    from haet.files import check_writable
    from haet.lease import hold_lease
    from haet.train import train, write_run_record

    hold_lease()  # started by a local Snakemake: die with it
    config = train_config(args)
    check_writable(args.out, (args.manifest, *[text for text in args.config or [] if not is_inline(text)]))
    container_provenance()  # container variables set outside a container: refused now, not after the budget
    subset = load_subset(read_manifest(args.manifest), args.data_root)
    bars = []  # made at the first epoch, so errors raised before training print alone
    budget_s, max_epochs = config.budget.seconds, config.budget.max_epochs

    def on_epoch(point: dict) -> None:
        loss = "diverged" if point["train_loss"] is None else f"{point['train_loss']:.3f}"
        used = f"{point['train_s']:.1f}/{budget_s:g} s of the budget" if budget_s else f"of {max_epochs} epochs"
        if args.quiet:  # a line every --log-every epochs, so that `tail -f` on a rule's log follows the run
            if point["epoch"] % args.log_every == 0:
                print(f"epoch {point['epoch']}: val_acc {point['val_acc']:.3f}, loss {loss}, {used}", flush=True)
            return
        if not bars:  # the bar counts budget seconds when there is a time budget, epochs otherwise
            total, unit = (budget_s, "s") if budget_s else (max_epochs, "epoch")
            bars.append(tqdm(total=total, unit=unit, dynamic_ncols=True, bar_format=BAR_FORMAT))
        bar = bars[0]
        bar.set_postfix_str(f"epoch {point['epoch']}  val_acc {point['val_acc']:.3f}  loss {loss}")
        bar.update(min(point["train_s"], budget_s) - bar.n if budget_s else point["epoch"] - bar.n)

    try:
        body = train(config, subset, on_epoch)
    finally:
        for bar in bars:
            bar.close()
    out = Path(args.out)
    if body["status"] == "interrupted" and _complete_record_at(out):  # a Ctrl-C on a rerun keeps the finished run
        out = out.with_name(f"{out.stem}.interrupted{out.suffix}")
        print(f"{args.out} holds a complete run: this interrupted one goes to {out}", file=sys.stderr)
    try:
        record = write_run_record(body, out)
    except HaetError as exc:  # the run is done: keep what it measured where the user sees it
        print(json.dumps(body, sort_keys=True), file=sys.stderr)
        raise HaetError(f"{exc}; the finished run's record (without provenance) is printed above") from None
    args.skip_teardown = record["runtime"]["pipeline"] == "resident"  # no loader workers to shut down (main)
    metrics = record["metrics"]
    print(
        f"{out}: {record['status']}, stopped by {record['budget']['stopped_by']} after {metrics['epochs']} "
        f"epochs ({metrics['train_s']:.1f}s training): val_acc_final {metrics['val_acc_final']:.4f} "
        f"(best over epochs, optimistic: {metrics['val_acc_best_optimistic']:.4f})"
    )
    return 130 if record["status"] == "interrupted" else 0


def _complete_record_at(path: Path) -> bool:
    from haet.records import read_run_record

    try:
        return path.is_file() and read_run_record(path)["status"] == "complete"
    except HaetError:
        return False


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from haet.data.subsets import SubsetSpec, load_subset, make_manifest, read_manifest
    from haet.train import ModelSpec
    from haet.train.bench import bench

    if args.manifest:
        subset = load_subset(read_manifest(args.manifest))
    else:
        subset = load_subset(make_manifest(SubsetSpec("digits", train_per_class=120, val_per_class=50)))
    model = ModelSpec(args.model, width=args.width)
    if args.share:
        return print_sharing(args, subset.manifest, model)
    rows = bench(
        subset, model, args.batch_size, args.epochs, args.device, args.workers, args.precision, tuple(args.recipes)
    )
    if args.json:
        print(json.dumps({"model": model.name, "width": model.width, "batch_size": args.batch_size, "rows": rows}))
        return 0
    print(
        f"{args.model} width {args.width}, batch {args.batch_size}, {len(subset.train.labels)} training images, "
        f"device {rows[0]['device']}, precision {rows[0]['precision']}; median of {rows[0]['epochs_measured']} "
        "epochs after a warm-up epoch"
    )
    print(f"{'recipe':<7} {'pipeline':<9} {'step':<10} {'epoch s':>8} {'images/s':>9} {'vs loader':>10} {'vs bare':>8}")
    for row in rows:
        share = f"  (data alone: {row['data_share']:.0%} of the resident epoch)" if "data_share" in row else ""
        print(
            f"{row['recipe']:<7} {row['pipeline']:<9} {row['step']:<10} {row['epoch_s']:>8.3f} "
            f"{row['images_per_s']:>9.0f} {row['vs_loader']:>9.2f}x {row['vs_bare']:>7.2f}x{share}"
        )
    if not any(row["step"] == "cuda-graph" for row in rows):
        print("(the captured step's rows need CUDA: runtime.capture cuda-graph replays CUDA graphs)")
    return 0


def cmd_challenge_run(args: argparse.Namespace) -> int:
    import tempfile

    from haet.challenge.runner import run_submission
    from haet.challenge.sandbox import Limits, parse_bytes
    from haet.data.subsets import load_subset, read_manifest
    from haet.files import check_writable
    from haet.lease import hold_lease
    from haet.train import write_run_record

    hold_lease()
    check_writable(args.out, (args.manifest,))
    subset = load_subset(read_manifest(args.manifest), args.data_root)
    name = args.name or args.submission
    container = _container_spec(args) if args.image else None
    limits = Limits(memory_bytes=parse_bytes(args.memory)) if args.memory else None
    with tempfile.TemporaryDirectory(prefix="haet-submission-") as work:
        body, ran_in = run_submission(name, args.submission, subset, Path(args.work or work), args.budget_s,
                                      args.grace_s, args.device, args.seed, args.threads, container,
                                      clock=args.clock, sandbox="none" if args.unsandboxed else "bwrap",
                                      wall_limit_s=args.wall_limit_s, limits=limits)  # fmt: skip
    record = write_run_record(body, args.out, container=ran_in)
    submission = record["submission"]
    print(
        f"{args.out}: {name}: {submission['outcome']} ({submission['message']}); accuracy "
        f"{record['metrics']['val_acc_final']:.4f} on {submission['test_images']} test images, "
        f"{submission['models_handed_in']} model(s) handed in"
    )
    return 0


def cmd_challenge_child(args: argparse.Namespace) -> int:
    from haet.challenge.child import main as child

    child([args.stage, args.work])
    return 0


def print_sharing(args: argparse.Namespace, manifest: dict, model) -> int:
    import tempfile

    from haet.train import Budget, Recipe, Runtime, TrainConfig
    from haet.train.bench import sharing

    captures = args.capture or ["eager"]
    print(f"{model.name} width {model.width}, the paper recipe, {args.epochs} epochs a training; N trainings at once")
    print(f"{'N':>3} {'step':<10} {'wall s':>8} {'images/s':>9} {'vs N=1':>7} {'overhead s':>10}  val_acc_final")
    for capture in captures:
        config = TrainConfig(
            model=model,
            recipe=Recipe(batch_size=args.batch_size, t_max_epochs=args.epochs),
            budget=Budget(seconds=None, max_epochs=args.epochs),
            runtime=Runtime(args.device, workers=args.workers, precision=args.precision, capture=capture),
        )
        with tempfile.TemporaryDirectory() as folder:
            rows = sharing(manifest, config, args.share, Path(args.share_out or folder))
        for row in rows:
            gain = "-" if row["vs_one"] is None else f"{row['vs_one']:.2f}x"
            accuracies = " ".join(f"{acc:.4f}" for acc in row["val_acc_final"])
            print(
                f"{row['trainings']:>3} {capture:<10} {row['wall_s']:>8.1f} {row['images_per_s']:>9.0f} {gain:>7} "
                f"{row['overhead_s']:>10.1f}  {accuracies}"
            )
    return 0


SEARCH_KEYS = {
    "max_evaluations",
    "seed",
    "block_size",
    "direction_type",
    "nomad_timeout_s",
    "constraint",
    "baseline_acc",
    "variables",
    "eval_timeout_s",
    "metric",
    "lr_scaling",
    "share_gpus",
}


def _point_summary(entry: dict) -> str:
    words = [f"accuracy {entry['accuracy']:.3f}"] if entry.get("accuracy") is not None else []
    if entry.get("macs") is not None:
        words.append(f"MACs {entry['macs'] / 1e6:.2f}M")
    return ", ".join(words)


def evaluation_printer(kind: str, max_evaluations: int):
    """One line per evaluation as it is logged, flushed so that `tail -f` on the rule's log follows the search."""

    def show(entry: dict, best: dict | None) -> None:
        point = "[" + ", ".join(f"{value:g}" for value in entry["point"]) + "]"
        if entry["status"] == "trained":
            outcome = _point_summary(entry) + {True: " (feasible)", False: " (infeasible)"}.get(
                entry.get("feasible"), ""
            )
        else:
            outcome = f"{entry['status']}: {entry.get('reason', '')}"
        best_text = f"evaluation {best['index'] + 1}, {_point_summary(best)}" if best else "none yet"
        print(
            f"{kind} {entry['index'] + 1}/{max_evaluations} point {point}: {outcome}; {entry['seconds']:.1f} s; "
            f"best so far: {best_text}",
            flush=True,
        )

    return show


def cmd_search(args: argparse.Namespace) -> int:
    from haet.files import check_writable
    from haet.lease import hold_lease
    from haet.search import HpoProblem, NasProblem, SearchSettings, run_search
    from haet.search.gpus import search_gpus
    from haet.search.problems import baseline_accuracy

    config = merged_config(args)
    search = section_of(config, "search")
    unknown = sorted(set(search) - SEARCH_KEYS)
    if unknown:
        raise HaetError(f"config key search.{unknown[0]} is not known; search takes {', '.join(sorted(SEARCH_KEYS))}")
    for flag in ("max_evaluations", "seed", "block_size", "baseline_acc"):
        if getattr(args, flag, None) is not None:
            search[flag] = getattr(args, flag)
    base = train_config(args, skip=("seed",))  # --seed is NOMAD's here; trainings keep their subsets' seeds
    check_writable(Path(args.out_dir) / "summary.json", tuple(args.manifest))  # before NOMAD or any training
    hold_lease()  # started by a local Snakemake: die with it (its trainings die with the search)
    settings = SearchSettings(
        **{
            key: search[key]
            for key in ("max_evaluations", "seed", "block_size", "direction_type", "nomad_timeout_s")
            if key in search
        }
    )
    share_gpus = search.get("share_gpus", False)
    if not isinstance(share_gpus, bool):
        raise HaetError(f"search.share_gpus must be true or false, got {share_gpus!r}")
    common = {
        "variables": search.get("variables"),
        "slots": settings.block_size * len(args.manifest),  # a block's trainings, all at once
        "eval_timeout_s": search.get("eval_timeout_s"),
        "metric": search.get("metric", "final"),
        "gpus": search_gpus(base.runtime.device, args.gpus),
        "share_gpus": share_gpus,
    }
    if args.kind == "nas":
        if "lr_scaling" in search:
            raise HaetError("search.lr_scaling scales HPO's learning rates; a NAS search does not take it")
        if args.baseline_records:
            search["baseline_acc"] = baseline_accuracy(args.baseline_records, base.model, common["metric"])
        if search.get("baseline_acc") is None:
            raise HaetError(
                "NAS needs the baseline accuracy: --baseline-acc, search.baseline_acc, or "
                "--baseline-records (screening records of the unscaled model)"
            )
        problem = NasProblem(
            base, args.manifest, args.out_dir, search["baseline_acc"], search.get("constraint", "EB"), **common
        )
    else:
        problem = HpoProblem(base, args.manifest, args.out_dir, lr_scaling=search.get("lr_scaling", "code"), **common)
    if problem.gpu_slots:
        held = ", ".join(f"GPU {gpu}: {count}" for gpu, count in dict(problem.gpu_slots).items())
        print(f"{args.kind}: {len(problem.gpu_slots)} trainings at once, trainings per GPU: {held}", flush=True)
    progress = evaluation_printer(args.kind, settings.max_evaluations)
    result = run_search(problem, settings, args.out_dir, args.new_log_if_changed, progress)
    provenance = problem.write_choice(result, args.out_dir)
    counts = {
        state: sum(entry["status"] == state for entry in result.evaluations)
        for state in ("trained", "answered", "failed")
    }
    print(
        f"{args.kind} {result.status}: {len(result.evaluations)} evaluations ({counts['trained']} trained, "
        f"{counts['answered']} answered without training, {counts['failed']} failed; "
        f"{result.replayed} replayed from the log)"
    )
    print(f"best: {provenance.get('fallback') or provenance['best_point']} -> {args.out_dir}/best.yaml")
    return 130 if result.status == "interrupted" else 0


def _groups(pairs: list[list[str]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for label, *paths in pairs:
        if not paths:
            raise HaetError(f"--group {label} names no run records")
        groups.setdefault(label, []).extend(paths)
    return groups


def cmd_report(args: argparse.Namespace) -> int:
    from haet.report.tables import audit, make_table, rank

    if args.report_command == "table":
        table = make_table(
            args.kind, _groups(args.group), args.out_prefix, args.allow_mixed_images, args.search_summary
        )
        print(
            f"{args.out_prefix}.md: {len(table['rows'])} rows from "
            f"{sum(len(row['sources']) for row in table['rows'])} run records"
        )
    elif args.report_command == "figure":
        from haet.report.figures import write_figure

        write_figure(args.kind, _groups(args.group), args.search_summary, args.out)
        print(f"{args.out}: the {args.kind} figure")
    elif args.report_command == "runs":
        from haet.report.runs import write_runs_table

        rows = write_runs_table(_groups(args.group), args.search_summary, args.out)
        print(f"{args.out}: {rows} runs")
    elif args.report_command == "rank":
        ranking = rank(_groups(args.group), args.out)
        print(
            f"{args.out}: " + ", ".join(f"{r['model']} {100 * r['val_acc_final_mean']:.1f}" for r in ranking["ranked"])
        )
    else:
        failed = False
        for path in args.tables:
            problems = audit(path)
            failed |= bool(problems)
            print(f"{path}: " + ("ok, every number re-derived from its run records" if not problems else "FAILED"))
            for problem in problems:
                print(f"  {problem}")
        return 1 if failed else 0
    return 0


def _container_spec(args: argparse.Namespace):
    from pathlib import Path

    from haet.containers import ContainerSpec

    if not args.socket:
        raise HaetError("no container engine socket: give --socket unix:///... or set HAET_CONTAINER_SOCKET")
    return ContainerSpec(
        image=args.image,
        socket=args.socket,
        workdir=Path.cwd(),
        data_roots=tuple(Path(root) for root in getattr(args, "data_root", None) or []),
        gpus=getattr(args, "gpus", "auto"),
        memory=getattr(args, "memory", None),
        cpus=getattr(args, "cpus", None),
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def cmd_plan(args: argparse.Namespace) -> int:
    from haet.config import load_config, merged_study
    from haet.plan import plan

    paths = args.config or ["workflow/config/default.yaml"]
    result = plan(
        merged_study([load_config(path) for path in paths]),
        args.gpus,
        args.overhead_s,
        Path(args.benchmarks) if args.benchmarks else None,
        args.target,
        args.images_per_s,
        args.sharing_speedup,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    source = f"measured from {args.benchmarks}" if result["overhead_measured"] else "assumed; --benchmarks measures it"
    overhead = f"overhead {result['overhead_s']:.1f} s a training ({source})"
    print(f"{' + '.join(paths)} on {args.gpus} GPU(s) or training slots; {overhead}")
    measured = any(row["measured_job_s"] is not None for row in result["stages"])
    width = max(10, *(len(row["stage"]) for row in result["stages"]))
    header = f"{'stage':<{width}} {'trainings':>10} {'training':>9} {'GPU-hours':>10} {'wall':>8}"
    print(header + (f" {'job-s planned':>14} {'job-s measured':>15}" if measured else ""))
    for row in result["stages"]:
        count = f"<={row['trainings']}" if row["upper_bound"] else str(row["trainings"])
        line = (
            f"{row['stage']:<{width}} {count:>10} {row['training_s']:>8.1f}s {row['gpu_hours']:>10.3f} "
            f"{_duration(row['wall_s']):>8}"
        )
        if measured:
            seen = row["measured_job_s"]
            line += f" {row['predicted_job_s']:>14.0f} {'' if seen is None else f'{seen:.0f}':>15}"
        print(line)
    total = result["total"]
    print(
        f"{'total':<{width}} {total['trainings']:>10} {'':>9} {total['gpu_hours']:>10.3f} "
        f"{_duration(total['wall_s']):>8}"
    )
    if any(row["upper_bound"] for row in result["stages"]):
        print("Searches count every evaluation as trained (an upper bound: NOMAD answers some without training).")
    return 0


def cmd_container(args: argparse.Namespace) -> int:
    from haet import containers

    spec = _container_spec(args)
    if args.container_command == "info":
        client = containers.connect(spec.socket)
        identity = containers.engine_identity(client) | containers.image_identity(client, spec.image)
        for key, value in identity.items():
            print(f"{key}: {value}")
        return 0
    command = args.haet_args[1:] if args.haet_args[:1] == ["--"] else args.haet_args
    if not command:
        raise HaetError("haet container run: give the haet command after --, e.g. -- train --manifest ...")
    try:
        return containers.run(spec, command)
    except containers.StageFailed as exc:
        print(f"haet: error: {exc}", file=sys.stderr)
        return exc.exit_status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="haet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"haet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="datasets and subsets").add_subparsers(dest="data_command", required=True)

    info = data.add_parser("info", help="class counts and image size of a dataset's splits")
    info.add_argument("dataset")
    info.add_argument("--root")
    info.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    info.set_defaults(handler=cmd_data_info)

    subset = data.add_parser("subset", help="draw a seeded stratified subset and write its manifest")
    subset.add_argument("--config", help="study config with data and subsets sections: a YAML file or inline JSON")
    subset.add_argument("--dataset")
    subset.add_argument("--root")
    subset.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    subset.add_argument("--train-per-class", type=int)
    subset.add_argument("--val-per-class", type=int)
    subset.add_argument("--val-split", choices=["train", "test"])
    subset.add_argument("--seed", type=int)
    subset.add_argument("--run", type=int, default=0, help="run index k: the subset seed is derived from (seed, k)")
    subset.add_argument("--out", required=True, help="manifest path (JSON)")
    subset.set_defaults(handler=cmd_data_subset)

    verify = data.add_parser("verify", help="check a manifest's own hash and that the data still matches it")
    verify.add_argument("manifest")
    verify.add_argument("--root", help="dataset root, if the data moved since the manifest was made")
    verify.set_defaults(handler=cmd_data_verify)

    models = commands.add_parser("models", help="the model zoo with parameters and MACs")
    models.add_argument("name", nargs="?", help="one model, shown at the given multipliers beside its baseline")
    models.add_argument("--depth", type=float, default=1.0, help="depth multiplier (blocks per stage)")
    models.add_argument("--width", type=float, default=1.0, help="width multiplier (channels)")
    models.add_argument("--resolution", type=float, default=1.0, help="resolution multiplier: int(32*r) pixels")
    models.add_argument("--classes", type=int, default=10)
    models.set_defaults(handler=cmd_models)

    challenge = commands.add_parser("challenge", help="the HAET challenge: run a plug-in submission")
    challenge_commands = challenge.add_subparsers(dest="challenge_command", required=True)
    run = challenge_commands.add_parser(
        "run", help="train a submission under a hard deadline, score it on test images it never sees; writes a record"
    )
    run.add_argument("--submission", required=True, help="a .py file, a module name, haet-paper or haet-winner")
    run.add_argument("--name", help="the entry's name in records and tables (default: --submission)")
    run.add_argument("--manifest", required=True, help="subset manifest: its train images train, its validation test")
    run.add_argument("--data-root", help="where the manifest's dataset lives, if not where it says")
    run.add_argument("--out", required=True, help="run record path (JSON)")
    run.add_argument("--budget-s", type=float, required=True,
                     help="seconds on --clock from the start of train to the deadline")  # fmt: skip
    run.add_argument("--clock", default="auto", choices=["auto", "cpu", "wall"],
                     help="cpu: the CPU seconds of every process in the sandbox, which load cannot shorten (auto on "
                          "the CPU); wall: the wall clock (auto on a GPU; the paper's)")  # fmt: skip
    run.add_argument("--wall-limit-s", type=float, help="--clock cpu: killed past this many wall seconds "
                     "(default 10 x budget + 60)")  # fmt: skip
    run.add_argument(
        "--unsandboxed",
        action="store_true",
        help="run the submission with the harness's own "
        "rights (no namespaces, no cgroup; --clock wall only); its record and the leaderboard say so",
    )
    run.add_argument("--grace-s", type=float, default=5.0, help="kept running past the deadline before the kill")
    run.add_argument("--device", default="auto")
    run.add_argument("--seed", type=int, help="seeds random, numpy and torch in the submission (default: subset's)")
    run.add_argument("--threads", type=int, default=1, help="the CPU threads a submission is given: torch's, and a CPU "
                     "quota of this many cores on its sandbox")  # fmt: skip
    run.add_argument("--work", help="keep the run's files here: logs, the scored model (kept/model.pt), and the small "
                     "files its train and predict wrote (train-files/, predict-files/)")  # fmt: skip
    run.add_argument("--image", help="run train and predict in this image, each with the work folder alone mounted")
    run.add_argument("--socket", default=os.environ.get("HAET_CONTAINER_SOCKET"), help="--image: the engine's API")
    run.add_argument("--gpus", default="auto", choices=["auto", "all", "none"], help="--image: GPUs passed in")
    run.add_argument("--memory", help="the submission's memory limit, its sandbox's or its containers' (12g, the "
                     "challenge's, by default natively; none by default with --image)")  # fmt: skip
    run.add_argument("--cpus", type=float, help="--image: the containers' CPU limit in cores")
    run.set_defaults(handler=cmd_challenge_run)
    child = challenge_commands.add_parser("child", help="(the harness's own) a submission's train or predict process")
    child.add_argument("stage", choices=["train", "predict"])
    child.add_argument("work")
    child.set_defaults(handler=cmd_challenge_child)

    train = commands.add_parser("train", help="train one model on one subset under a budget; writes a run record")
    train.add_argument("--manifest", required=True, help="subset manifest (haet data subset)")
    train.add_argument("--out", required=True, help="run record path (JSON)")
    train.add_argument(
        "--config",
        action="append",
        help="sections model, recipe, budget, runtime: a YAML file or inline JSON; repeat to layer",
    )
    train.add_argument("--data-root", help="dataset root, if the data moved since the manifest was made")
    train.add_argument("--quiet", action="store_true", help="no progress bar: a line every --log-every epochs")
    train.add_argument(
        "--log-every",
        type=_positive_int,
        default=5,
        metavar="EPOCHS",
        help="with --quiet: epochs between progress lines",
    )
    for flag, (section, key, kind) in TRAIN_FLAGS.items():
        train.add_argument(f"--{flag.replace('_', '-')}", type=kind, help=f"{section}.{key}")
    train.set_defaults(handler=cmd_train)

    bench = commands.add_parser(
        "bench",
        help="epoch time of the loader and resident pipelines, a bare loop and the data alone, eager and captured",
    )
    bench.add_argument("--manifest", help="subset manifest (default: a digits subset of 1,200 images)")
    bench.add_argument("--model", default="SENet18")
    bench.add_argument("--width", type=float, default=0.67)
    bench.add_argument("--recipes", nargs="+", default=["basic", "paper"], choices=["none", "basic", "cutout", "paper"])
    bench.add_argument("--batch-size", type=int, default=512)
    bench.add_argument("--epochs", type=int, default=4)
    bench.add_argument("--device", default="auto")
    bench.add_argument("--workers", type=int, default=2)
    bench.add_argument("--precision", default="auto", choices=["auto", "fp32", "tf32", "bf16"])
    bench.add_argument("--json", action="store_true", help="the rows as JSON, for machines")
    bench.add_argument(
        "--share",
        nargs="+",
        type=int,
        metavar="N",
        help="instead: N trainings of the paper recipe at once (--epochs each), for each N: total images/s, gain, "
        "overhead, accuracies",
    )
    bench.add_argument("--capture", nargs="+", choices=["eager", "cuda-graph"], help="--share: the steps to measure")
    bench.add_argument("--share-out", help="--share: keep the run records in this folder (default: discarded)")
    bench.set_defaults(handler=cmd_bench)

    search = commands.add_parser("search", help="NOMAD search: nas (min MACs s.t. accuracy) or hpo (max accuracy)")
    search.add_argument("kind", choices=["nas", "hpo"])
    search.add_argument("--manifest", action="append", required=True, help="a subset manifest; repeat for k subsets")
    search.add_argument("--out-dir", required=True, help="log, history.csv, summary.json, best.yaml, runs/")
    search.add_argument(
        "--config",
        action="append",
        help="a search section plus the base training's sections: YAML file or inline JSON; repeatable",
    )
    search.add_argument(
        "--new-log-if-changed",
        action="store_true",
        help="when the out-dir holds the log of a different search, move it aside instead of refusing",
    )
    search.add_argument("--baseline-acc", type=float, help="nas: accuracy the scaled model must reach")
    search.add_argument("--baseline-records", nargs="+", help="nas: screening records of the unscaled model")
    search.add_argument("--max-evaluations", type=int)
    search.add_argument("--block-size", type=int, help="points evaluated at once, each training in its own process")
    search.add_argument(
        "--gpus",
        help="GPUs for the trainings, one each, e.g. 0,1,2,3 (default: CUDA_VISIBLE_DEVICES, else every GPU here)",
    )
    search.add_argument("--quiet", action="store_true")
    for flag, (section, key, kind) in TRAIN_FLAGS.items():
        if flag != "seed":
            search.add_argument(f"--{flag.replace('_', '-')}", type=kind, help=f"base training {section}.{key}")
    search.add_argument("--seed", type=int, help="NOMAD's seed")
    search.set_defaults(handler=cmd_search)

    planner = commands.add_parser("plan", help="a study's trainings, GPU-hours and wall time per stage, before it runs")
    planner.add_argument(
        "--config",
        action="append",
        help="study config (YAML; default workflow/config/default.yaml); repeated, merged as Snakemake's "
        "--configfile merges them (paper.yaml, then fidelity.yaml)",
    )
    planner.add_argument(
        "--target", choices=["study", "fidelity"], help="only the paper's stages, or only the fidelity study's arms"
    )
    planner.add_argument(
        "--images-per-s",
        type=float,
        help="fidelity arms with epoch budgets: the reference arm's training images/s on this GPU (haet bench)",
    )
    planner.add_argument(
        "--sharing-speedup",
        type=float,
        default=1.0,
        help="how much faster trainings sharing a GPU (fidelity.trainings_per_gpu) go together than one alone "
        "(default 1: no gain assumed)",
    )
    planner.add_argument("--gpus", type=int, default=1, help="GPUs (on a CPU: trainings at once, cores / threads)")
    planner.add_argument("--overhead-s", type=float, help="seconds a training takes beyond its budget (default 10)")
    planner.add_argument("--benchmarks", help="a run's benchmark folder: measure the overhead, compare each stage")
    planner.add_argument("--json", action="store_true", help="the plan as JSON")
    planner.set_defaults(handler=cmd_plan)

    container = commands.add_parser("container", help="run a haet command inside the pinned image (Docker API)")
    container_commands = container.add_subparsers(dest="container_command", required=True)
    for name, text in (("run", "run `haet ARGS` in the image"), ("info", "the engine and the image's digest")):
        sub = container_commands.add_parser(name, help=text)
        sub.add_argument("--image", required=True, help="image reference, e.g. localhost/haet:0.1.0")
        sub.add_argument(
            "--socket",
            default=os.environ.get("HAET_CONTAINER_SOCKET"),
            help="Docker API socket, unix:///... (default: $HAET_CONTAINER_SOCKET)",
        )
        sub.set_defaults(handler=cmd_container)
        if name == "run":
            sub.add_argument("--data-root", action="append", default=[], help="mounted read-only; repeatable")
            sub.add_argument("--gpus", default="auto", choices=["auto", "all", "none"])
            sub.add_argument("--memory", help="the container's memory limit, as the engine takes it: 12g, 512m")
            sub.add_argument("--cpus", type=float, help="the container's CPU limit in cores, e.g. 1.5")
            sub.add_argument("haet_args", nargs=argparse.REMAINDER, help="-- then the haet command and its options")

    report = commands.add_parser("report", help="result tables from run records, and their audit")
    report_commands = report.add_subparsers(dest="report_command", required=True)
    table = report_commands.add_parser("table", help="one table as PREFIX.json, PREFIX.csv and PREFIX.md")
    table.add_argument("kind", choices=["table1", "table2a", "table2", "table3", "table4", "fidelity", "leaderboard"])
    table.add_argument(
        "--group",
        nargs="+",
        action="append",
        required=True,
        metavar=("LABEL", "RECORD"),
        help="a row: its label (MODEL or MODEL|VARIANT; fidelity: ARM|TARGET, the reference arm first) and its "
        "run records",
    )
    table.add_argument("--out-prefix", required=True)
    table.add_argument(
        "--allow-mixed-images",
        action="store_true",
        help="runs from different images (or native runs) may share the table; the audit then accepts it",
    )
    table.add_argument(
        "--search-summary",
        action="append",
        default=[],
        help="a search's summary.json: the table notes by which metric it chose (repeatable)",
    )
    table.set_defaults(handler=cmd_report)
    ranking = report_commands.add_parser("rank", help="rank groups of runs by mean final accuracy (JSON)")
    ranking.add_argument("--group", nargs="+", action="append", required=True, metavar=("LABEL", "RECORD"))
    ranking.add_argument("--out", required=True)
    ranking.set_defaults(handler=cmd_report)
    figure = report_commands.add_parser("figure", help="one figure (PNG) from run records and search logs")
    figure.add_argument("kind", choices=["screening", "nas", "hpo", "curves", "fidelity", "leaderboard"])
    figure.add_argument("--group", nargs="+", action="append", default=[], metavar=("LABEL", "RECORD"))
    figure.add_argument("--search-summary", action="append", default=[], help="a search's summary.json (repeatable)")
    figure.add_argument("--out", required=True, help="PNG path")
    figure.set_defaults(handler=cmd_report)
    runs = report_commands.add_parser("runs", help="every run record of a study as one CSV row (runs.csv)")
    runs.add_argument("--group", nargs="+", action="append", default=[], metavar=("STAGE", "RECORD"))
    runs.add_argument(
        "--search-summary", action="append", default=[], help="a search's summary.json: its evaluations' records"
    )
    runs.add_argument("--out", required=True, help="CSV path")
    runs.set_defaults(handler=cmd_report)
    audit = report_commands.add_parser("audit", help="re-derive every number of tables from their run records")
    audit.add_argument("tables", nargs="+", help="TABLE.json files")
    audit.set_defaults(handler=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = _handle(args)
    if argv is None and getattr(args, "skip_teardown", False) and not multiprocessing.active_children():
        # A training process (the console script or `python -m haet`, not a caller in Python) on the resident
        # pipeline leaves without Python's teardown of torch, about a second of every training: its record is
        # written and fsynced. A loader pipeline's workers are shut down by the teardown, so it keeps it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _handle(args: argparse.Namespace) -> int:
    try:
        return args.handler(args)
    except HaetError as exc:
        print(f"haet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("haet: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(
            "haet: unexpected error (a bug, not your input): please report it with the traceback above",
            file=sys.stderr,
        )
        return 1
