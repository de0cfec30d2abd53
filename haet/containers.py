"""Run one `haet` command inside the pinned image through the Docker Engine API (Docker, or Podman's service).

The study's working folder is mounted read-write at its own path and every data root read-only at its own path,
so the paths Snakemake passes mean the same inside and out. The command runs as the host's uid:gid, with no
network, and the container is removed afterwards whatever happens. What the image is (its content digest) and
which engine ran it go into the container's environment, where the run record's provenance picks them up.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import signal
import socket
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from haet import HaetError

GPU_CHOICES = ("auto", "all", "none")
LAUNCHER_LABEL = "org.haet.launcher"  # host:pid of the `haet container run` that owns a container
# Passed from the host into the container when set: which GPUs a job was given, and thread limits.
# HAET_GPU_SHARED_BY: how many trainings share the GPU (a search's, or the fidelity study's epoch-budget runs)
FORWARDED_VARIABLES = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "HAET_GPU_SHARED_BY")
# The init an engine starts as PID 1 with `init=True`: Podman's (catatonit) and Docker's (tini).
INITS = ("podman-init", "catatonit", "docker-init", "tini")
STOP_GRACE_S = 30  # after forwarding SIGTERM/SIGINT, how long the command gets to write its record
TAIL_LINES = 20


class ContainerError(HaetError):
    """The engine or the image failed us; the message names the fix."""


class StageFailed(ContainerError):
    """The command ran in the container and exited non-zero; the CLI exits with the same status."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    socket: str  # unix:///path/to/docker.sock (Docker) or the socket of `podman system service`
    workdir: Path  # mounted read-write at its own path; the command runs there
    data_roots: tuple[Path, ...] = field(default=())  # mounted read-only at their own paths
    gpus: str = "auto"  # auto: pass every GPU through when the host has one
    # The engine's limits on the container (None: none): memory as the engine takes it ("12g", swap included, so
    # no swapping past it) and CPUs as a number of cores; the HAET machine's envelope was 12 GB and one Xeon.
    memory: str | None = None
    cpus: float | None = None


def _socket_path(socket_url: str) -> Path:
    parsed = urlparse(socket_url)
    if parsed.scheme != "unix":
        raise ContainerError(
            f"container socket {socket_url!r} is not a unix:// address (e.g. unix:///var/run/docker.sock)"
        )
    return Path(parsed.path)


def connect(socket_url: str):  # -> docker.DockerClient
    """A client for the engine on `socket_url`, checked to answer; one-line errors for the two ways it does not."""
    import docker
    import docker.errors

    path = _socket_path(socket_url)
    if not path.exists():
        raise ContainerError(
            f"no container engine socket at {path}: start Docker, or Podman's API with `podman system service "
            f"--time=0 {socket_url} &` (containers/podman-setup.sh does it), or set container.socket"
        )
    try:
        client = docker.DockerClient(base_url=socket_url, timeout=30)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise ContainerError(
            f"nothing answers on {socket_url} ({type(exc).__name__}): the engine behind the socket is not running; "
            "restart it (`systemctl start docker`, or rerun containers/podman-setup.sh)"
        ) from None
    client.api.timeout = None  # a stage may print nothing for a long time; its log stream must not time out
    return client


def engine_identity(client) -> dict:
    """The engine's name (docker or podman) and version, from its /version endpoint."""
    version = client.version()
    names = " ".join(component.get("Name", "") for component in version.get("Components") or [])
    return {"engine": "podman" if "podman" in names.lower() else "docker", "engine_version": version.get("Version")}


def image_identity(client, image: str) -> dict:
    """The image's content digest: its repo digest where it has one, else its image id."""
    import docker.errors

    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ContainerError(
            f"image {image} is not in the engine: build it with `make image IMAGE={image}` "
            "(containers/README.md) or pull it"
        ) from None
    except docker.errors.APIError as exc:
        raise ContainerError(f"the engine could not look up image {image}: {exc.explanation or exc}") from None
    repo_digests = found.attrs.get("RepoDigests") or []
    digest = repo_digests[0].rpartition("@")[2] if repo_digests else found.id
    return {"image": image, "image_digest": digest, "image_id": found.id}


def _launched_by_haet() -> bool:
    """True in a container `run` started: an engine's init is PID 1 and runs haet. (Marker files such as
    /.dockerenv are not enough: some hosts are themselves built from images and carry one.)"""
    try:
        argv = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.path.basename(argv[0]).decode(errors="replace") in INITS and b"haet" in argv[1:]


