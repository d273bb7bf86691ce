"""Asynchronous evaluation of new checkpoints, without blocking supervision.

At each poll: harvest a finished evaluation, then, when a newer complete checkpoint exists and
no evaluation is running, start the eval command for the newest one. Checkpoints that became
complete while an evaluation ran are skipped (and said so): only the newest is worth a look.
Results are appended to `evaluations.jsonl` and to `experiment-context.md`.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path

from spml.toolkit.metrics.log import parse_log_line
from spml.toolkit.process.runner import RunningCommand, start_command, supervisor_path
from spml.toolkit.watchdog.checkpoints import Checkpoint
from spml.toolkit.watchdog.context import ContextFile

log = logging.getLogger(__name__)


class AsyncEvaluator:
    """Runs `eval_command` (with `{checkpoint}`) on the newest complete checkpoint."""

    def __init__(self, command: str, exp_dir: Path, state_dir: Path,
                 context: ContextFile) -> None:
        self._command, self._exp_dir, self._state_dir = command, exp_dir, state_dir
        self._context = context
        self._results = state_dir / "evaluations.jsonl"
        self._running: tuple[RunningCommand, Checkpoint, float] | None = None
        self._skipped: list[str] = []
        self._last = self._last_evaluated()

    def poll(self, newest: Checkpoint | None) -> None:
        """Harvest a finished evaluation; start one for ``newest`` if it is new and idle."""
        if self._running is not None and self._running[0].exited():
            self._harvest()
        if newest is None or str(newest.path) == self._last:
            return
        if self._running is not None:
            if str(newest.path) not in self._skipped:
                self._skipped.append(str(newest.path))
            return
        self._start(newest)

    def drain(self, timeout_s: float) -> None:
        """Let a running evaluation finish (up to ``timeout_s``), else stop it."""
        if self._running is None:
            return
        if not self._running[0].exited(timeout_s=timeout_s):
            self._running[0].stop(grace_s=2.0)
        self._harvest()

    def _start(self, checkpoint: Checkpoint) -> None:
        # The settings validate `{checkpoint}` with format() rules ({{ }} = literal braces).
        command = self._command.format(checkpoint=shlex.quote(str(checkpoint.path)))
        step = checkpoint.step if checkpoint.step is not None else "unknown"
        running = start_command(command, cwd=self._exp_dir,
                                log_dir=self._state_dir / "evals", name=f"eval-step-{step}",
                                env=supervisor_path())
        self._running = (running, checkpoint, time.monotonic())
        self._last = str(checkpoint.path)
        log.info("evaluating %s in the background", checkpoint.path.name)

    def _harvest(self) -> None:
        assert self._running is not None
        running, checkpoint, started = self._running
        self._running = None
        result = running.finish()
        metrics = _last_metrics(result.stdout_text())
        summary = (", ".join(f"{k}={v:.6g}" for k, v in metrics.items()) if result.ok
                   else f"FAILED: {result.describe()}")
        row = {"checkpoint": str(checkpoint.path), "step": checkpoint.step, "ok": result.ok,
               "metrics": metrics, "duration_s": round(time.monotonic() - started, 3),
               "skipped": self._skipped}
        with self._results.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        self._context.add_evaluation(checkpoint.step, summary, row["duration_s"],
                                     skipped=[Path(p).name for p in self._skipped])
        self._skipped = []

    def _last_evaluated(self) -> str | None:
        rows = read_evaluations(self._state_dir)
        return rows[-1]["checkpoint"] if rows else None


def read_evaluations(state_dir: Path) -> list[dict]:
    """Every recorded evaluation, oldest first."""
    path = state_dir / "evaluations.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _last_metrics(stdout: str) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for line in stdout.splitlines():
        metrics.update(parse_log_line(line) or {})
    return metrics
