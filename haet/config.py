"""Study configs: YAML files whose sections feed each stage (data + subsets so far)."""

from __future__ import annotations

from pathlib import Path

import yaml

from haet import HaetError, key_name
from haet.data.subsets import SubsetSpec

DATA_KEYS = {"dataset", "root", "options"}
SUBSET_KEYS = {"train_per_class", "val_per_class", "val_split", "seed", "runs"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(text: str, where: str):
    """YAML text as data, a key named twice in one mapping refused (HaetError naming where and the line)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise HaetError(f"{where}: not valid YAML ({exc})") from None


def load_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        config = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise HaetError(f"{path}: config file not found") from None
    except OSError as exc:  # a directory, no permission
        raise HaetError(f"{path}: cannot read this config file ({exc.strerror})") from None
    if not isinstance(config, dict):
        raise HaetError(f"{path}: a config is a YAML mapping of sections (data, subsets, ...)")
    return config


def merged_study(configs: list[dict]) -> dict:
    """Study configs merged key by key, mappings recursively, later ones winning: as Snakemake merges the files of
    --configfile A B."""

    def merge(base: dict, layer: dict) -> dict:
        merged = dict(base)
        for key, value in layer.items():
            both = isinstance(value, dict) and isinstance(merged.get(key), dict)
            merged[key] = merge(merged[key], value) if both else value
        return merged

    result: dict = {}
    for config in configs:
        result = merge(result, config)
    return result


def _section(config: dict, name: str, allowed: set[str]) -> dict:
    section = config.get(name) or {}
    if not isinstance(section, dict):
        raise HaetError(f"config section {name!r} must be a mapping")
    unknown = sorted(key_name(key) for key in set(section) - allowed)
    if unknown:
        raise HaetError(f"config key {name}.{unknown[0]} is not known; {name} takes {', '.join(sorted(allowed))}")
    return section


def subset_spec(config: dict) -> SubsetSpec:
    """The SubsetSpec described by a config's data and subsets sections."""
    data = _section(config, "data", DATA_KEYS)
    subsets = _section(config, "subsets", SUBSET_KEYS)
    if "dataset" not in data:
        raise HaetError("config key data.dataset is missing (digits, cifar10, imagefolder or mini-imagenet)")
    fields = {key: value for key, value in subsets.items() if key != "runs"}
    return SubsetSpec(dataset=data["dataset"], root=data.get("root"), options=data.get("options") or {}, **fields)
