"""What an interrupted watchdog (Ctrl-C, SIGTERM) leaves on disk, and the line it prints.

`experiment-context.md` gets `state: interrupted` with the attempt, the last logged step and the
command that resumes; nothing else changes. An interrupted attempt is no failure: it is not
added to `attempts.jsonl`, so it never counts against the crash-loop guard, and the next
`spml watchdog run` resumes from the newest checkpoint that verifies, as after any restart.

Called from a signal handler's helper thread while the watchdog itself is suspended mid-poll, so
it only reads files and replaces the context atomically, through its own `ContextFile`.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spml.toolkit.metrics.log import MetricHistory
from spml.toolkit.watchdog.context import ContextFile

_TAIL_BYTES = 64 * 1024
# The `--flag` of each setting the CLI takes (`spml watchdog run --help`).
_FLAGS = ("train_command", "checkpoint_glob", "log_file", "eval_command", "checkpoint_check",
          "checkpoint_interval", "hang_timeout", "startup_grace", "restart_delay")


def resume_command(exp_dir: Path, overrides: Mapping[str, Any] | None = None) -> str:
    """`spml watchdog run DIR` with the settings that were given as flags."""
    parts = ["spml", "watchdog", "run", str(exp_dir)]
    for key, value in (overrides or {}).items():
        if key in _FLAGS and value is not None:
            parts += [f"--{key.replace('_', '-')}", str(value)]
    return shlex.join(parts)


def record_interrupted(exp_dir: Path, log_file: Path | None, resume: str,
                       signal_name: str = "") -> str:
    """Set the context's state to `interrupted` (unless training already ended); returns the
    line to print: where the watchdog stopped and how to resume."""
    context = ContextFile(exp_dir / "experiment-context.md")
    current = context.read_status()
    state = current.get("state")
    by = f" by {signal_name}" if signal_name else ""
    if state not in (None, "running", "interrupted"):
        return f"interrupted{by} after training ended (state: {state})"
    step = last_logged_step(log_file)
    attempt = current.get("attempt")
    kept = {k: v for k, v in current.items() if k not in ("state", "updated")}
    context.set_status("interrupted", **{**kept, "last_step": step,
                                         "interrupted_by": signal_name or None,
                                         "resume": resume})
    where = f" at attempt {attempt}" if attempt else ""
    where += f" (step {step})" if step is not None else ""
    return f"interrupted{by}{where}; resume with: {resume}"


def last_logged_step(log_file: Path | None) -> int | None:
    """The newest step in the tail of the training log (None: no log, or no step in it)."""
    if log_file is None:
        return None
    try:
        with log_file.open("rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - _TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    history = MetricHistory()
    history.add_lines(tail.splitlines()[1:] if len(tail) >= _TAIL_BYTES else tail.splitlines(),
                      0.0)
    return history.last_step