def container_provenance() -> dict:
    """What the current process runs in, for the run record: the engine and image the launcher passed in, an
    Apptainer image, a Kubernetes pod of the image the workflow passed in, or `none`. The variables alone are not
    believed: the container's own marker must exist."""
    engine = os.environ.get("HAET_CONTAINER_ENGINE")
    if engine:
        if not _launched_by_haet():
            raise HaetError("HAET_CONTAINER_ENGINE is set but this process is not in a container: unset it")
        return {
            "engine": engine,
            "engine_version": os.environ.get("HAET_CONTAINER_ENGINE_VERSION") or None,
            "image": os.environ.get("HAET_CONTAINER_IMAGE") or None,
            "image_digest": os.environ.get("HAET_CONTAINER_IMAGE_DIGEST") or None,
            "memory_limit": os.environ.get("HAET_CONTAINER_MEMORY") or None,
            "cpu_limit": float(os.environ["HAET_CONTAINER_CPUS"]) if os.environ.get("HAET_CONTAINER_CPUS") else None,
        }
    apptainer_image = os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
    if apptainer_image and Path("/.singularity.d").is_dir():
        return {
            "engine": "apptainer",
            "engine_version": None,
            "image": os.environ.get("HAET_CONTAINER_IMAGE") or apptainer_image,
            "image_digest": os.environ.get("HAET_CONTAINER_IMAGE_DIGEST") or None,  # set from a digest-pinned ref
        }
    if os.environ.get("HAET_CONTAINER_IMAGE") and _in_a_kubernetes_pod():  # a pod of the Kubernetes profile
        return {
            "engine": "kubernetes",
            "engine_version": None,
            "image": os.environ["HAET_CONTAINER_IMAGE"],
            "image_digest": os.environ.get("HAET_CONTAINER_IMAGE_DIGEST") or None,  # set from a digest-pinned ref
        }
    return {"engine": "none", "engine_version": None, "image": None, "image_digest": None}


def _in_a_kubernetes_pod() -> bool:
    """The kubelet writes every pod's /etc/hosts and says so in its first line (a variable could be set anywhere)."""
    try:
        with open("/etc/hosts", encoding="utf-8", errors="replace") as hosts:
            return "Kubernetes-managed hosts file" in hosts.readline()
    except OSError:
        return False


def _host_has_gpu() -> bool:
    return Path("/dev/nvidiactl").exists()


def _gpu_options(gpus: str, engine: str) -> dict:
    import docker.types

    if gpus not in GPU_CHOICES:
        raise ContainerError(f"container gpus must be one of {', '.join(GPU_CHOICES)}, got {gpus!r}")
    if gpus == "none" or (gpus == "auto" and not _host_has_gpu()):
        return {}
    if engine == "podman":  # Podman passes GPUs as a CDI device (nvidia-ctk cdi generate on the host)
        return {"devices": ["nvidia.com/gpu=all"]}
    return {"device_requests": [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]}


def _mounts(spec: ContainerSpec) -> dict:
    workdir = spec.workdir.resolve()
    volumes = {str(workdir): {"bind": str(workdir), "mode": "rw"}}
    for root in spec.data_roots:
        if not root.exists():
            raise ContainerError(f"data root {root} does not exist: fix data.root (or final.data.root) in the config")
        resolved = root.resolve()
        if not resolved.is_relative_to(workdir):  # inside the working folder it is mounted already
            volumes[str(resolved)] = {"bind": str(resolved), "mode": "ro"}
    return volumes


def _remove_orphans(client) -> None:
    """Stop and remove containers whose launcher on this host is gone (killed with SIGKILL, so it could not):
    they would otherwise go on writing into the study that a rerun is about to redo."""
    import docker.errors

    host = socket.gethostname()
    for container in client.containers.list(all=True, filters={"label": LAUNCHER_LABEL}):
        launcher_host, _, pid = container.labels.get(LAUNCHER_LABEL, "").rpartition(":")
        if launcher_host != host or not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)


