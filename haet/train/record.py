"""Run records: the provenance every run carries, the schema it must meet, and reading and writing."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import torch

from haet import __version__
from haet.containers import container_provenance
from haet.files import write_record
from haet.records import validate_run_record

PACKAGES = ("torch", "torchvision", "numpy", "PyNomadBBO", "haet")


def _version(package: str) -> str | None:
    # torch's and torchvision's __version__ carry the build variant (2.14.1+cu130), which their metadata lacks.
    # torchvision's is read from its version.py: importing it costs a training process about 2 s (torch._dynamo).
    if package == "torch":
        return __import__(package).__version__
    if package == "torchvision":
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            version_file = Path(spec.submodule_search_locations[0]) / "version.py"
            found = re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", version_file.read_text(), re.MULTILINE)
            if found:
                return found.group(1)
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    source = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_assignment() -> dict:
    """The GPU this training was given (CUDA_VISIBLE_DEVICES, None: not set) and how many trainings it held: more
    than 1 only where a search was asked to share GPUs (it sets HAET_GPU_SHARED_BY)."""
    shared_by = os.environ.get("HAET_GPU_SHARED_BY", "1")
    return {
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "trainings_sharing": int(shared_by) if shared_by.isdigit() and int(shared_by) >= 1 else 1,
    }


def provenance(device: str) -> dict:
    """Where and with what a run ran: versions, commit, hardware, container."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if commit else None  # untracked source counts: HEAD lacks it
    dirty = None if status is None else bool(status)
    if commit is None:  # an installed image has no .git: its build recorded the commit it was built from
        commit = os.environ.get("HAET_GIT_COMMIT") or None
        dirty = {"true": True, "false": False}.get(os.environ.get("HAET_GIT_DIRTY", ""))
    on_cuda = device.startswith("cuda")
    return {
        "haet_version": __version__,
        "packages": {package: _version(package) for package in PACKAGES},
        "python": platform.python_version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device)) if on_cuda else _cpu_name(),
        "cuda_version": torch.version.cuda if on_cuda else None,
        "cudnn_version": torch.backends.cudnn.version() if on_cuda else None,
        "gpu": gpu_assignment() if on_cuda else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "hostname": platform.node(),
        "container": container_provenance(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_run_record(body: dict, path: str | Path, container: dict | None = None) -> dict:
    """Add provenance, validate against the schema, and write atomically with the content hash. container: what the
    run ran in when that was not this process (a challenge submission's containers)."""
    record = body | {
        "provenance": provenance(body["runtime"]["device"]) | ({"container": container} if container else {})
    }
    validate_run_record(record)
    return write_record(path, record)
