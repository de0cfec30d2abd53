"""What a submission is: a Python module, by path or importable name, with train and predict.

    def train(images, labels, num_classes, device, deadline, hand_in) -> None
        images uint8 N x H x W x 3, labels int64 N; device a torch device name ("cuda", "cpu"); deadline the
        time.time() at which the budget ends; hand_in(model) keeps model as the one scored (the last one handed in
        before the deadline counts; one handed in later is ignored).
    def predict(model, images) -> array of N class indices (integers in [0, num_classes))

Loaded by path, a module gets a name of its own (haet_submission_<stem>), the same in every process, so the models
it hands in (pickled with torch.save) load again where predict runs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
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


class SubmissionError(HaetError):
    pass


def _import(spec: str) -> ModuleType:
    spec = REFERENCES.get(spec, spec)
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise SubmissionError(f"submission {spec}: no such file; give a .py file or an importable module name")
        name = "haet_submission_" + "".join(c if c.isalnum() else "_" for c in path.stem)
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # before exec: pickled classes of the module resolve by this name
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise SubmissionError(f"submission {spec}: importing it raised {type(exc).__name__}: {exc}") from None
        return module
    try:
        return importlib.import_module(spec)
    except ImportError as exc:
        raise SubmissionError(
            f"submission {spec}: cannot be imported ({exc}); give a .py path or a module name"
        ) from None


def load_submission(spec: str) -> ModuleType:
    """The submission module, its train and predict checked for presence and arity (one line naming the fix)."""
    module = _import(spec)
    for name, arity in (("train", 6), ("predict", 2)):
        function = getattr(module, name, None)
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
    return module


def submission_files(module: ModuleType) -> list[dict]:
    """The submission's source file with its sha256 (a package: every .py file under it)."""
    origin = Path(module.__file__)
    files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    return [{"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()} for path in files]
