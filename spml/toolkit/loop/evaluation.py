"""The evaluation's clean room: nothing training wrote may change what the evaluation imports,
and the evaluation reports its metrics where the supervisor says.

Training runs the researcher's code. Whatever it leaves in the worktree that Python could
import — a sourceless ``json.pyc`` beside the fixed ``evaluate.py``, a ``.so``, a ``.pth``, a
``sitecustomize.py`` — could replace a module of the fixed evaluation, which would then print
whatever the researcher's code wants. So:

* `importable_leftovers`: after training, a git-ignored importable file where the evaluation's
  imports look first (untracked files that are not ignored already meet compliance) is a
  violation: the round fails compliance and the Note says which file; `clean_for_evaluation`
  removes every ignored importable file (and,
  when the protocol declares ``fixed.outputs``, every ignored file outside those globs)
  before each evaluation, also where no compliance check runs (confirmation, verification).
* `evaluation_env`: no user site directory (a ``.pth`` written to ``~/.local`` is not read) and
  no ``PYTHONPATH`` from the supervisor's environment.
* `metric_file` / `read_metric_file`: ``SPML_METRIC_FILE`` names a fresh file outside the
  worktree; a fixed evaluation that writes its metrics there as one JSON object is read from
  it, and its stdout only when it wrote nothing (the older protocols' way). Variable code that
  the evaluation imports runs inside it and can still write that file: `evaluation_imports`
  lets the preflight warn when the evaluation imports variable files.
"""

from __future__ import annotations

import ast
import json
import math
import shlex
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from spml.toolkit.git.workspace import Workspace
from spml.toolkit.globs import compile_globs
from spml.toolkit.loop.compliance import Violation

IMPORTABLE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyw", ".pyd", ".so", ".pth")
METRIC_FILE_VAR = "SPML_METRIC_FILE"


def is_importable(path: str) -> bool:
    """Whether Python could import (or run at start-up) the file at ``path``."""
    parts = path.split("/")
    return parts[-1].endswith(IMPORTABLE_SUFFIXES) or "__pycache__" in parts[:-1]


def _in_experiment(path: str, exp_rel: str) -> str | None:
    if exp_rel == ".":
        return path
    return path[len(exp_rel) + 1:] if path.startswith(exp_rel + "/") else None


def importable_leftovers(workspace: Workspace, exp_rel: str) -> list[Violation]:
    """Ignored importable files training wrote where the evaluation's imports look first (the
    experiment dir itself, its ``__pycache__``), one violation each. Training starts from the
    tracked files alone, so training wrote them; deeper ones (a logger's copy of the code in
    its run folder) are only removed before the evaluation."""
    found = []
    for path in workspace.ignored_files():
        inner = _in_experiment(path, exp_rel)
        parts = inner.split("/") if inner is not None else []
        on_the_path = len(parts) == 1 or (len(parts) == 2 and parts[0] == "__pycache__")
        if on_the_path and is_importable(path):
            found.append(Violation(path, f"training wrote importable file {inner} (git-ignored"
                                         "; it could shadow an import of the evaluation)"))
    return found


def clean_for_evaluation(workspace: Workspace, exp_rel: str,
                         outputs: Sequence[str] = ()) -> list[str]:
    """Delete the ignored files the evaluation may not see: every importable one, and with
    ``outputs`` (globs relative to the experiment dir) every one outside them. Returns the
    repo-relative paths removed."""
    is_output = compile_globs(list(outputs)) if outputs else None

    def keep(path: str) -> bool:
        if is_importable(path):
            return False
        if is_output is None:
            return True
        inner = _in_experiment(path, exp_rel)
        return inner is not None and is_output(inner)

    return workspace.clean_ignored(keep=keep)


def evaluation_env() -> dict[str, str]:
    """Environment overrides of every evaluation run."""
    return {"PYTHONNOUSERSITE": "1", "PYTHONPATH": ""}


@contextmanager
def metric_file() -> Iterator[Path]:
    """A path in a fresh private directory (outside any worktree), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="spml-metric-"))
    try:
        yield folder / "metrics.json"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_metric_file(path: Path) -> dict[str, float] | None:
    """The metrics the evaluation wrote to ``path`` (None: it wrote nothing).

    Raises:
        ValueError: the file is not one JSON object of finite numbers.
    """
    # The supervisor reads it unconfined: a link could point it at a file the evaluation may
    # not read itself (the holdout during the rounds).
    if path.is_symlink():
        raise ValueError("it is a symbolic link; write the metrics into the file itself")
    if not path.is_file():
        return None
    if path.stat().st_nlink > 1:
        raise ValueError("it is a hard link to another file; write the metrics into it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"it is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"it holds a {type(data).__name__}, not an object of metrics")
    metrics = {}
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value):
            raise ValueError(f"{name!r} is {value!r}, not a finite number")
        metrics[str(name)] = float(value)
    return metrics


def evaluation_imports(workdir: Path, command: str) -> list[str]:
    """The experiment's own Python files the evaluation command imports, transitively (a
    static reading of its script's imports; paths relative to ``workdir``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    todo = [w for w in words if w.endswith(".py") and (workdir / w).is_file()]
    if "-m" in words[:-1]:
        todo += _module_files(workdir, words[words.index("-m") + 1])
    seen: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [found for module in _imports_of(workdir / path, path)
                 for found in _module_files(workdir, module)]
    return sorted(seen - {w for w in words})


def _imports_of(file: Path, rel: str) -> list[str]:
    try:
        tree = ast.parse(file.read_bytes(), filename=rel)
    except (OSError, SyntaxError, ValueError):
        return []
    package = rel.rsplit("/", 1)[0].replace("/", ".") if "/" in rel else ""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, up level-1 steps
                parts = package.split(".") if package else []
                parts = parts[:len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, *([base] if base else [])])
            found += [base] + [f"{base}.{alias.name}" if base else alias.name
                               for alias in node.names]
    return [name for name in found if name]


def _module_files(workdir: Path, module: str) -> list[str]:
    """The files under ``workdir`` that importing ``module`` runs (its packages' __init__)."""
    parts = module.split(".")
    out = []
    for depth in range(1, len(parts) + 1):
        stem = "/".join(parts[:depth])
        for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
            if (workdir / candidate).is_file():
                out.append(candidate)
    return out