def _create(client, spec: ContainerSpec, args: list[str], env: dict | None = None, extra: dict | None = None):
    """The container of `haet ARGS` (created, not started) and what ran it: the engine and the image's digest.
    env and extra: more variables and more of the engine's create options (a challenge stage's limits)."""
    import docker.errors

    engine = engine_identity(client)
    identity = image_identity(client, spec.image)
    environment = {name: os.environ[name] for name in FORWARDED_VARIABLES if name in os.environ}
    environment |= {
        "HOME": "/tmp",  # the host's uid has no home in the image
        "HAET_CONTAINER_ENGINE": engine["engine"],
        "HAET_CONTAINER_ENGINE_VERSION": engine["engine_version"] or "",
        "HAET_CONTAINER_IMAGE": spec.image,
        "HAET_CONTAINER_IMAGE_DIGEST": identity["image_digest"],
        "HAET_CONTAINER_MEMORY": spec.memory or "",
        "HAET_CONTAINER_CPUS": "" if spec.cpus is None else f"{spec.cpus:g}",
    }
    environment |= env or {}
    limits = {"mem_limit": spec.memory, "memswap_limit": spec.memory} if spec.memory else {}
    limits |= {"nano_cpus": round(spec.cpus * 1e9)} if spec.cpus else {}
    limits |= extra or {}
    try:
        container = client.containers.create(
            identity["image_id"],
            command=list(args),
            user=f"{os.getuid()}:{os.getgid()}",
            working_dir=str(spec.workdir.resolve()),
            volumes=_mounts(spec),
            environment=environment,
            network_mode="none",  # nothing downloads at run time
            init=True,  # an init as PID 1 passes SIGTERM/SIGINT on to haet
            shm_size="1g",  # DataLoader workers share batches through /dev/shm
            labels={"org.haet.command": " ".join(args)[:200], LAUNCHER_LABEL: f"{socket.gethostname()}:{os.getpid()}"},
            **_gpu_options(spec.gpus, engine["engine"]),
            **limits,
        )
    except docker.errors.APIError as exc:
        raise ContainerError(f"the engine refused to create the container: {exc.explanation or exc}") from None
    ran_in = {
        "engine": engine["engine"],
        "engine_version": engine["engine_version"],
        "image": spec.image,
        "image_digest": identity["image_digest"],
        "memory_limit": spec.memory,
        "cpu_limit": spec.cpus,
    }
    return container, ran_in


class Detached:
    """`haet ARGS` in the image in the background, polled, waited for and killed as a child process is (exit
    status 137, a SIGKILL, reads as -9): the challenge's train and predict processes, each in a container of its
    own with spec.workdir alone mounted."""

    def __init__(self, spec: ContainerSpec, args: list[str], log: Path, env: dict | None = None,
                 extra: dict | None = None):  # fmt: skip
        self.client = connect(spec.socket)
        _remove_orphans(self.client)
        self.container, self.ran_in = _create(self.client, spec, args, env, extra)
        self.container.start()
        self.log, self.returncode, self.out_of_memory = log, None, False

    def poll(self) -> int | None:
        if self.returncode is None:
            self.container.reload()
            state = self.container.attrs.get("State", {})
            if not state.get("Running") and state.get("Status") not in ("created", "configured", "initialized"):
                self._finish(state.get("ExitCode", 1))
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self._finish(self.container.wait()["StatusCode"])
        return self.returncode

    def kill(self) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):  # gone already
            self.container.kill()

    def _finish(self, status: int) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):
            self.container.reload()
            self.out_of_memory = bool(self.container.attrs.get("State", {}).get("OOMKilled"))
            self.log.write_bytes(self.container.logs(tail=TAIL_LINES * 10))
            self.container.remove(force=True)
        self.returncode = -signal.SIGKILL if status == 137 else status


# Where the image keeps the embedded datasets' files (containers/Dockerfile): an empty folder in a submission's
EMBEDDED_DATA = "/opt/haet/embedded-data"


