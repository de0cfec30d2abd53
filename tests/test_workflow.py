"""The Snakemake workflow as a user runs it, in a scratch working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

from haet.data.subsets import read_manifest


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(workdir)}
    command = [str(bin_dir / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "1"]
    return subprocess.run(command + list(args), env=env, capture_output=True, text=True, check=False)


def test_default_workflow_writes_one_manifest_per_run_and_an_unchanged_rerun_does_nothing(tmp_path):
    first = snakemake(tmp_path)
    assert first.returncode == 0, first.stderr
    manifests = sorted((tmp_path / "results" / "default" / "subsets").glob("run*.json"))
    assert [m.name for m in manifests] == ["run0.json", "run1.json"]
    runs = [read_manifest(m) for m in manifests]
    assert runs[0]["train"]["indices"] != runs[1]["train"]["indices"]
    again = snakemake(tmp_path)
    assert again.returncode == 0 and "Nothing to be done" in again.stderr
