"""The one command line: `haet <command>`. Each command parses, calls the package, and prints."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

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


def _json_config(text: str) -> dict:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HaetError(f"--config-json is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise HaetError("--config-json must be a JSON object of config sections")
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
    from haet.config import load_config, subset_spec
    from haet.data.subsets import SubsetSpec, make_manifest, write_manifest

    if args.config:
        spec = subset_spec(load_config(args.config))
    elif args.config_json:
        spec = subset_spec(_json_config(args.config_json))
    elif args.dataset:
        spec = SubsetSpec(dataset=args.dataset, root=args.root, options=_options(args.option))
    else:
        raise HaetError("give --config FILE, --config-json TEXT or --dataset NAME")
    overrides = {
        name: getattr(args, name)
        for name in ("train_per_class", "val_per_class", "val_split", "seed")
        if getattr(args, name) is not None
    }
    from_config = args.config or args.config_json
    if from_config and args.root is not None:
        overrides["root"] = args.root
    if from_config and args.option:
        overrides["options"] = spec.options | _options(args.option)
    spec = dataclasses.replace(spec, **overrides)
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
    from haet.data.subsets import load_subset, read_manifest

    manifest = read_manifest(args.manifest)
    subset = load_subset(manifest, args.root)
    print(
        f"{args.manifest}: ok ({len(subset.train.labels)} train + {len(subset.validation.labels)} validation "
        "images match their sha256)"
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
    subset.add_argument("--config", help="study config (YAML) with data and subsets sections")
    subset.add_argument("--config-json", help="the same sections as one JSON object (how Snakemake rules pass them)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except HaetError as exc:
        print(f"haet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("haet: interrupted", file=sys.stderr)
        return 130
