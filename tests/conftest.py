"""Fixtures that write tiny datasets in the exact on-disk formats the loaders read."""

from __future__ import annotations

import os
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CIFAR_FOLDER = REPO.parent / "shared" / "data" / "cifar10"

needs_real_cifar = pytest.mark.skipif(
    not (CIFAR_FOLDER / "train").is_dir(),
    reason=f"real CIFAR-10 ImageFolder not found at {CIFAR_FOLDER} (only present on the project's machines)",
)


def snakemake(
    workdir: Path, *args: str, env: dict | None = None, timeout_s: float | None = None
) -> subprocess.CompletedProcess:
    """The workflow as a user runs it, from the repository's Snakefile, in workdir, with this venv's tools.
    timeout_s turns a hang into a test failure that shows what the run printed so far."""
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(workdir)} | (env or {})
    command = [str(bin_dir / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "-d", str(workdir)]
    return bounded_run(command + list(args), timeout_s, env=env)


def bounded_run(command: list[str], timeout_s: float | None, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run with its output captured, failing the test (with the output so far) past timeout_s."""
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout_s, **kwargs)
    except subprocess.TimeoutExpired as exc:
        printed = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else part
            for part in (exc.stdout, exc.stderr)
            if part
        )
        pytest.fail(f"{shlex.join(command)} did not finish in {timeout_s:g} s; it printed:\n{printed[-3000:]}")


def jobs_run(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints: rule -> number of jobs."""
    lines = output.splitlines()
    start = lines.index("Job stats:") + 3  # title, header, rule line
    stats = {}
    for line in lines[start:]:
        name, count = line.split()
        if name == "total":
            return stats
        stats[name] = int(count)
    raise AssertionError("no total line in the job stats")


def random_images(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def write_cifar_batches(root: Path, per_batch: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The official python layout: dicts with bytes keys, data rows as R plane, G plane, B plane.

    Returns the train images and labels as the loader should give them back.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_images, train_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = random_images(rng, per_batch, 32)
        labels = [int(i % 10) for i in range(per_batch)]
        data = images.transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        if name != "test_batch":
            train_images.append(images)
            train_labels.extend(labels)
    meta = {
        b"label_names": [
            b"airplane",
            b"automobile",
            b"bird",
            b"cat",
            b"deer",
            b"dog",
            b"frog",
            b"horse",
            b"ship",
            b"truck",
        ],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return np.concatenate(train_images), np.asarray(train_labels)


def write_imagefolder(
    root: Path,
    classes: dict[str, int],
    size: int = 32,
    split: str = "train",
    suffix: str = ".png",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """root/<split>/<class>/<nnnn><suffix>; returns each class's images in file order."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in classes.items():
        folder = root / split / name
        folder.mkdir(parents=True)
        images = random_images(rng, count, size)
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{i:04d}{suffix}")
        written[name] = images
    return written


def write_mini_imagenet_cache(
    path: Path, class_ids: list[str], per_class: int, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """mini-imagenet-cache-train.pkl: {'image_data': uint8 N x 84 x 84 x 3, 'class_dict': {id: [rows]}}.

    Rows of a class are interleaved with other classes' rows, so a loader must follow class_dict.
    """
    rng = np.random.default_rng(seed)
    total = per_class * len(class_ids)
    image_data = random_images(rng, total, 84)
    order = rng.permutation(total)
    class_dict = {cid: [int(r) for r in order[i :: len(class_ids)]] for i, cid in enumerate(class_ids)}
    path.write_bytes(pickle.dumps({"image_data": image_data, "class_dict": class_dict}, protocol=4))
    return image_data, class_dict


@pytest.fixture
def cifar_batches(tmp_path: Path):
    images, labels = write_cifar_batches(tmp_path / "cifar")
    return tmp_path / "cifar", images, labels


def short_study() -> dict:
    """The default study with epoch budgets (the trainer is deterministic there on CPU), two models and fewer
    search evaluations: the whole workflow in about two minutes on 2 cores."""
    config = yaml.safe_load((REPO / "workflow" / "config" / "default.yaml").read_text())
    config["screening"]["models"] = ["ResNet18", "SENet18"]
    config["subsets"]["runs"] = config["final"]["subsets"]["runs"] = 2
    config["nas"]["subsets"] = 1
    for section in ("augment", "hpo"):
        config[section]["runs"] = 2
    config["screening"]["train"]["budget"] = {"seconds": None, "max_epochs": 1, "eval_every_epochs": 1}
    for section in ("augment", "hpo", "final"):
        config[section]["train"] = config[section]["train"] | {"budget": {"seconds": None, "max_epochs": 1}}
    config["nas"]["search"]["max_evaluations"] = 3
    config["hpo"]["search"]["max_evaluations"] = 2
    # each entry once, shortly: 1.5 CPU s, in which the two references hand in nothing and the example finishes,
    # whatever the machine (a budget near an epoch of one would end it either way by a hair)
    config["leaderboard"] |= {"runs": 1, "budget_s": 1.5, "grace_s": 2}
    return config


def hostile(tmp_path: Path, name: str, **values: object) -> Path:
    """tests/hostile/NAME.py, a hostile submission, with its @PLACEHOLDERS@ filled in, written to tmp_path."""
    source = (REPO / "tests" / "hostile" / f"{name}.py").read_text()
    for key, value in values.items():
        source = source.replace(f"@{key}@", str(value))
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return path


def processes_with(token: str) -> list[int]:
    """The processes of this machine whose command line holds token."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # ended while we looked
                pass
    return found


def debian_tool(command: str, package: str) -> str:
    """A program from Debian: installed when missing and apt can (CI runs as root); else the test says why."""
    if not shutil.which(command) and shutil.which("apt-get") and os.geteuid() == 0:
        install = ["apt-get", "install", "-y", "-q", package]
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(install, capture_output=True, timeout=900, env=env).returncode != 0:  # stale package lists
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300, env=env)
            subprocess.run(install, capture_output=True, timeout=900, env=env)
    if not shutil.which(command):
        if os.environ.get("CI"):
            pytest.fail(f"{command} is not installed and apt-get could not install {package}")
        pytest.skip(f"no {command}: apt-get install {package}")
    return shutil.which(command)
