"""L1 entry mode: load a project's ``module:function`` and run the six stages in a child.

The entry-point protocol is in `contract` (``make_model``, ``make_optimizer``,
``train_batches``, ``training_step``, ``predict``, ``evaluate`` plus optional pieces). This
module holds both sides of it:

- in the child (`entry_driver`): `load_entry` imports the module from the project folder, calls
  the function and checks the pieces; the optional pieces' defaults (`save_checkpoint`,
  `load_checkpoint`, `make_scheduler`, `epochs`) live here too;
- in the parent: `run_entry` runs ``python -m spml.toolkit.runtime.entry_driver`` through
  `run_command` under the total timeout. When the child hangs or crashes, the report is rebuilt
  from its progress file: finished stages keep their results, the running one FAILs with
  ``timed out after 900 s (no progress)`` or ``crashed: <how> ...``, the rest are SKIP.

The parent never imports torch; the child imports it with the project.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import spml
from spml.errors import SpmlError
from spml.toolkit.process.result import CommandResult, ExitKind
from spml.toolkit.process.runner import run_command
from spml.toolkit.runtime.contract import (
    ENV_CHECKPOINT_DIR,
    ENV_MAX_STEPS,
    ENV_METRICS_FILE,
    ENV_SEED,
    ENV_TIME_LIMIT,
    REQUIRED_ENTRY_ATTRS,
)
from spml.toolkit.runtime.report import STAGES, L1Report, StageResult
from spml.toolkit.runtime.thresholds import Thresholds

_SPML_ROOT = Path(spml.__file__).resolve().parent
_STDERR_LINES = 5


class EntryPointError(SpmlError, ValueError):
    """The entry point cannot be imported, called, or does not return the protocol's pieces."""


# --- where an error happened ------------------------------------------------------------------


def exception_line(exc: BaseException) -> str:
    """``Type: message`` on one line (200 characters of message at most)."""
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:200]}"


def where(exc: BaseException, project: Path) -> str:
    """``file:line in function: source`` of the last traceback frame in the project.

    Frames in spml, site-packages or a virtualenv do not count; without a project frame the
    last frame outside installed libraries (spml's call site) is named, else the last one. A
    `SyntaxError` names the file and line it points at.
    """
    root = project.resolve()
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_relative(Path(exc.filename), root)}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "(no traceback)"
    ours = [f for f in frames if _in_project(Path(f.filename), root)]
    ours = ours or [f for f in frames if not _in_library(Path(f.filename))]  # spml's call site
    frame = (ours or frames)[-1]
    text = f"{_relative(Path(frame.filename), root)}:{frame.lineno} in {frame.name}"
    return f"{text}: {frame.line.strip()}" if frame.line else text


def _relative(path: Path, root: Path) -> Path:
    with contextlib.suppress(ValueError, OSError):
        return path.resolve().relative_to(root)
    return path


def _in_library(path: Path) -> bool:
    return not path.is_absolute() or bool({"site-packages", "dist-packages"} & set(path.parts))


def _in_project(path: Path, root: Path) -> bool:
    try:
        resolved = path.resolve()
    except OSError:
        return False
    return (resolved.is_relative_to(root) and not resolved.is_relative_to(_SPML_ROOT)
            and not {"site-packages", ".venv"} & set(resolved.parts))


# --- loading (child side) ---------------------------------------------------------------------


def parse_entry(entry: str) -> tuple[str, str]:
    """``"pkg.module:function"`` (or ``"path/to/module.py:function"``) -> (module, function)."""
    module, sep, function = entry.partition(":")
    module = module.removesuffix(".py").replace("/", ".")
    if not (sep and function.isidentifier()
            and all(part.isidentifier() for part in module.split("."))):
        raise EntryPointError(f"the entry point must be 'module:function', got {entry!r}. "
                              "Name the module (relative to the project folder) and a function "
                              "in it, e.g. 'train:l1_entry'.")
    return module, function


def load_entry(entry: str, project: Path) -> Any:
    """Import ``module:function`` from ``project``, call it, check the pieces it returns.

    Raises:
        EntryPointError: The module is missing or fails to import, the function is missing,
            not callable or raises, or the pieces lack a required attribute.
    """
    module_name, function_name = parse_entry(entry)
    module = _import(module_name, project)
    function = getattr(module, function_name, None)
    if function is None:
        raise EntryPointError(f"module {module_name!r} ({getattr(module, '__file__', '?')}) has "
                              f"no attribute {function_name!r}. Define `def {function_name}():` "
                              "returning the project's pieces, or fix the entry point.")
    if not callable(function):
        raise EntryPointError(f"{entry} is a {type(function).__name__}, not a function. It must "
                              "be a function taking no arguments that returns the pieces.")
    try:
        pieces = function()
    except Exception as exc:
        raise EntryPointError(f"calling {entry}() raised {exception_line(exc)} "
                              f"at {where(exc, project)}") from exc
    check_pieces(entry, pieces)
    return pieces


