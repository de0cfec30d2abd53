"""Which GPU each of a search's concurrent trainings runs on.

A search trains a block at a time: search.block_size points, each on every subset of the search. Each training
gets one of the GPUs the search was given, through CUDA_VISIBLE_DEVICES, so that it sees that GPU alone, as
cuda:0; with fewer GPUs than trainings the block runs in rounds. Under a wall-clock budget, trainings that share
a GPU slow each other down and so change each other's accuracy: sharing happens only when a search asks for it
(search.share_gpus), and each training then records how many trainings its GPU held (HAET_GPU_SHARED_BY),
which tables show and the audit flags.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from haet.search.space import SearchError

SHARED_BY_VARIABLE = "HAET_GPU_SHARED_BY"


def given_gpus(explicit: str | None, environ: Mapping[str, str], visible_count: Callable[[], int]) -> list[str]:
    """The GPUs a search was given: an explicit comma-separated list, else CUDA_VISIBLE_DEVICES (what SLURM sets
    for a job's allocation), else every GPU this machine shows (visible_count). Empty: no GPU, trainings on CPU."""
    if explicit is not None:
        source, text = "--gpus", explicit
    elif "CUDA_VISIBLE_DEVICES" in environ:
        source, text = "CUDA_VISIBLE_DEVICES", environ["CUDA_VISIBLE_DEVICES"]
    else:
        return [str(index) for index in range(visible_count())]
    gpus = [token.strip() for token in text.split(",") if token.strip()]
    if "-1" in gpus:  # CUDA reads no further than an invalid id; -1 is how a job is given none
        gpus = gpus[: gpus.index("-1")]
    if len(set(gpus)) != len(gpus):
        raise SearchError(f"{source}={text!r} names a GPU twice; give each GPU once (share_gpus shares them)")
    return gpus


def search_gpus(device: str, explicit: str | None) -> list[str]:
    """The GPUs of a search whose trainings run on device (none for cpu), from this process's environment."""
    if device == "cpu":
        return []

    def visible_count() -> int:
        import torch

        return torch.cuda.device_count()

    return given_gpus(explicit, os.environ, visible_count)


def gpu_slots(gpus: list[str], block_trainings: int, share: bool) -> list[tuple[str, int]]:
    """The trainings a search runs at once, as (GPU, trainings that GPU holds) each; empty without GPUs (the CPU
    runs the whole block at once). Without share, a block with more trainings than GPUs runs in rounds, one
    training per GPU; with share, the whole block at once, spread over the GPUs."""
    if not gpus:
        return []
    at_once = block_trainings if share else min(block_trainings, len(gpus))
    assigned = [gpus[slot % len(gpus)] for slot in range(at_once)]
    return [(gpu, assigned.count(gpu)) for gpu in assigned]
