"""Where a submission's process runs natively: bubblewrap's new PID, mount, network, IPC and UTS namespaces with
no capabilities, a file system of the system's libraries and the Python environment read-only, one writable
folder (the run's, a size-limited tmpfs seen inside as /haet/work) and a private /tmp; inside a cgroup of its own
that counts the CPU seconds of every process in it, caps its memory, processes and CPU cores, and is frozen and
killed whole. What the harness does not show it cannot reach: results/, the data roots, the manifests, the
repository (only its haet/ package), $HOME, the network, and the files the embedded datasets are read from.

Linux only; needs bwrap (Debian's bubblewrap) and a writable cgroup v2 hierarchy with cgroup.kill (kernel 5.14),
memory and pids controllers there or in cgroup v1 (a hybrid host), and the right to mount a tmpfs: root, as CI
and the challenge's machine run. SandboxError says which part is missing; `--unsandboxed` runs without it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from haet import HaetError

INSIDE = Path("/haet")
INSIDE_WORK = INSIDE / "work"
INSIDE_CPU_STAT = INSIDE / "cpu.stat"  # the cgroup's CPU count, read by a submission's clock (haet.challenge.clock)
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
# /etc holds secrets a root without capabilities may still read (shadow): only what the loader and libc need
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf", "localtime", "hosts")
KILL_WAIT_S = 10.0
CPU_PERIOD_US = 100_000
MAX_FILES = 65_536  # a stage folder's files and folders (its tmpfs's inodes)


class SandboxError(HaetError):
    pass


@dataclass(frozen=True)
class Limits:
    """A run's envelope (the challenge's machine had 12 GB of memory)."""

    memory_bytes: int = 12 * 2**30
    processes: int = 512  # threads count: torch's pool, the loader's workers
    file_bytes: int = 2 * 2**30  # any one file it writes (its logs too)
    disk_bytes: int = 4 * 2**30  # its writable folder, a tmpfs (charged to its memory)
    cores: int | None = None  # a CPU quota of this many cores (None: no quota)


def parse_bytes(text: str) -> int:
    """A size as container engines write it: 12g, 768m, 4096k, 1000000 (bytes)."""
    units = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    value = str(text).strip().lower()
    try:
        size = float(value[:-1]) * units[value[-1]] if value and value[-1] in units else float(value)
    except ValueError:
        size = -1
    if size < 1:
        raise SandboxError(
            f"a size is a positive number with an optional unit b, k, m, g or t (12g, 768m), not {text!r}"
        )
    return int(size)


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, file system type, super options) of this process's mounts."""
    mounts = []
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        fields = line.split()
        separator = fields.index("-")
        mounts.append((fields[4], fields[separator + 1], fields[separator + 3] if len(fields) > separator + 3 else ""))
    return mounts


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup paths: "" for v2, each v1 controller by name."""
    paths = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _v1_dir(controller: str, mounts: list, own: dict) -> Path | None:
    for point, kind, options in mounts:
        if kind == "cgroup" and controller in options.split(","):
            return Path(point) / own.get(controller, "/").lstrip("/")
    return None


class Cgroup:
    """One run's cgroup. cgroup v2 counts CPU seconds (cpu.stat), freezes and kills; memory, pids and the CPU
    quota come from v2 where those controllers are on here, else from the v1 hierarchies of a hybrid host."""

    def __init__(self, limits: Limits):
        mounts, own = _mounts(), _own_cgroups()
        v2 = next((Path(point) for point, kind, _ in mounts if kind == "cgroup2"), None)
        if v2 is None:
            raise SandboxError(
                "no cgroup v2 hierarchy is mounted here (the sandbox counts CPU seconds and kills with it)"
            )
        name = f"haet-{uuid.uuid4().hex[:12]}"
        self.dirs: list[Path] = []
        self.v2 = self._make(v2 / own.get("", "/").lstrip("/") / name)
        if not (self.v2 / "cgroup.kill").exists():
            self.close()
            raise SandboxError("this kernel's cgroup v2 has no cgroup.kill (Linux 5.14): the sandbox cannot kill whole")
        self.limit_files: dict[str, Path] = {}
        try:
            self._limit("memory", limits.memory_bytes, ("memory.max", "memory.swap.max"),
                        ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"), mounts, own, name)  # fmt: skip
            self._limit("pids", limits.processes, ("pids.max",), ("pids.max",), mounts, own, name)
            if limits.cores:
                quota = round(limits.cores * CPU_PERIOD_US)
                self._limit("cpu", quota, ("cpu.max",), ("cpu.cfs_quota_us",), mounts, own, name)
        except BaseException:
            self.close()
            raise

    def _make(self, path: Path) -> Path:
        try:
            path.mkdir()
        except OSError as exc:
            raise SandboxError(f"cannot make the run's cgroup {path}: {exc.strerror or exc} (run as root)") from None
        self.dirs.append(path)
        return path

    def _limit(self, controller, value, v2_files, v1_files, mounts, own, name) -> None:
        if (self.v2 / v2_files[0]).exists():
            where, files = self.v2, v2_files
        else:
            root = _v1_dir(controller, mounts, own)
            if root is None or not root.is_dir():
                raise SandboxError(f"no cgroup {controller} controller here, in v2 or v1: the {controller} limit "
                                   "cannot be enforced")  # fmt: skip
            where, files = self._make(root / name), v1_files
        if controller == "cpu" and files == v1_files:
            _write(where / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        for file in files:
            if (where / file).exists():  # memsw: absent where swap accounting is off
                _write(where / file, f"{value} {CPU_PERIOD_US}" if file == "cpu.max" else str(value))
        self.limit_files[controller] = where

    def enter(self) -> None:
        """Put the calling process in every directory of the cgroup (a child's preexec: before it execs)."""
        for path in self.dirs:
            _write(path / "cgroup.procs", str(os.getpid()))

    def cpu_s(self) -> float:
        for line in _read(self.v2 / "cpu.stat").splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
        raise SandboxError(f"{self.v2}/cpu.stat has no usage_usec")

    def _events(self) -> dict[str, int]:
        return {
            key: int(value) for key, value in (line.split() for line in _read(self.v2 / "cgroup.events").splitlines())
        }

    def _wait_event(self, key: str, value: int, limit_s: float) -> bool:
        end = time.monotonic() + limit_s
        while self._events().get(key) != value:
            if time.monotonic() > end:
                return False
            time.sleep(0.005)
        return True

    def freeze(self) -> None:
        _write(self.v2 / "cgroup.freeze", "1")
        if not self._wait_event("frozen", 1, KILL_WAIT_S):
            raise SandboxError(f"the run's cgroup {self.v2} did not freeze within {KILL_WAIT_S:.0f} s")

    def thaw(self) -> None:
        _write(self.v2 / "cgroup.freeze", "0")

    def kill(self) -> None:
        """SIGKILL every process in the cgroup, however it left its parent, and wait until none is left."""
        _write(self.v2 / "cgroup.kill", "1")
        if not self._wait_event("populated", 0, KILL_WAIT_S):
            raise SandboxError(f"processes of the run's cgroup {self.v2} outlived its kill for {KILL_WAIT_S:.0f} s")

    def limit_hit(self) -> str | None:
        """ "memory" or "pids" where the run met that limit (its OOM kill, a refused fork), else None."""
        memory = self.limit_files.get("memory")
        if memory is not None:
            if (memory / "memory.events").exists():
                events = dict(line.split() for line in _read(memory / "memory.events").splitlines())
                if int(events.get("oom_kill", 0)) > 0:
                    return "memory"
            else:
                control = dict(line.split() for line in _read(memory / "memory.oom_control").splitlines())
                if int(control.get("oom_kill", 0)) > 0:
                    return "memory"
        pids = self.limit_files.get("pids")
        if pids is not None:
            events = dict(line.split() for line in _read(pids / "pids.events").splitlines())
            if int(events.get("max", 0)) > 0:
                return "pids"
        return None

    def close(self) -> None:
        for path in reversed(self.dirs):
            with contextlib.suppress(OSError):
                path.rmdir()
        self.dirs = []


def _python_paths() -> list[Path]:
    """The Python environment: its prefixes and every sys.path entry, with the repository narrowed to haet/."""
    import haet

    package = Path(haet.__file__).resolve().parent
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), package}
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.is_dir() and path != package.parent and path != Path.cwd():  # the repository root: haet/ alone
            paths.add(path)
    paths.add(Path(sys.executable).resolve().parent)
    return sorted(paths)