def _import(module_name: str, project: Path) -> Any:
    root = str(project.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    _forget_foreign(module_name, Path(root))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise EntryPointError(
                f"module {module_name!r} not found in the project folder {root}: expected "
                f"{module_name.replace('.', '/')}.py there. Fix the entry point "
                "'module:function' or the project folder.") from exc
        raise EntryPointError(f"importing {module_name!r} failed: {exception_line(exc)} at "
                              f"{where(exc, project)}. Install the missing package.") from exc
    except Exception as exc:
        raise EntryPointError(f"importing {module_name!r} raised {exception_line(exc)} at "
                              f"{where(exc, project)}") from exc


def _forget_foreign(module_name: str, root: Path) -> None:
    """Drop an already-imported module of that name that lives outside the project."""
    top = module_name.split(".")[0]
    loaded = sys.modules.get(top)
    origin = getattr(loaded, "__file__", None)
    if loaded is not None and (origin is None or not Path(origin).resolve().is_relative_to(root)):
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]


def check_pieces(entry: str, pieces: Any) -> None:
    """Raise `EntryPointError` unless every required piece is there and callable."""
    required = ", ".join(REQUIRED_ENTRY_ATTRS)
    if pieces is None:
        raise EntryPointError(f"{entry}() returned None. Return an object with {required} "
                              "(e.g. types.SimpleNamespace(make_model=make_model, ...)).")
    missing = [name for name in REQUIRED_ENTRY_ATTRS if not hasattr(pieces, name)]
    if missing:
        raise EntryPointError(
            f"{entry}() returned a {type(pieces).__name__} without {', '.join(missing)}. The "
            f"entry point must return an object with {required} (a class instance, a module or "
            f"a types.SimpleNamespace); add {missing[0]} (see spml.toolkit.runtime.contract).")
    not_callable = [n for n in REQUIRED_ENTRY_ATTRS if not callable(getattr(pieces, n))]
    if not_callable:
        raise EntryPointError(f"{entry}(): {', '.join(not_callable)} must be callable, got "
                              f"{type(getattr(pieces, not_callable[0])).__name__}.")


# --- the protocol's optional pieces, with their defaults (child side) -------------------------


def epochs(pieces: Any) -> Iterator[Any]:
    """Batches from ``train_batches()`` epoch after epoch, until an epoch yields none."""
    while True:
        empty = True
        for batch in pieces.train_batches():
            empty = False
            yield batch
        if empty:
            return


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy (when installed) and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        import numpy

        numpy.random.seed(seed)


def make_scheduler(pieces: Any, optimizer: Any) -> Any:
    make = getattr(pieces, "make_scheduler", None)
    return make(optimizer) if callable(make) else None


def save_checkpoint(pieces: Any, path: Path, model: Any, optimizer: Any) -> None:
    """The project's ``save_checkpoint``, else `torch.save` of both state dicts."""
    if callable(getattr(pieces, "save_checkpoint", None)):
        pieces.save_checkpoint(path, model, optimizer)
        return
    import torch

    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)


def load_checkpoint(pieces: Any, path: Path, model: Any, optimizer: Any) -> None:
    """The project's ``load_checkpoint``, else `torch.load(weights_only=True)` of both."""
    if callable(getattr(pieces, "load_checkpoint", None)):
        pieces.load_checkpoint(path, model, optimizer)
        return
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])


