"""One supervised attempt with all its bookkeeping: the unit that a Prefect task retries.

`supervise_once` waits out the backoff decided after the previous attempt, resumes from the
newest checkpoint that was seen complete, runs the attempt, classifies how it ended, records it
(`.spml/watchdog/attempts.jsonl` and `experiment-context.md`) and decides whether a restart is
allowed. Everything is on disk, so a restarted watchdog continues the same history.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from spml.protocols.watchdog import WatchdogSettings
from spml.toolkit.files import write_atomic
from spml.toolkit.metrics.log import MetricHistory, MetricPoint
from spml.toolkit.process.runner import kill_stale_process_group
from spml.toolkit.watchdog.alerts import AlertMonitor, Baseline
from spml.toolkit.watchdog.attempt import AttemptConfig, AttemptOutcome, run_attempt
from spml.toolkit.watchdog.checkpoints import Checkpoint, CheckpointTracker
from spml.toolkit.watchdog.classify import Diagnosis, classify
from spml.toolkit.watchdog.context import ContextFile
from spml.toolkit.watchdog.evaluator import AsyncEvaluator
from spml.toolkit.watchdog.gpu import make_xid_watcher
from spml.toolkit.watchdog.policy import (
    AttemptRecord,
    RestartDecision,
    RestartPolicy,
    decide_restart,
)

log = logging.getLogger(__name__)
EVAL_DRAIN_S = 120.0  # how long an attempt's end waits for a running evaluation


@dataclass(frozen=True)
class AttemptReport:
    """What the Prefect task needs to decide between done, retry and stop."""

    number: int
    finished: bool
    diagnosis: Diagnosis | None
    decision: RestartDecision | None
    last_step: int | None
    resumed_from: str | None


class WatchdogState:
    """The watchdog's durable state under `<exp>/.spml/watchdog/`."""

    def __init__(self, exp_dir: Path) -> None:
        self.dir = exp_dir / ".spml" / "watchdog"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._attempts = self.dir / "attempts.jsonl"
        self._complete = self.dir / "complete-checkpoints.json"

    def history(self) -> list[AttemptRecord]:
        """Every recorded attempt, oldest first."""
        if not self._attempts.is_file():
            return []
        rows = [json.loads(line) for line in self._attempts.read_text().splitlines() if line]
        return [AttemptRecord(**{**r, "diagnosis": Diagnosis(**{
            **r["diagnosis"], "evidence": tuple(r["diagnosis"]["evidence"])})})
                for r in rows if r.get("diagnosis")]

    def start_episode(self) -> None:
        """A new watchdog run begins: earlier failures no longer count against its budgets."""
        (self.dir / "episode-start.txt").write_text(str(len(self.history())))

    def episode(self) -> list[AttemptRecord]:
        """The attempts of the current watchdog run (what the crash-loop guard judges)."""
        path = self.dir / "episode-start.txt"
        start = int(path.read_text()) if path.is_file() else 0
        return self.history()[start:]

    def append(self, record: AttemptRecord) -> None:
        """Record one ended attempt."""
        with self._attempts.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(record)) + "\n")

    def attempts_started(self) -> int:
        """Attempts started so far (finished ones included)."""
        return len(list(self.dir.glob("attempt-*")))

    def mark_complete(self, checkpoint: Checkpoint) -> None:
        """Remember a checkpoint seen complete while its writer was alive (size and mtime too,
        so one rewritten in place afterwards is not trusted any more)."""
        known = self._known()
        entry = [checkpoint.step, checkpoint.size, checkpoint.mtime]
        if known.get(str(checkpoint.path)) != entry:
            known[str(checkpoint.path)] = entry
            write_atomic(self._complete, json.dumps(known))

    def resume_point(self) -> Checkpoint | None:
        """The newest remembered-complete checkpoint that still exists unchanged."""
        found = []
        for name, (step, size, mtime) in self._known().items():
            path = Path(name)
            try:
                stat = path.stat()
            except OSError:
                continue
            if (stat.st_size, stat.st_mtime) == (size, mtime) or _is_dir(path):
                found.append(Checkpoint(path, step, stat.st_size, stat.st_mtime))
        return max(found, key=lambda c: (c.step is not None, c.step or 0, c.mtime), default=None)

    def add_alert(self, line: str) -> None:
        """Keep an alert for the run's alert artifact."""
        with (self.dir / "alerts.log").open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def alerts(self) -> list[str]:
        """Every alert raised so far."""
        path = self.dir / "alerts.log"
        return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []

    def pending_delay(self) -> float:
        """The backoff decided after the last failed attempt (0 when none)."""
        path = self.dir / "next-delay.txt"
        return float(path.read_text()) if path.is_file() else 0.0

    def save_delay(self, delay_s: float) -> None:
        """Record the backoff the next attempt must wait out first."""
        write_atomic(self.dir / "next-delay.txt", f"{delay_s}")

    def _known(self) -> dict[str, list]:
        try:
            known = json.loads(self._complete.read_text()) if self._complete.is_file() else {}
        except ValueError:
            log.warning("ignoring an unreadable %s", self._complete.name)
            return {}
        return {k: v for k, v in known.items() if isinstance(v, list) and len(v) == 3}


