"""What a submission is: a Python module, by path (a .py file or a package folder), importable name or reference
name, with train and predict.

    def train(images, labels, num_classes, device, deadline, hand_in) -> None
        images uint8 N x H x W x 3, labels int64 N; device a torch device name ("cuda", "cpu"); deadline the end of
        the budget on the run's clock (haet.challenge.child.Deadline: compare deadline.now() with it; on the wall
        clock that is time.time()); hand_in(model) keeps model as the one scored (the one in place when the
        budget ends counts; one handed in later is ignored).
    def predict(model, images) -> array of N class indices (integers in [0, num_classes))

The harness never runs a submission's code: it finds the files (resolve) without importing anything, copies a
path's files into the sandbox, and the sandboxed child imports it (load_submission) and checks the interface. A
module loaded by path gets a name of its own (haet_submission_<stem>), the same in every process, so the models it
hands in (pickled with torch.save) load again where predict runs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from haet import HaetError

# The two reference entries (haet/challenge/references): the paper's final submission and the 1st-place method.
REFERENCES = {
    "haet-paper": "haet.challenge.references.paper",
    "haet-winner": "haet.challenge.references.winner",
    "haet-winner-sam": "haet.challenge.references.winner_sam",
}
SIGNATURES = {
    "train": "train(images, labels, num_classes, device, deadline, hand_in)",
    "predict": "predict(model, images)",
}
FIX = "see the example haet/challenge/example_submission.py"
MAX_FILE_BYTES = 16 * 2**20  # a submission's source, not its data: a .py file or package folder this big is refused


class SubmissionError(HaetError):
    pass


@dataclass(frozen=True)
class Resolved:
    """A submission found but not run: by_path (its files are copied into the sandbox) or an installed module."""

    spec: str
    module: str  # the name it is imported as
    source: Path  # its .py file, or its package folder
    by_path: bool

    def files(self) -> list[dict]:
        """The submission's source files with their sha256 (a package: every .py file under it)."""
        paths = sorted(self.source.rglob("*.py")) if self.source.is_dir() else [self.source]
        return [{"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()} for path in paths]


def _path_name(path: Path) -> str:
    return "haet_submission_" + "".join(c if c.isalnum() else "_" for c in path.stem)


def _find_module(name: str) -> Path | None:
    """An installed module's file or package folder, found without executing any of it (no parent's __init__)."""
    top, *parts = name.split(".")
    try:
        found = importlib.util.find_spec(top)  # a top-level name: no parent to import
    except (ImportError, ValueError):
        return None
    for index in range(len(parts)):
        if found is None or found.submodule_search_locations is None:
            return None
        found = importlib.machinery.PathFinder.find_spec(".".join([top, *parts[: index + 1]]),
                                                         found.submodule_search_locations)  # fmt: skip
    if found is None:
        return None
    if found.origin is None or found.origin in ("built-in", "frozen"):
        return None
    origin = Path(found.origin)
    return origin.parent if found.submodule_search_locations is not None else origin


def resolve(spec: str) -> Resolved:
    """Where a submission's code is, read as files only; a bad spec is one line."""
    name = REFERENCES.get(spec, spec)
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        source = path if path.is_file() else path / "__init__.py"
        if not source.is_file():
            raise SubmissionError(
                f"submission {spec}: no such file; give a .py file, a package folder or a module name"
            )
        resolved = Resolved(spec, _path_name(path), path if path.is_dir() else path, by_path=True)
    else:
        source = _find_module(name)
        if source is None:
            raise SubmissionError(f"submission {spec}: cannot be imported (no module named {name!r}); give a .py path "
                                  "or a module name")  # fmt: skip
        resolved = Resolved(spec, name, source, by_path=False)
    size = sum(path.stat().st_size for path in ([resolved.source] if resolved.source.is_file() else
                                                 resolved.source.rglob("*")) if path.is_file())  # fmt: skip
    if size > MAX_FILE_BYTES:
        raise SubmissionError(f"submission {spec}: its files hold {size} bytes, over {MAX_FILE_BYTES}; a submission is "
                              "code (its data it gets from train)")  # fmt: skip
    return resolved


def _import(spec: str, module: str, path: str | None) -> ModuleType:
    if path is not None:
        location = Path(path)
        package = location.is_dir()
        module_spec = importlib.util.spec_from_file_location(
            module, location / "__init__.py" if package else location,
            submodule_search_locations=[str(location)] if package else None,
        )  # fmt: skip
        loaded = importlib.util.module_from_spec(module_spec)
        sys.modules[module] = loaded  # before exec: pickled classes of the module resolve by this name
        try:
            module_spec.loader.exec_module(loaded)
        except Exception as exc:
            del sys.modules[module]
            raise SubmissionError(f"submission {spec}: importing it raised {type(exc).__name__}: {exc}") from None
        return loaded
    try:
        return importlib.import_module(module)
    except Exception as exc:
        raise SubmissionError(f"submission {spec}: importing it raised {type(exc).__name__}: {exc}") from None


def load_submission(spec: str, module: str | None = None, path: str | None = None) -> ModuleType:
    """The submission module (in the sandboxed child), its train and predict checked for presence and arity (one
    line naming the fix). module and path: where resolve found it (path: the copy in the sandbox)."""
    loaded = _import(spec, module or REFERENCES.get(spec, spec), path)
    for name, arity in (("train", 6), ("predict", 2)):
        function = getattr(loaded, name, None)
        if not callable(function):
            raise SubmissionError(
                f"submission {spec}: defines no function {name}; it must define {SIGNATURES[name]} ({FIX})"
            )
        try:
            inspect.signature(function).bind(*range(arity))
        except TypeError:
            raise SubmissionError(
                f"submission {spec}: {name}{inspect.signature(function)} cannot be called as {SIGNATURES[name]} ({FIX})"
            ) from None
        except ValueError:  # no signature to read (a builtin): called as it is
            pass
    return loaded
