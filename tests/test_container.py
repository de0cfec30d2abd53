"""Stages in the pinned image through the Docker Engine API, on a real engine.

The fixtures install and configure Podman with containers/podman-setup.sh, build the local base and the project
image with `make image` (Podman's layer cache makes an unchanged rebuild take seconds), and run the default
study's jobs in the image through Snakemake. Where Podman cannot be set up the tests fail with the reason under
CI=true and skip with it elsewhere.
HAET_SKIP_CONTAINER_TESTS=1 skips them (a developer's switch; CI never sets it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, bounded_run, short_study, snakemake

from haet import HaetError
from haet.cli import main
from haet.containers import container_provenance
from haet.files import read_record

IMAGE = "localhost/haet:test"
HAET = [sys.executable, "-m", "haet"]
# Fields of a run record that may differ between two runs of the same seeds: wall-clock timings and provenance.
TIMING_KEYS = {"train_s", "eval_s", "setup_s", "longest_step_s", "images_per_s", "budget_elapsed_s"}
DIGITS_SUBSET = ["--dataset", "digits", "--train-per-class", "100", "--val-per-class", "30"]
IDENTITY_KEYS = {"provenance", "content_sha256"}  # the hash covers the provenance
# Limits far above what CI measured (a cold machine: Podman installed and set up in about 2 min, the image built
# in about 5, a study in about 5), so that only a hang reaches them.
SETUP_TIMEOUT_S, BUILD_TIMEOUT_S, STUDY_TIMEOUT_S = 900, 1800, 1200


def _say(request, line: str) -> None:
    """A line in the test log itself (CI's), not in pytest's captured output."""
    plugins = request.config.pluginmanager
    with plugins.getplugin("capturemanager").global_and_fixture_disabled():
        plugins.getplugin("terminalreporter").write_line(f"[container] {line}")


@pytest.fixture(scope="session")
def engine(request) -> dict:
    """Podman installed, configured for this machine and serving the Docker API: the variables to reach it."""
    if os.environ.get("HAET_SKIP_CONTAINER_TESTS") == "1":
        pytest.skip("HAET_SKIP_CONTAINER_TESTS=1: the developer's switch for the container tests")
    start = time.perf_counter()
    # bounded, so that an engine that hangs fails these tests instead of the CI run's time limit
    result = bounded_run(["bash", str(REPO / "containers" / "podman-setup.sh")], SETUP_TIMEOUT_S)
    if result.returncode != 0:  # as conftest's debian_tool: CI fails with the reason, a developer's run skips
        reason = f"containers/podman-setup.sh could not set up Podman: {result.stderr.strip()[-1500:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    variables = dict(
        line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines() if line.startswith("export ")
    )
    _say(request, f"podman set up in {time.perf_counter() - start:.0f} s, API at {variables['HAET_CONTAINER_SOCKET']}")
    return variables


@pytest.fixture(scope="session")
def image(request, engine) -> str:
    start = time.perf_counter()
    env = os.environ | {"CONTAINERS_CONF": engine["CONTAINERS_CONF"]}
    result = bounded_run(
        ["make", "-C", str(REPO), "image", f"IMAGE={IMAGE}", f"BASE_IMAGE={engine['HAET_BASE_IMAGE']}"],
        BUILD_TIMEOUT_S,
        env=env,
    )
    if result.returncode != 0:
        pytest.fail(f"make image failed: {(result.stdout + result.stderr).strip()[-3000:]}")
    info = _haet("container", "info", "--image", IMAGE, "--socket", engine["HAET_CONTAINER_SOCKET"])
    assert info.returncode == 0, info.stderr
    _say(request, f"image {IMAGE} built in {time.perf_counter() - start:.0f} s; " + info.stdout.replace("\n", "; "))
    return IMAGE


def test_a_native_run_says_so_and_container_variables_outside_a_container_are_refused(monkeypatch):
    for name in ("HAET_CONTAINER_ENGINE", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(name, raising=False)
    assert container_provenance() == {"engine": "none", "engine_version": None, "image": None, "image_digest": None}
    monkeypatch.setenv("HAET_CONTAINER_ENGINE", "podman")
    monkeypatch.setenv("HAET_CONTAINER_IMAGE_DIGEST", "sha256:" + "0" * 64)
    with pytest.raises(HaetError, match="HAET_CONTAINER_ENGINE is set but this process is not in a container"):
        container_provenance()
    monkeypatch.delenv("HAET_CONTAINER_ENGINE")
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/haet.sif")  # no /.singularity.d here: not believed
    assert container_provenance()["engine"] == "none"


def test_a_kubernetes_pod_records_the_image_the_workflow_passed_and_only_in_a_pod(monkeypatch, tmp_path):
    for name in ("HAET_CONTAINER_ENGINE", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(name, raising=False)
    image = "registry.example.org/haet@sha256:" + "0" * 64
    monkeypatch.setenv("HAET_CONTAINER_IMAGE", image)  # what the Snakefile passes to every pod
    monkeypatch.setenv("HAET_CONTAINER_IMAGE_DIGEST", "sha256:" + "0" * 64)
    assert container_provenance()["engine"] == "none"  # this machine's /etc/hosts is not a pod's
    pod_hosts = tmp_path / "hosts"
    pod_hosts.write_text("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    real_open = open
    monkeypatch.setattr(
        "builtins.open",
        lambda path, *args, **kwargs: real_open(pod_hosts if path == "/etc/hosts" else path, *args, **kwargs),
    )
    assert container_provenance() == {
        "engine": "kubernetes",
        "engine_version": None,
        "image": image,
        "image_digest": "sha256:" + "0" * 64,
    }


def _haet(*args: str, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*HAET, *args], capture_output=True, text=True, check=False, cwd=cwd, **kwargs)


def _study_config(engine: dict | None, path: Path) -> Path:
    """The short study (conftest), so that running it twice fits in CI; in the image when engine is given."""
    config = short_study()
    if engine:
        config["container"] = {
            "engine": "docker",
            "image": IMAGE,
            "socket": engine["HAET_CONTAINER_SOCKET"],
            "gpus": "none",
            "allow_mixed_images": False,
        }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def studies(request, engine, image, tmp_path_factory) -> dict[str, Path]:
    """The same study twice, from the same seeds: every job in the image, and natively."""
    workdirs = {}
    for name, settings in (("container", engine), ("native", None)):
        workdir = tmp_path_factory.mktemp(name)
        config = _study_config(settings, workdir / "study.yaml")
        start = time.perf_counter()
        result = snakemake(workdir, "--cores", "2", "--configfile", str(config), timeout_s=STUDY_TIMEOUT_S)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        _say(request, f"default study ({name}) in {time.perf_counter() - start:.0f} s")
        workdirs[name] = workdir
    return workdirs


def _run_records(workdir: Path) -> dict[str, dict]:
    """Every run record of a study (screening, search evaluations, augment, HPO and final runs) by path."""
    results = workdir / "results" / "default"
    paths = [path for path in sorted(results.rglob("*.json")) if '"schema": "haet/run-record/v1"' in path.read_text()]
    return {str(path.relative_to(results)): read_record(path) for path in paths}


def _comparable(record: dict) -> dict:
    """A record as two runs of the same seeds must agree on it. A submission's score under a wall-clock deadline
    depends on how fast the machine ran it, so of its record only what ran and how it ended must agree."""
    if "submission" not in record:
        return _without_timings(record)
    entry = record["submission"]
    return {"entry": entry["entry"], "outcome": entry["outcome"], "files": [f["sha256"] for f in entry["files"]],
            "model": record["model"], "subset": record["subset"]}  # fmt: skip


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_KEYS | IDENTITY_KEYS}
    if isinstance(value, list):
        return [_without_timings(item) for item in value]
    return value


def test_every_record_of_the_study_names_one_image_digest(request, studies, engine):
    records = _run_records(studies["container"])
    assert len(records) >= 20  # screening, NAS evaluations, augment, HPO and final runs
    # the leaderboard's submissions ran under the challenge's 12 GB and on their one thread's core, every other job
    # without a limit
    for key, board_limit in (("memory_limit", "12g"), ("cpu_limit", 1)):
        limits = {name: record["provenance"]["container"].pop(key) for name, record in records.items()}
        assert {limit for name, limit in limits.items() if name.startswith("leaderboard/")} == {board_limit}
        assert {limit for name, limit in limits.items() if not name.startswith("leaderboard/")} == {None}
    containers = {json.dumps(record["provenance"]["container"], sort_keys=True) for record in records.values()}
    assert len(containers) == 1, containers
    container = json.loads(containers.pop())
    assert container["engine"] == "podman" and container["image"] == IMAGE
    assert container["image_digest"].startswith("sha256:") and container["engine_version"]
    provenance = next(iter(records.values()))["provenance"]
    assert provenance["git_commit"] and provenance["python"]  # from the image's build arguments and its Python
    _say(request, "provenance of a record from the image: " + json.dumps(provenance, sort_keys=True))


def test_the_container_tables_pass_the_audit_and_name_the_image(studies, monkeypatch):
    monkeypatch.chdir(studies["container"])
    tables = sorted((studies["container"] / "results" / "default" / "tables").glob("*.json"))
    assert len(tables) == 6  # Tables 1-4 with 2a, and the leaderboard
    assert main(["report", "audit", *map(str, tables)]) == 0
    for table in tables:
        assert all(row["image"].startswith("podman ") for row in read_record(table)["rows"])


def test_container_records_equal_native_ones_apart_from_timings_and_provenance(request, studies):
    container, native = _run_records(studies["container"]), _run_records(studies["native"])
    assert container.keys() == native.keys()
    for name in container:
        assert _comparable(container[name]) == _comparable(native[name]), name
    assert {record["provenance"]["container"]["engine"] for record in native.values()} == {"none"}
    _say(request, f"{len(container)} run records equal natively and in the image, apart from timings and provenance")


def test_a_table_mixing_the_image_and_a_native_run_fails_the_audit_unless_allowed(studies, tmp_path, capsys):
    from_image = studies["container"] / "results" / "default" / "screening" / "ResNet18" / "run0.json"
    from_venv = studies["native"] / "results" / "default" / "screening" / "ResNet18" / "run1.json"
    group = ["--group", "ResNet18", str(from_image), str(from_venv)]
    assert main(["report", "table", "table1", *group, "--out-prefix", str(tmp_path / "mixed")]) == 0
    assert read_record(tmp_path / "mixed.json")["rows"][0]["image"] == "mixed"
    assert main(["report", "audit", str(tmp_path / "mixed.json")]) == 1
    assert "runs come from different images: native (1 runs), podman sha256:" in capsys.readouterr().out
    allowed = ["--out-prefix", str(tmp_path / "allowed"), "--allow-mixed-images"]
    assert main(["report", "table", "table1", *group, *allowed]) == 0
    assert main(["report", "audit", str(tmp_path / "allowed.json")]) == 0


def _subset(workdir: Path) -> Path:
    result = _haet("data", "subset", *DIGITS_SUBSET, "--out", "subset.json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "subset.json"


def _long_training_in(image: str, socket_url: str, manifest: Path) -> list[str]:
    """A launcher whose training would run for minutes: something to interrupt or kill."""
    return [
        *HAET, "container", "run", "--image", image, "--socket", socket_url, "--",
        "train", "--manifest", manifest.name, "--out", "run.json", "--model", "ResNet18", "--width", "0.25",
        "--budget-s", "300", "--workers", "0",
    ]  # fmt: skip


def test_a_stage_failing_inside_says_its_status_and_last_lines(engine, image, tmp_path):
    socket_url = engine["HAET_CONTAINER_SOCKET"]
    result = _haet(
        "container", "run", "--image", image, "--socket", socket_url, "--",
        "train", "--manifest", "missing.json", "--out", "run.json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert "`haet train` failed inside localhost/haet:test with exit status 2; last lines:" in error
    assert "missing.json" in error


@pytest.mark.parametrize(
    "signum, status, record_status", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, None)]
)
def test_ctrl_c_and_sigterm_stop_the_container_and_remove_it(engine, image, tmp_path, signum, status, record_status):
    manifest = _subset(tmp_path)
    command = _long_training_in(image, engine["HAET_CONTAINER_SOCKET"], manifest)
    launcher = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seen, deadline = b"", time.monotonic() + 120
        while b"epoch" not in seen and time.monotonic() < deadline:  # training under way: its progress bar shows
            seen += os.read(launcher.stdout.fileno(), 4096)
        assert b"epoch" in seen, seen[-2000:]
        launcher.send_signal(signum)
        assert launcher.wait(timeout=60) == status
    finally:
        launcher.kill()
    if record_status:
        assert read_record(tmp_path / "run.json")["status"] == record_status
    else:
        assert not (tmp_path / "run.json").exists()
    podman = subprocess.run(
        ["podman", "ps", "--all", "--filter", "label=org.haet.command", "--format", "{{.ID}}"],
        env=os.environ | {"CONTAINERS_CONF": engine["CONTAINERS_CONF"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert podman.stdout.strip() == ""  # removed


def test_a_container_whose_launcher_was_killed_is_removed_by_the_next_launch(engine, image, tmp_path):
    manifest = _subset(tmp_path)
    socket_url = engine["HAET_CONTAINER_SOCKET"]
    command = _long_training_in(image, socket_url, manifest)
    launcher = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    podman_env = os.environ | {"CONTAINERS_CONF": engine["CONTAINERS_CONF"]}
    ps = ["podman", "ps", "--filter", f"label=org.haet.launcher={socket.gethostname()}:{launcher.pid}", "-q"]
    deadline = time.monotonic() + 60
    while not subprocess.run(ps, env=podman_env, capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the container never started"
        time.sleep(0.2)
    launcher.kill()  # SIGKILL: the launcher cannot stop its container
    launcher.wait()
    assert subprocess.run(ps, env=podman_env, capture_output=True, text=True).stdout.strip()  # left running
    assert _haet("container", "run", "--image", image, "--socket", socket_url, "--", "--version").returncode == 0
    assert not subprocess.run([*ps, "-a"], env=podman_env, capture_output=True, text=True).stdout.strip()


def test_clear_errors_for_a_missing_socket_a_dead_socket_and_a_missing_image(engine, image, tmp_path):
    def error(*args: str) -> str:
        result = _haet("container", "run", *args, "--", "models", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    assert "no container engine socket at" in error("--image", image, "--socket", f"unix://{tmp_path}/none.sock")
    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(dead))  # bound, never listening: connections are refused
        assert "nothing answers on" in error("--image", image, "--socket", f"unix://{dead}")
    live = engine["HAET_CONTAINER_SOCKET"]
    missing = error("--image", "localhost/haet:absent", "--socket", live)
    assert "image localhost/haet:absent is not in the engine: build it with `make image" in missing
    gone = error("--image", image, "--socket", live, "--data-root", str(tmp_path / "nowhere"))
    assert f"data root {tmp_path / 'nowhere'} does not exist" in gone
    refused = error("--image", image, "--socket", live, "--gpus", "all")  # GPUs asked for, none on this host
    assert refused.startswith("haet: error: the engine refused to create the container: ")
    assert "nvidia.com/gpu=all" in refused  # the engine's own message


def test_data_roots_are_read_only_and_the_working_folder_is_writable(engine, image, tmp_path):
    root, work = tmp_path / "data", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    base = ["container", "run", "--image", image, "--socket", engine["HAET_CONTAINER_SOCKET"], "--data-root", str(root)]
    into_root = _haet(*base, "--", "data", "subset", *DIGITS_SUBSET, "--out", str(root / "s.json"), cwd=work)
    assert into_root.returncode != 0 and "Read-only file system" in into_root.stdout + into_root.stderr
    assert not (root / "s.json").exists()
    into_work = _haet(*base, "--", "data", "subset", *DIGITS_SUBSET, "--out", "s.json", cwd=work)
    assert into_work.returncode == 0, into_work.stderr
    assert (work / "s.json").stat().st_uid == os.getuid()  # written as the host's user


def test_a_submissions_processes_run_in_the_image_seeing_their_work_folder_alone_and_within_its_envelope(
    engine, image, tmp_path
):
    """issue 23: with --image, train and predict each run in a container with the work folder alone mounted (the
    manifest beside it is out of sight) under the engine's memory and CPU limits; a run killed for memory is its
    own outcome, and the record names the image and the limits."""
    manifest = _subset(tmp_path)
    (tmp_path / "hog.py").write_text(
        "import os\n"
        "def train(images, labels, num_classes, device, deadline, hand_in):\n"
        f"    hand_in({{'label': 0, 'sees_manifest': os.path.exists({str(manifest)!r})}})\n"
        "    hog = [bytearray(50_000_000) for _ in range(40)]  # 2 GB\n"
        "def predict(model, images):\n    return [model['label']] * len(images)\n"
    )
    work = tmp_path / "work"
    result = _haet(
        "challenge", "run", "--image", image, "--socket", engine["HAET_CONTAINER_SOCKET"], "--memory", "768m",
        "--cpus", "1", "--gpus", "none", "--submission", "hog.py", "--manifest", manifest.name, "--out", "run.json",
        "--budget-s", "30", "--threads", "1", "--work", str(work), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    record = read_record(tmp_path / "run.json")
    assert record["submission"]["outcome"] == "out-of-memory", record["submission"]
    assert record["submission"]["message"] == "over the container's memory limit of 768 MiB; killed"
    container = record["provenance"]["container"]
    assert container["engine"] == "podman" and container["image"] == IMAGE
    assert container["memory_limit"] == "768m" and container["cpu_limit"] == 1.0
    import torch

    assert torch.load(work / "kept" / "model.pt", weights_only=False)["sees_manifest"] is False
    assert record["metrics"]["val_acc_final"] > 0  # the model handed in before the kill was scored, in the image


def test_a_stage_over_the_containers_memory_limit_fails_in_one_line_naming_the_limit(engine, image, tmp_path):
    result = _haet(
        "container", "run", "--image", image, "--socket", engine["HAET_CONTAINER_SOCKET"], "--memory", "48m",
        "--", "models", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 137, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        "haet: error: `haet models` was killed for memory inside localhost/haet:test: it went over the container's "
        "limit of 48m (container.memory, or --memory)"
    ), lines


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("reads_answers", lambda record, work, tmp: _model(work)["found"] == []),
        ("patches_harness", lambda record, work, tmp: not (tmp / "marker").exists()),
        ("pickle_runs_code", lambda record, work, tmp: not (tmp / "marker").exists()),
        ("daemon", lambda record, work, tmp: (work / "predict-files" / "tag.txt").read_text() == "on-time"),
        ("rewrites_clock", lambda record, work, tmp: record["submission"]["outcome"] == "no-model"
         and record["submission"]["late_hand_ins"] >= 1),
        ("swaps_predictions", lambda record, work, tmp: record["submission"]["outcome"] == "bad-predict"),
        ("network", lambda record, work, tmp: _model(work)["connected"] is False),
    ],
)  # fmt: skip
def test_hostile_submissions_meet_the_same_walls_in_the_image(engine, image, tmp_path, name, check):
    """tests/test_hostile.py's submissions through --image: the container is their sandbox, the supervisor and
    its checks the same code."""
    from conftest import hostile, processes_with

    manifest = _subset(tmp_path)
    token = f"{time.time_ns() % 10**6 + 1000}.75"
    home_file = tmp_path / "home-file"  # under the host's /tmp, which its container does not mount
    path = hostile(tmp_path, name, MANIFEST=manifest, REPOSITORY=REPO, HOME_FILE=home_file, MARKER=tmp_path / "marker",
                   TOKEN=token, MODE="symlink", PORT=9)  # fmt: skip
    home_file.write_text("the harness's")
    work = tmp_path / "work"
    result = _haet(
        "challenge", "run", "--image", image, "--socket", engine["HAET_CONTAINER_SOCKET"], "--gpus", "none",
        "--submission", path.name, "--manifest", manifest.name, "--out", "run.json", "--budget-s", "2",
        "--grace-s", "1", "--work", str(work), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    record = read_record(tmp_path / "run.json")
    assert record["submission"]["sandbox"] == "container" and record["budget"]["clock"] == "cpu"
    assert check(record, work, tmp_path), record["submission"]
    assert processes_with(f"sleep\0{token}") == []


def _model(work: Path) -> dict:
    import torch

    return torch.load(work / "kept" / "model.pt", weights_only=False)
