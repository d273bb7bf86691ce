"""What the watchdog does at every poll while training runs: checkpoints, progress, alerts.

Checkpoint completeness is judged here by stability (or a marker) only while the writer is
alive; it decides which checkpoint an asynchronous evaluation may read. A restart does not
rely on it: it verifies checkpoints by their structure (`spml.toolkit.watchdog.resume`).

A save is activity, not a hang: the poll reports activity when a checkpoint changed or when a
temporary file where checkpoints are written (``step_20.pt.tmp``, ``tmp-checkpoint-20/``)
appeared, grew or was touched (`CheckpointTracker.temp_files`). A checkpoint path that cannot
be read is skipped (`CheckpointTracker.survey`); no file-system error at a poll may stop the
supervision or the training it supervises.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from spml.protocols.watchdog import WatchdogSettings
from spml.toolkit.metrics.log import MetricHistory, MetricPoint
from spml.toolkit.watchdog.alerts import AlertMonitor, Baseline
from spml.toolkit.watchdog.checkpoints import Checkpoint, CheckpointTracker
from spml.toolkit.watchdog.context import ContextFile
from spml.toolkit.watchdog.evaluator import AsyncEvaluator
from spml.toolkit.watchdog.globcheck import GlobWatch
from spml.toolkit.watchdog.state import Listing, WatchdogState

__all__ = ["Observer", "listing", "progress_line", "training_seen", "unseen_text"]

log = logging.getLogger("spml.toolkit.watchdog.supervise")  # the CLI shows this logger's lines


class Observer:
    """Called at every poll while the writer is alive: checkpoints, progress, alerts."""

    def __init__(self, settings: WatchdogSettings, state: WatchdogState, context: ContextFile,
                 tracker: CheckpointTracker, evaluator: AsyncEvaluator | None) -> None:
        self._settings, self._state, self._context = settings, state, context
        self._tracker, self._evaluator = tracker, evaluator
        # Files that existed before this attempt were written by a writer that may have died
        # mid-save: stability alone cannot vouch for them, only a change seen now (or a marker).
        self._before = listing(tracker)
        self._last_listing = self._before
        self._last_temp = _temp_files(tracker)
        self._monitor = AlertMonitor(baseline=_baseline(settings))
        self._last_point: MetricPoint | None = None
        log_file = tracker.base_dir / settings.log_file if settings.log_file else None
        self._glob = GlobWatch(settings.checkpoint_glob, tracker.base_dir,
                               interval_steps=settings.checkpoint_interval,
                               grace_s=settings.startup_grace,
                               exclude={log_file} if log_file else None)
        self._warned: str | None = None
        self._first_step: int | None = None
        self._log_file = log_file
        self._started = time.monotonic()

    def _trustworthy(self, checkpoint: Checkpoint) -> bool:
        before = self._before.get(str(checkpoint.path))
        return (before is None or before != [checkpoint.size, checkpoint.mtime]
                or self._tracker.is_marked(checkpoint.path))

    def __call__(self, history: MetricHistory) -> bool:
        """Track checkpoints; on new metrics log a progress line and raise new alerts.

        Returns:
            Whether a checkpoint file changed since the last poll (a save in progress is
            activity, not a hang).
        """
        now_listing, temp = listing(self._tracker), _temp_files(self._tracker)
        active = now_listing != self._last_listing or temp != self._last_temp
        self._last_listing, self._last_temp = now_listing, temp
        newest = next((c for c in self._tracker.complete(time.time())
                       if self._trustworthy(c)), None)
        if newest is not None:
            try:
                self._state.mark_complete(newest)
            except OSError as exc:  # a full disk must not stop the supervision
                log.error("could not record checkpoint %s as complete: %s", newest.path, exc)
        if self._evaluator is not None:
            self._evaluator.poll(newest)
        new_points = self._new_points(history)
        if self._first_step is None:
            self._first_step = next((p.step for p in new_points if p.step is not None), None)
        glob = self._glob.check(bool(now_listing), self._first_step, history.last_step)
        warning = f"checkpoints: {glob}" if glob else self._unseen(history, bool(now_listing))
        if warning != self._warned:
            self._announce(warning)
        if not new_points:
            return active
        line = progress_line(new_points[-1], self._settings.total_steps)
        log.info(line + (f" — WARNING: {warning}" if warning else ""))
        for alert in self._monitor.update(new_points):
            log.warning("alert: %s", alert.message)
            text = f"step {alert.step}: [{alert.rule}] {alert.message}"
            self._context.add_alert(text)
            self._state.add_alert(text)
        return active

    def _unseen(self, history: MetricHistory, any_checkpoint: bool) -> str | None:
        """After the startup grace, a run that shows no sign of training (no log file, no step,
        no checkpoint) is named: a wrong `log_file` or a command that does not train."""
        waited = time.monotonic() - self._started
        if waited < (self._settings.startup_grace or UNSEEN_AFTER_S):
            return None
        if not training_seen(self._log_file, history.last_step, any_checkpoint):
            return f"training: {unseen_text(self._log_file, waited)}"
        return None

    def _new_points(self, history: MetricHistory) -> list[MetricPoint]:
        """Points after the last one seen (by identity: the history drops its oldest)."""
        points = history.points
        start = 0
        if self._last_point is not None:
            start = next((len(points) - i for i, p in enumerate(reversed(points))
                          if p is self._last_point), 0)
        if points:
            self._last_point = points[-1]
        return points[start:]

    def _announce(self, warning: str | None) -> None:
        """A warning (or its end) goes to the log, the status and, once, the alerts: a glob
        that matches nothing while steps advance, a run that shows no sign of training."""
        self._warned = warning
        try:
            self._context.update_status(warning=warning or "none")
            if warning is not None:
                log.warning(warning)
                self._context.add_alert(warning)
                self._state.add_alert(warning)
        except OSError as exc:  # a full disk must not stop the supervision
            log.error("could not update experiment-context.md: %s", exc)


# With a startup grace of 0, a run still gets this long to show its first sign of training.
UNSEEN_AFTER_S = 10.0


def training_seen(log_file: Path | None, last_step: int | None, any_checkpoint: bool) -> bool:
    """Whether the watchdog has seen the run train: its log file, a logged step, a checkpoint."""
    return last_step is not None or any_checkpoint or (log_file is not None and log_file.exists())


def unseen_text(log_file: Path | None, waited_s: float) -> str:
    """What a run that shows no sign of training is told (status, alerts, diagnosis)."""
    where = f"the log file {log_file.name} has not appeared, " if log_file else ""
    return (f"no training seen after {waited_s:.0f}s: {where}no step was logged and no "
            "checkpoint matched the glob; check train_command and log_file")


def _temp_files(tracker: CheckpointTracker) -> tuple[tuple[str, int, float], ...]:
    try:
        return tracker.temp_files()
    except OSError:  # os.walk reports nothing it cannot list; a stat race is no activity
        return ()


def listing(tracker: CheckpointTracker) -> Listing:
    """``{path: [size, mtime]}`` of every candidate now (JSON-friendly, for the state file)."""
    return {str(c.path): [c.size, c.mtime] for c in tracker.measure_all()}


def progress_line(point: MetricPoint, total_steps: int | None) -> str:
    """`[HH:MM] step cur/total (pct) — loss=…, grad_norm=…`."""
    step = "?" if point.step is None else str(point.step)
    if total_steps and point.step is not None:
        step = f"{point.step}/{total_steps} ({100 * point.step / total_steps:.0f}%)"
    shown = ", ".join(f"{k}={v:.4g}" for k, v in list(point.values.items())[:4])
    return f"[{time.strftime('%H:%M')}] step {step} — {shown}"


def _baseline(settings: WatchdogSettings) -> Baseline | None:
    given = settings.baseline
    if given is None:
        return None
    return Baseline(loss=given.loss, grad_norm=given.grad_norm, throughput=given.throughput,
                    mfu=given.mfu)