def _is_dir(path: Path) -> bool:
    return path.is_dir()  # a directory checkpoint's own mtime changes with its listing


def policy_of(settings: WatchdogSettings) -> RestartPolicy:
    """The restart policy the settings ask for."""
    return RestartPolicy(base_delay_s=settings.restart_delay, cap_s=settings.restart_cap,
                         max_restarts=settings.max_restarts,
                         max_restarts_per_hour=settings.max_restarts_per_hour)


def supervise_once(settings: WatchdogSettings, exp_dir: Path,
                   pending_delay_s: float = 0.0) -> AttemptReport:
    """Run the next attempt after ``pending_delay_s``; classify, record and decide."""
    exp_dir = exp_dir.resolve()
    if pending_delay_s > 0:
        log.info("restarting in %.1fs (backoff)", pending_delay_s)
        time.sleep(pending_delay_s)
    state = WatchdogState(exp_dir)
    context = ContextFile(exp_dir / "experiment-context.md")
    if kill_stale_process_group(state.dir / "train.pid"):
        log.warning("killed a training run left by a watchdog that died")
    number = state.attempts_started() + 1
    resume = state.resume_point()
    tracker = CheckpointTracker(settings.checkpoint_glob, exp_dir,
                                stable_s=settings.checkpoint_stable)
    context.set_status("running", attempt=str(number),
                       resumed_from=str(resume.path) if resume else "fresh start")
    evaluator = (AsyncEvaluator(settings.eval_command, exp_dir, state.dir, context)
                 if settings.eval_command else None)
    observer = Observer(settings, state, context, tracker, evaluator)
    watcher = make_xid_watcher()  # GPU hardware errors; a clean no-op without NVML
    watcher.start()
    if not watcher.available:
        log.info("GPU Xid events not watched: %s", watcher.reason)
    try:
        outcome = run_attempt(_config(settings, exp_dir, state), number, resume,
                              on_poll=observer, xid_events=watcher.drain)
    finally:
        watcher.stop()
    if (marked := tracker.newest_marked()) is not None:  # written after the last poll
        state.mark_complete(marked)
    if evaluator is not None:
        # A finished run's last checkpoint is evaluated; a failed run restarts at once.
        if outcome.finished:
            evaluator.poll(state.resume_point())
        evaluator.drain(timeout_s=EVAL_DRAIN_S if outcome.finished else 0.0)
    return _conclude(settings, state, context, number, outcome)