@contextlib.contextmanager
def checkpoint_folder(folder: Path | None) -> Iterator[Path]:
    """``folder`` (created), or a temporary folder removed afterwards."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="spml-l1-") as tmp:
        yield Path(tmp)


# --- running the child (parent side) ----------------------------------------------------------


@dataclass(frozen=True)
class EntryOptions:
    """How the parent runs the child: volume, limits, thresholds, and where logs go."""

    log_dir: Path
    max_steps: int = 50
    time_limit_s: float = 300.0
    total_timeout_s: float = 900.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    seed: int = 0


def run_entry(  # noqa: PLR0913 - the keyword-only API run.py calls
    entry: str, project: Path, *, max_steps: int, time_limit_s: float, total_timeout_s: float,
    thresholds: Thresholds, log_dir: Path,
) -> L1Report:
    """Run the six stages on ``entry`` in a child process and return its report.

    Args:
        entry: ``module:function`` in ``project`` (see `contract`).
        project: The project folder (the child's working directory and import root).
        max_steps: Training steps at most (``SPML_MAX_STEPS``).
        time_limit_s: Training seconds at most (``SPML_TIME_LIMIT``).
        total_timeout_s: Wall-clock limit of the whole child; on expiry its group is killed.
        thresholds: The judgement thresholds.
        log_dir: Where ``l1-report.json``/``.txt``, ``l1-progress.jsonl``,
            ``l1-metrics.jsonl``, the child's logs and the checkpoint folder go.

    Raises:
        CommandError: The child could not be started.
    """
    options = EntryOptions(log_dir, max_steps, time_limit_s, total_timeout_s, thresholds)
    return run_entry_with(entry, project, options)


def run_entry_with(entry: str, project: Path, options: EntryOptions) -> L1Report:
    """`run_entry` with its settings in one `EntryOptions` (``seed`` included)."""
    log_dir = options.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    out, progress = log_dir / "l1-report.json", log_dir / "l1-progress.jsonl"
    thresholds = log_dir / "l1-thresholds.json"
    for stale in (out, progress, log_dir / "l1-metrics.jsonl"):
        stale.unlink(missing_ok=True)
    thresholds.write_text(json.dumps(asdict(options.thresholds)), encoding="utf-8")
    argv = [sys.executable, "-m", "spml.toolkit.runtime.entry_driver", "--entry", entry,
            "--project", str(project.resolve()), "--max-steps", str(options.max_steps),
            "--time-limit", f"{options.time_limit_s:g}", "--out", str(out),
            "--progress", str(progress), "--thresholds", str(thresholds)]
    result = run_command(argv, cwd=project, log_dir=log_dir, name="l1-entry",
                         env=_child_env(options), time_limit_s=options.total_timeout_s)
    report = read_report(out) if result.ok else None
    if report is None:
        report = report_from_progress(entry, read_progress(progress), result)
    report.elapsed_s = result.duration_s  # the whole child: interpreter, imports, stages
    (log_dir / "l1-report.txt").write_text(report.text(), encoding="utf-8")
    return report


def _child_env(options: EntryOptions) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(_SPML_ROOT.parent), os.environ.get("PYTHONPATH"))
                           if p)
    return {ENV_MAX_STEPS: str(options.max_steps), ENV_TIME_LIMIT: f"{options.time_limit_s:g}",
            ENV_CHECKPOINT_DIR: str(options.log_dir / "checkpoint"),
            ENV_METRICS_FILE: str(options.log_dir / "l1-metrics.jsonl"),
            ENV_SEED: str(options.seed), "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def report_from_dict(data: Mapping[str, Any]) -> L1Report:
    """The inverse of `L1Report.as_dict`."""
    stages = [StageResult(**stage) for stage in data["stages"]]
    return L1Report(str(data["target"]), str(data["mode"]), stages, float(data["elapsed_s"]),
                    list(data.get("notes", [])), list(data.get("diagnostics", [])))


def read_report(path: Path) -> L1Report | None:
    """The child's final report, or None when it is missing or unreadable."""
    try:
        return report_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_progress(path: Path) -> list[dict[str, Any]]:
    """The progress events the child wrote (a torn last line is ignored)."""
    events = []
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
    return events


def report_from_progress(entry: str, events: Sequence[Mapping[str, Any]],
                         result: CommandResult) -> L1Report:
    """Rebuild the report of a child that hung or crashed from its progress events."""
    finished: dict[str, StageResult] = {}
    started: dict[str, float] = {}
    last_step: Mapping[str, Any] | None = None
    for event in events:
        if event.get("event") == "start":
            started.setdefault(str(event.get("stage")), float(event.get("time", 0.0)))
        elif event.get("event") == "end":
            with contextlib.suppress(TypeError, KeyError):
                finished[str(event["stage"])] = StageResult(**event["result"])
        elif event.get("event") == "step":
            last_step = event
    summary, evidence = _failure(result)
    ended = "timed out" if result.kind is ExitKind.TIMEOUT else "crashed"
    stages, culprit = [], None
    for name in STAGES:
        if name in finished:
            stages.append(finished[name])
        elif culprit is None:
            culprit = name
            lines = [*_stage_clues(name, started, last_step), *evidence]
            stages.append(StageResult.failed(name, summary, *lines))
        else:
            stages.append(StageResult.skipped(name, f"skipped: {culprit} {ended}"))
    note = f"child logs: {result.stdout_path.parent}"
    return L1Report(entry, "entry", stages, result.duration_s, [note])


def _failure(result: CommandResult) -> tuple[str, list[str]]:
    if result.kind is ExitKind.TIMEOUT:
        return f"timed out after {result.time_limit_s:g} s (no progress)", [
            "the process group was killed; look for a hang (data loader, lock, collective)"]
    tail = [line for line in result.stderr_tail(40).splitlines() if line.strip()]
    how = result.describe() if not result.ok else "exit 0 without writing the report"
    return f"crashed: {how}", [f"stderr: {line}" for line in tail[-_STDERR_LINES:]]


def _stage_clues(name: str, started: Mapping[str, float],
                 last_step: Mapping[str, Any] | None) -> list[str]:
    clues = []
    if name in started:
        clues.append(f"{name} ran {time.time() - started[name]:.0f} s without finishing")
    else:
        clues.append(f"{name} never started")
    if last_step is not None and last_step.get("stage") == name:
        clues.append(f"last progress: step {last_step.get('step')}, "
                     f"loss {last_step.get('loss')}")
    return clues
