"""Property: any YAML/JSON value in any section of a config gives a valid config or one clean HaetError.

Never a traceback: every setting is checked where it is read, before any work starts.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haet import HaetError
from haet.cli import build_parser, train_config
from haet.config import subset_spec
from haet.search import SearchSettings
from haet.search.problems import NAS_VARIABLES, with_overrides
from haet.train import TrainConfig

SCALARS = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=8)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
)


def _keys(names: list[str]):
    """Mappings whose keys are mostly the section's real keys (so values get checked), sometimes anything."""
    return st.dictionaries(st.sampled_from(names) | st.text(max_size=8), VALUES, max_size=4)


TRAIN_KEYS = {
    "model": ["name", "depth", "width", "resolution"],
    "recipe": ["optimizer", "lr", "momentum", "weight_decay", "batch_size", "label_smoothing", "schedule"],
    "budget": ["seconds", "max_epochs", "mode", "eval_every_epochs", "early_stop_epoch", "early_stop_acc"],
    "runtime": ["device", "pipeline", "workers", "seed", "eval_batch_size"],
}
CHECKS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _clean(build) -> None:
    try:
        build()
    except HaetError as exc:
        assert "\n" not in str(exc) and str(exc)


@CHECKS
@given(st.fixed_dictionaries({}, optional={name: _keys(keys) | VALUES for name, keys in TRAIN_KEYS.items()}))
def test_training_sections(config):
    _clean(lambda: TrainConfig.from_dict(config))


@CHECKS
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "data": _keys(["dataset", "root", "options"]) | VALUES,
            "subsets": _keys(["train_per_class", "val_per_class", "val_split", "seed"]) | VALUES,
        },
    )
)
def test_data_and_subsets_sections(config):
    _clean(lambda: subset_spec(config))


@CHECKS
@given(_keys(["max_evaluations", "seed", "block_size", "direction_type", "nomad_timeout_s"]))
def test_search_settings(search):
    known = {key: value for key, value in search.items() if key in SearchSettings.__dataclass_fields__}
    _clean(lambda: SearchSettings(**known))


@CHECKS
@given(_keys(["depth", "width", "resolution"]) | VALUES)
def test_search_variables(variables):
    _clean(lambda: with_overrides(NAS_VARIABLES, variables))


@CHECKS
@given(st.dictionaries(st.sampled_from([*TRAIN_KEYS, "search"]) | st.text(max_size=8), VALUES, max_size=4))
def test_config_layers_as_the_cli_merges_them(config):
    argv = ["train", "--manifest", "m.json", "--out", "r.json", "--config", json.dumps(config)]
    args = build_parser().parse_args(argv)
    _clean(lambda: train_config(args))