class ContainerStage:
    """A challenge stage (train or predict) in a container of the image, as haet.challenge.sandbox runs one
    natively: its folder alone mounted (a tmpfs of the disk limit), no network, the engine's memory, process, file
    size and CPU limits; CPU seconds from the engine's count of the container, frozen with pause, and every process
    of it gone with the container."""

    kind = "container"
    inside_cpu_stat = "auto"  # the child finds its container's cgroup count (haet.challenge.child.read_cpu_s)

    def __init__(self, folder: Path, spec: ContainerSpec, limits):
        from haet.challenge.sandbox import mount_tmpfs

        mount_tmpfs(folder, limits.disk_bytes)
        self.folder, self.limits, self.process, self.killed, self.last_cpu_s = folder, limits, None, False, 0.0
        memory = spec.memory or f"{limits.memory_bytes // 2**20}m"
        self.spec = replace(spec, cpus=spec.cpus or limits.cores, memory=memory)

    def launch(self, args: list[str], log: Path, env: dict[str, str]) -> Detached:
        # no file-size ulimit: given any ulimit, Podman also sets its default open-files and process limits, which
        # a host without CAP_SYS_RESOURCE may not (runc: "error setting rlimits"); the folder's tmpfs bounds a file
        extra = {"pids_limit": self.limits.processes, "tmpfs": {EMBEDDED_DATA: "ro,size=4k,notmpcopyup"}}
        self.process = Detached(self.spec, args, log, env, extra)
        self.ran_in = self.process.ran_in
        return self.process

    def cpu_s(self) -> float:
        """The container's CPU seconds (the last count once it has ended)."""
        import docker.errors

        if self.process.returncode is None:  # a container ending as it is asked answers nothing, or no JSON
            with contextlib.suppress(docker.errors.APIError, KeyError, TypeError, ValueError):
                stats = self.process.container.stats(stream=False, one_shot=True)
                self.last_cpu_s = stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9
        return self.last_cpu_s

    def freeze(self) -> None:
        import docker.errors

        if self.process.poll() is None:
            with contextlib.suppress(docker.errors.APIError):  # it ended just now: nothing left to freeze
                self.process.container.pause()

    def thaw(self) -> None:
        import docker.errors

        if self.process.returncode is None:
            with contextlib.suppress(docker.errors.APIError):
                self.process.container.unpause()

    def limit_hit(self) -> str | None:
        """memory where the engine says so, or for a SIGKILL the harness did not send under a memory limit (Podman
        leaves OOMKilled false when the kernel kills a process under the container's init)."""
        unsent_kill = not self.killed and self.process.returncode == -signal.SIGKILL and self.spec.memory
        return "memory" if self.process.out_of_memory or unsent_kill else None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.killed = True
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        from haet.challenge.sandbox import unmount

        try:
            self.stop()
        finally:
            unmount(self.folder)


def run(spec: ContainerSpec, args: list[str], output: BinaryIO | None = None) -> int:
    """Run `haet ARGS` in the image; stream its output; return its exit status. Ctrl-C and SIGTERM reach it."""
    import docker.errors
    import requests

    output = output or sys.stdout.buffer
    client = connect(spec.socket)
    _remove_orphans(client)
    container, _ = _create(client, spec, args)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def forward(signum, frame):
        with contextlib.suppress(docker.errors.APIError):  # it may have exited already
            container.kill(signal=signal.Signals(signum).name)

    handlers = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        container.start()
        pending = b""
        for chunk in container.logs(stream=True, follow=True):
            output.write(chunk)
            output.flush()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            tail.extend(line.decode(errors="replace") for line in lines)
        if pending:
            tail.append(pending.decode(errors="replace"))
        status = _wait(container)
        container.reload()
        # Podman leaves OOMKilled false when the kernel kills a process under the container's init, which then exits
        # 137: with a memory limit set, a SIGKILL nobody here sent is the limit's
        out_of_memory = bool(container.attrs.get("State", {}).get("OOMKilled")) or (spec.memory and status == 137)
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        explanation = getattr(exc, "explanation", None) or exc
        raise ContainerError(f"the engine failed while running the container: {explanation}") from None
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        with contextlib.suppress(docker.errors.APIError):  # already gone
            container.remove(force=True)
    command = " ".join(itertools.takewhile(lambda word: not word.startswith("-"), args))
    if out_of_memory and status not in (0, 130):  # a child killed for memory in a command that went on is its own
        raise StageFailed(
            f"`haet {command}` was killed for memory inside {spec.image}: it went over the container's limit of "
            f"{spec.memory} (container.memory, or --memory)",
            status or 137,
        )
    if status not in (0, 130):
        last = " | ".join(line.strip() for line in tail if line.strip())[-600:]
        raise StageFailed(
            f"`haet {command}` failed inside {spec.image} with exit status {status}; last lines: {last}",
            status,
        )
    return status


def _wait(container) -> int:
    import requests

    try:
        return container.wait(timeout=STOP_GRACE_S)["StatusCode"]
    except requests.exceptions.RequestException:  # still running after its output closed: stop it
        container.kill()
        return container.wait(timeout=STOP_GRACE_S)["StatusCode"]
