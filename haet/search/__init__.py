"""Searches with NOMAD: the paper's NAS (Formulation 1) and HPO (Formulation 2), crash-safe and resumable.

Names load lazily: NOMAD's child process imports haet.search.nomad_process, and must not pay for torch.
"""

from importlib import import_module

_HOMES = {
    "SearchResult": "driver",
    "SearchSettings": "driver",
    "run_search": "driver",
    "HpoProblem": "problems",
    "NasProblem": "problems",
    "SearchError": "space",
    "Variable": "space",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'haet.search' has no attribute {name!r}")
    return getattr(import_module(f"haet.search.{_HOMES[name]}"), name)


__all__ = sorted(_HOMES)