class Observer:
    """Called at every poll while the writer is alive: checkpoints, progress, alerts.

    Checkpoint completeness is only judged here, never after the attempt died: once the writer
    is gone a half-written file also looks "stable".
    """

    def __init__(self, settings: WatchdogSettings, state: WatchdogState, context: ContextFile,
                 tracker: CheckpointTracker, evaluator: AsyncEvaluator | None) -> None:
        self._settings, self._state, self._context = settings, state, context
        self._tracker, self._evaluator = tracker, evaluator
        # Files that existed before this attempt were written by a writer that may have died
        # mid-save: stability alone cannot vouch for them, only a change seen now (or a marker).
        self._before = _signatures(tracker)
        self._last_signatures = self._before
        self._monitor = AlertMonitor(baseline=_baseline(settings))
        self._seen = 0

    def _trustworthy(self, checkpoint: Checkpoint) -> bool:
        before = self._before.get(checkpoint.path)
        return (before is None or before != (checkpoint.size, checkpoint.mtime)
                or self._tracker.is_marked(checkpoint.path))

    def __call__(self, history: MetricHistory) -> bool:
        """Track checkpoints; on new metrics log a progress line and raise new alerts.

        Returns:
            Whether a checkpoint file changed since the last poll (a save in progress is
            activity, not a hang).
        """
        now_signatures = _signatures(self._tracker)
        active = now_signatures != self._last_signatures
        self._last_signatures = now_signatures
        newest = next((c for c in self._tracker.complete(time.time())
                       if self._trustworthy(c)), None)
        if newest is not None:
            self._state.mark_complete(newest)
        if self._evaluator is not None:
            self._evaluator.poll(newest)
        new_points = history.points[self._seen:]
        self._seen = len(history.points)
        if not new_points:
            return active
        log.info(progress_line(new_points[-1], self._settings.total_steps))
        for alert in self._monitor.update(new_points):
            log.warning("alert: %s", alert.message)
            line = f"step {alert.step}: [{alert.rule}] {alert.message}"
            self._context.add_alert(line)
            self._state.add_alert(line)
        return active


def _signatures(tracker: CheckpointTracker) -> dict[Path, tuple[int, float]]:
    return {c.path: (c.size, c.mtime) for c in tracker.measure_all()}


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


def _config(settings: WatchdogSettings, exp_dir: Path, state: WatchdogState) -> AttemptConfig:
    return AttemptConfig(
        train_command=settings.train_command, exp_dir=exp_dir,
        log_file=exp_dir / settings.log_file if settings.log_file else None,
        hang_timeout_s=settings.hang_timeout, startup_grace_s=settings.startup_grace,
        poll_interval_s=settings.poll_interval, state_dir=state.dir)


def _conclude(settings: WatchdogSettings, state: WatchdogState, context: ContextFile,
              number: int, outcome: AttemptOutcome) -> AttemptReport:
    resumed = str(outcome.resume_from) if outcome.resume_from else None
    last = outcome.end.last_step
    short = settings.total_steps is not None and (last or 0) < settings.total_steps
    if outcome.finished and not short:
        _record(context.set_status, "completed", attempts=str(number), last_step=last)
        return AttemptReport(number, True, None, None, last, resumed)
    diagnosis = (classify(outcome.end) if not outcome.finished else Diagnosis(
        "environment", f"exited 0 at step {last} before total_steps {settings.total_steps} "
        "(preempted after saving?)", "exit0-early", ("exit status 0",)))
    state.append(AttemptRecord(outcome.started_at, outcome.ended_at, outcome.end.started_step,
                               last, diagnosis))
    decision = decide_restart(policy_of(settings), state.episode())
    action = (f"restart in {decision.delay_s:.0f}s" if decision.restart
              else f"stopped: {decision.reason}")
    _record(context.add_diagnosis, last, diagnosis.cause, diagnosis.kind, diagnosis.evidence,
            action, resumed or "none")
    log.warning("attempt %d ended: %s (%s) -> %s", number, diagnosis.cause, diagnosis.kind,
                action)
    if not (decision.restart and diagnosis.kind == "environment"):
        state_name = "stopped_code_failure" if diagnosis.kind == "code" else "stopped_crash_loop"
        _record(context.set_status, state_name, attempts=number, last_step=last,
                reason=decision.reason)
    return AttemptReport(number, False, diagnosis, decision, last, resumed)


def _record(write: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Write to experiment-context.md; a full disk must not stop the watchdog's decision."""
    try:
        write(*args, **kwargs)
    except OSError as exc:
        log.error("could not update experiment-context.md: %s", exc)
