"""L1's Checkpoint stage in command mode: find the file the run wrote, load it in a child.

Parent side (:func:`snapshot`, :func:`checkpoint_stage`): the newest file matching the glob
that is new or changed since the snapshot taken before training; it must be non-empty and
load, and an optimizer entry must hold per-parameter state (else a resumed run restarts the
Adam moments). A raw ``state_dict`` or a dict without an optimizer entry passes with the
evidence line "model weights only".

Child side: ``python -m spml.toolkit.runtime.checkpoint_probe PATH`` loads the file, so that a
huge or hostile pickle costs a child process, never the supervisor, and the supervisor never
imports torch. The file is loaded with
``torch.load(map_location="cpu", weights_only=True)``; the line written to stdout is::

    {"ok": true, "type": "dict", "keys": [...], "tensors": 12, "model_key": "model",
     "optimizer_key": "optimizer", "optimizer_state": 4, "optimizer_stateless": false}

or ``{"ok": false, "error": "UnpicklingError: ..."}``. The exit status is 0 either way (a
crash or a kill is the parent's to classify).
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spml.toolkit.process.result import CommandResult
from spml.toolkit.process.runner import run_command, supervisor_path
from spml.toolkit.runtime.contract import ENV_CHECKPOINT_DIR
from spml.toolkit.runtime.report import StageResult

MODEL_KEYS = ("model", "state_dict", "model_state_dict", "model_state", "net", "module")
OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_state", "optim", "opt",
                  "optimizer_states")
_MAX_KEYS = 12
_PROBE_LIMIT_S = 300.0
_MODULE = "spml.toolkit.runtime.checkpoint_probe"  # run with cwd = the log dir, not the project


def count_tensors(obj: Any, is_tensor: Any) -> int:
    """Tensors anywhere inside nested dicts, lists and tuples."""
    if is_tensor(obj):
        return 1
    if isinstance(obj, Mapping):
        return sum(count_tensors(v, is_tensor) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(count_tensors(v, is_tensor) for v in obj)
    return 0


def optimizer_facts(entry: Any) -> tuple[int, bool]:
    """(per-parameter state entries, whether the optimizer keeps no state by design).

    ``entry`` is an optimizer ``state_dict()`` or a list of them (Lightning's
    ``optimizer_states``). Plain SGD without momentum legitimately has an empty ``state``.
    """
    entries = entry if isinstance(entry, list | tuple) else [entry]
    states, groups = 0, []
    for item in entries:
        if isinstance(item, Mapping):
            state = item.get("state")
            states += len(state) if isinstance(state, Mapping) else 0
            groups += [g for g in item.get("param_groups") or [] if isinstance(g, Mapping)]
    stateless = bool(groups) and all(
        "betas" not in g and g.get("momentum", None) == 0 for g in groups)
    return states, stateless


def describe(obj: Any, is_tensor: Any) -> dict[str, Any]:
    """The JSON-able facts L1 judges about a loaded checkpoint object."""
    facts: dict[str, Any] = {"ok": True, "type": type(obj).__name__,
                             "tensors": count_tensors(obj, is_tensor), "keys": [],
                             "model_key": None, "optimizer_key": None}
    if not isinstance(obj, Mapping):
        return facts
    keys = [str(k) for k in obj]
    facts["keys"] = keys[:_MAX_KEYS] + ([f"... {len(keys) - _MAX_KEYS} more"]
                                        if len(keys) > _MAX_KEYS else [])
    facts["raw_state_dict"] = bool(obj) and all(is_tensor(v) for v in obj.values())
    facts["model_key"] = next((k for k in MODEL_KEYS if k in obj), None)
    optimizer_key = next((k for k in OPTIMIZER_KEYS if k in obj), None)
    if optimizer_key is not None:
        states, stateless = optimizer_facts(obj[optimizer_key])
        facts.update(optimizer_key=optimizer_key, optimizer_state=states,
                     optimizer_stateless=stateless)
    return facts


def probe(path: str) -> dict[str, Any]:
    """Load ``path`` with ``weights_only=True`` and describe it; errors become ``ok: false``."""
    try:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        return describe(obj, torch.is_tensor)
    except Exception as exc:  # noqa: BLE001 - any load failure is the verdict, not a crash
        message = " ".join(str(exc).split())[:400]
        return {"ok": False, "error": f"{type(exc).__name__}: {message}"}


def main(argv: list[str]) -> None:
    """Probe ``argv[0]`` and write the facts as one JSON line."""
    if len(argv) != 1:
        facts: dict[str, Any] = {"ok": False, "error": "usage: checkpoint_probe PATH"}
    else:
        facts = probe(argv[0])
    sys.stdout.write(json.dumps(facts) + "\n")


# --- parent side -----------------------------------------------------------------------------


def snapshot(pattern: str) -> dict[str, tuple[int, int]]:
    """``{path: (mtime_ns, size)}`` of the files matching ``pattern`` (``**`` recurses)."""
    found = {}
    for name in glob.glob(pattern, recursive=True):
        try:
            stat = os.stat(name)
        except OSError:
            continue
        if os.path.isfile(name):
            found[name] = (stat.st_mtime_ns, stat.st_size)
    return found


def checkpoint_stage(pattern: str, before: Mapping[str, tuple[int, int]], *, log_dir: Path,
                     time_limit_s: float) -> tuple[StageResult, Path | None]:
    """Judge the newest file matching ``pattern`` written since ``before`` was taken.

    Returns:
        The Checkpoint stage and the checkpoint's path (None when none was written).
    """
    after = snapshot(pattern)
    written = [name for name, facts in after.items() if before.get(name) != facts]
    if not written:
        stale = [f"{len(after)} older matching file(s) predate the run"] if after else []
        return StageResult.failed(
            "Checkpoint", f"no checkpoint written: nothing new matches {pattern}",
            f"save it to ${ENV_CHECKPOINT_DIR} or set checkpoint_glob", *stale), None
    path = Path(max(written, key=lambda name: after[name][0]))
    size = after[str(path)][1]
    if size == 0:
        return StageResult.failed("Checkpoint", f"checkpoint is empty: {path}"), path
    result = run_command([sys.executable, "-m", _MODULE, str(path)], cwd=log_dir,
                         log_dir=log_dir, name="checkpoint-probe", env=supervisor_path(),
                         time_limit_s=min(time_limit_s, _PROBE_LIMIT_S))
    stage = judge_checkpoint(path, size, _probe_facts(result))
    stage.evidence.append(f"{len(written)} new file(s) match {pattern}")
    return stage, path


def _probe_facts(result: CommandResult) -> dict[str, Any]:
    lines = result.stdout_text().strip().splitlines()
    try:
        facts = json.loads(lines[-1]) if lines else None
    except ValueError:
        facts = None
    if isinstance(facts, dict):
        return facts
    return {"ok": False, "error": f"the loading process failed: {result.describe()}"}


def judge_checkpoint(path: Path, size: int, facts: Mapping[str, Any]) -> StageResult:
    """The Checkpoint verdict from the probe's facts (see the module docstring)."""
    name = f"{path.name} ({_size(size)})"
    if not facts.get("ok"):
        return StageResult.failed("Checkpoint", f"{name} does not load with torch.load("
                                  f"weights_only=True): {facts.get('error')}", str(path))
    keys = facts.get("keys") or []
    evidence = [str(path), f"{facts.get('type')} with {facts.get('tensors', 0)} tensors"
                + (f"; keys: {', '.join(keys)}" if keys else "")]
    if not facts.get("tensors"):
        return StageResult.failed("Checkpoint", f"{name} holds no tensors", *evidence)
    optimizer = facts.get("optimizer_key")
    if optimizer is None:
        evidence.append("model weights only (no optimizer state): resuming restarts the "
                        "optimizer")
    elif facts.get("optimizer_state"):
        evidence.append(f"optimizer state under {optimizer!r}: "
                        f"{facts['optimizer_state']} parameter entries")
    elif facts.get("optimizer_stateless"):
        evidence.append(f"{optimizer!r} keeps no state by design (SGD without momentum)")
    else:
        return StageResult.failed("Checkpoint", "checkpoint has no optimizer state: a resumed "
                                  "run restarts Adam moments",
                                  *evidence, f"{optimizer!r} has an empty 'state' (save it "
                                  "after at least one optimizer step)")
    return StageResult("Checkpoint", "PASS", f"{name} loads with torch.load(weights_only=True)",
                       evidence, {"bytes": size})


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value, unit = float(size), "B"
    for unit in ("KiB", "MiB", "GiB"):  # noqa: B007 - the unit the loop stops at is the one
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


if __name__ == "__main__":
    main(sys.argv[1:])