def bwrap_command(work: Path, cpu_stat: Path, masked: list[Path], env: dict[str, str]) -> list[str]:
    """bwrap's arguments: the view the sandbox has of this machine (work: its one writable folder)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError("bwrap is not installed (apt-get install bubblewrap; `make` installs it as root)")
    command = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
               "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]  # fmt: skip
    if os.getuid() != 0:
        command += ["--unshare-user"]
    bound: list[Path] = []
    for directory in SYSTEM_DIRS:
        path = Path(directory)
        if path.is_symlink():
            command += ["--symlink", os.readlink(path), directory]
        elif path.is_dir():
            command += ["--ro-bind", directory, directory]
            bound.append(path)
    for name in ETC_FILES:
        if Path("/etc", name).exists():
            command += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for path in _python_paths():
        if not any(path.is_relative_to(parent) for parent in bound):
            command += ["--ro-bind", str(path), str(path)]
            bound.append(path)
    for path in masked:  # an embedded dataset's files inside the Python environment: an empty folder there
        if path.is_dir():
            command += ["--tmpfs", str(path), "--remount-ro", str(path)]
        elif path.exists():
            command += ["--ro-bind", "/dev/null", str(path)]
    command += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for device in sorted(Path("/dev").glob("nvidia*")):  # a GPU's device files, where there is one
        command += ["--dev-bind", str(device), str(device)]
    command += ["--bind", str(work), str(INSIDE_WORK), "--ro-bind", str(cpu_stat), str(INSIDE_CPU_STAT),
                "--chdir", str(INSIDE_WORK)]  # fmt: skip
    for key, value in env.items():
        command += ["--setenv", key, value]
    return command


def mount_tmpfs(path: Path, size_bytes: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_bytes},nr_inodes={MAX_FILES},mode=0755,nosuid,nodev"
    command = ["mount", "-t", "tmpfs", "-o", options, "haet-work", str(path)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SandboxError(f"cannot mount the run's tmpfs on {path}: {done.stderr.strip()} (run as root)")


def unmount(path: Path) -> None:
    subprocess.run(["umount", "--lazy", str(path)], capture_output=True)


class Sandbox:
    """One stage's processes (train or predict): a tmpfs folder, a cgroup, bwrap; closed, nothing of it is left."""

    def __init__(self, folder: Path, limits: Limits, masked: list[Path]):
        self.folder, self.limits, self.masked, self.closed = folder, limits, masked, False
        mount_tmpfs(folder, limits.disk_bytes)
        try:
            self.cgroup = Cgroup(limits)
        except BaseException:
            unmount(folder)
            raise

    def launch(self, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        command = bwrap_command(self.folder, self.cgroup.v2 / "cpu.stat", self.masked, env) + ["--", *argv]
        file_bytes = self.limits.file_bytes

        def enter() -> None:  # in the child, before bwrap runs: everything it starts is in the cgroup and limits
            self.cgroup.enter()
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        with open(log, "wb") as output:
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                    preexec_fn=enter, start_new_session=True)  # fmt: skip

    def stop(self) -> None:
        """Every process of the stage killed (its files stay until close)."""
        if self.cgroup.dirs:
            self.cgroup.kill()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.stop()
        finally:
            self.cgroup.close()
            unmount(self.folder)
