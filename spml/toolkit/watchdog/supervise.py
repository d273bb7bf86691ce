"""One supervised attempt with all its bookkeeping: the unit that a Prefect task retries.

`supervise_once` waits out the backoff decided after the previous attempt, resumes from the
newest checkpoint that verifies (`spml.toolkit.watchdog.resume`; the writer is dead at every
start), runs the attempt, classifies how it ended, records it (`.spml/watchdog/attempts.jsonl`
and `experiment-context.md`) and decides whether a restart is allowed. Everything is on disk,
so a restarted watchdog continues the same history.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spml.protocols.watchdog import WatchdogSettings
from spml.toolkit.diagnostics import diagnosis_lines, evidence_from_values
from spml.toolkit.metrics.log import MetricHistory
from spml.toolkit.process.runner import kill_stale_process_group
from spml.toolkit.watchdog.attempt import AttemptConfig, AttemptOutcome, run_attempt
from spml.toolkit.watchdog.checkpoints import Checkpoint, CheckpointTracker
from spml.toolkit.watchdog.classify import Diagnosis, classify
from spml.toolkit.watchdog.context import ContextFile
from spml.toolkit.watchdog.evaluator import AsyncEvaluator
from spml.toolkit.watchdog.globcheck import checkpoint_suspects, no_match_warning
from spml.toolkit.watchdog.gpu import make_xid_watcher
from spml.toolkit.watchdog.observer import (
    Observer,
    listing,
    progress_line,
    training_seen,
    unseen_text,
)
from spml.toolkit.watchdog.policy import (
    AttemptRecord,
    RestartDecision,
    RestartPolicy,
    decide_restart,
)
from spml.toolkit.watchdog.resume import (
    ResumeChoice,
    UserCheck,
    choose_resume,
    fresh_start_warning,
)
from spml.toolkit.watchdog.state import WatchdogState

__all__ = ["AttemptReport", "Observer", "WatchdogState", "policy_of", "progress_line",
           "supervise_once"]

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
    diagnostics: tuple[str, ...] = ()  # SPML's trees on the failed attempt's logged steps


@dataclass(frozen=True)
class _Run:
    """What every step of one attempt's bookkeeping needs."""

    settings: WatchdogSettings
    exp_dir: Path
    state: WatchdogState
    context: ContextFile
    tracker: CheckpointTracker
    number: int


def policy_of(settings: WatchdogSettings) -> RestartPolicy:
    """The restart policy the settings ask for."""
    return RestartPolicy(base_delay_s=settings.restart_delay, cap_s=settings.restart_cap,
                         max_restarts=settings.max_restarts,
                         max_restarts_per_hour=settings.max_restarts_per_hour,
                         max_no_progress=settings.max_no_progress)


def supervise_once(settings: WatchdogSettings, exp_dir: Path,
                   pending_delay_s: float = 0.0) -> AttemptReport:
    """Run the next attempt after ``pending_delay_s``; classify, record and decide."""
    exp_dir = exp_dir.resolve()
    if pending_delay_s > 0:
        log.info("restarting in %.1fs (backoff)", pending_delay_s)
        time.sleep(pending_delay_s)
    state = WatchdogState(exp_dir)
    if kill_stale_process_group(state.dir / "train.pid"):
        log.warning("killed a training run left by a watchdog that died")
    run = _Run(settings, exp_dir, state, ContextFile(exp_dir / "experiment-context.md"),
               CheckpointTracker(settings.checkpoint_glob, exp_dir,
                                 stable_s=settings.checkpoint_stable),
               state.attempts_started() + 1)
    choice = state.load_choice(listing(run.tracker)) or _choose(run)
    _announce_start(run, choice)
    evaluator = (AsyncEvaluator(settings.eval_command, exp_dir, state.dir, run.context)
                 if settings.eval_command else None)
    observer = Observer(settings, state, run.context, run.tracker, evaluator)
    watcher = make_xid_watcher()  # GPU hardware errors; a clean no-op without NVML
    watcher.start()
    if not watcher.available:
        log.info("GPU Xid events not watched: %s", watcher.reason)
    try:
        outcome = run_attempt(_config(settings, exp_dir, state), run.number, choice.checkpoint,
                              on_poll=observer, xid_events=watcher.drain)
    finally:
        watcher.stop()
    if (marked := run.tracker.newest_marked()) is not None:  # written after the last poll
        state.mark_complete(marked)
    if evaluator is not None:
        # A finished run's last checkpoint is evaluated; a failed run restarts at once.
        if outcome.finished:
            evaluator.poll(_choose(run).checkpoint)
        evaluator.drain(timeout_s=EVAL_DRAIN_S if outcome.finished else 0.0)
    return _conclude(run, outcome)


def _choose(run: _Run) -> ResumeChoice:
    """The newest checkpoint that verifies (the writer is dead whenever this is called)."""
    settings = run.settings
    check = (UserCheck(settings.checkpoint_check, run.exp_dir, run.state.dir / "checks",
                       settings.checkpoint_check_timeout) if settings.checkpoint_check else None)

    def vouched(checkpoint: Checkpoint) -> bool:
        return run.tracker.is_marked(checkpoint.path) or run.state.remembers(checkpoint)

    return choose_resume(run.tracker, vouched, check)


def _announce_start(run: _Run, choice: ResumeChoice) -> None:
    warning = _scratch_warning(run, choice)
    if warning:
        log.warning(warning)
    elif warning := fresh_start_warning(choice, run.settings.checkpoint_glob):
        log.warning(warning)  # no progress yet (first attempt): files it cannot vouch for
        _record(run.context.add_alert, f"checkpoints: {warning}")
        _record(run.state.add_alert, f"checkpoints: {warning}")
    resumed = choice.describe() if choice.checkpoint else "fresh start"
    log.info("attempt %d resumes from %s", run.number, resumed)
    _record(run.context.set_status, "running", attempt=str(run.number), resumed_from=resumed,
            skipped_checkpoints="; ".join(choice.skipped) or None,
            warning=f"checkpoints: {warning}" if warning else None)


def _scratch_warning(run: _Run, choice: ResumeChoice,
                     reached: int | None = None) -> str | None:
    """A restart from scratch after training made progress must not pass unnoticed."""
    steps = [r.last_step for r in run.state.episode() if r.last_step is not None]
    best = max([*steps, *([reached] if reached is not None else [])], default=None)
    if choice.checkpoint is not None or not best:
        return None
    glob = run.settings.checkpoint_glob
    if choice.candidates:
        why = (f"none of the {choice.candidates} checkpoint(s) matching {glob!r} verified "
               "(see the skipped checkpoints)")
    else:
        log_file = run.exp_dir / run.settings.log_file
        why = no_match_warning(glob, checkpoint_suspects(run.exp_dir, {log_file}),
                               f"although training reached step {best}")
    return f"restart from SCRATCH after reaching step {best}: {why}"


def _config(settings: WatchdogSettings, exp_dir: Path, state: WatchdogState) -> AttemptConfig:
    return AttemptConfig(
        train_command=settings.train_command, exp_dir=exp_dir,
        log_file=exp_dir / settings.log_file if settings.log_file else None,
        hang_timeout_s=settings.hang_timeout, startup_grace_s=settings.startup_grace,
        poll_interval_s=settings.poll_interval, state_dir=state.dir)


def _conclude(run: _Run, outcome: AttemptOutcome) -> AttemptReport:
    settings, state, context, number = run.settings, run.state, run.context, run.number
    resumed = str(outcome.resume_from) if outcome.resume_from else None
    last = outcome.end.last_step
    short = settings.total_steps is not None and (last or 0) < settings.total_steps
    log_file = run.exp_dir / settings.log_file if settings.log_file else None
    # The writer is dead: the checkpoints listed now are those a restart would choose from.
    checkpoints = listing(run.tracker)
    seen = training_seen(log_file, last, bool(checkpoints))
    if outcome.finished and not short and seen:
        _record(context.set_status, "completed", attempts=str(number), last_step=last)
        return AttemptReport(number, True, None, None, last, resumed)
    diagnosis = _diagnose(outcome, seen, log_file, settings.total_steps)
    # Where a restart would resume: chosen now, while the writer is surely dead, and kept
    # for the next attempt. Its step is this attempt's progress as the policy sees it.
    choice = ResumeChoice(None)
    if diagnosis.kind == "environment":
        choice = _choose(run)
        state.save_choice(choice, checkpoints)
    state.append(AttemptRecord(outcome.started_at, outcome.ended_at, outcome.end.started_step,
                               last, diagnosis, choice.checkpoint.step if choice.checkpoint
                               else None))
    decision = decide_restart(policy_of(settings), state.episode())
    restarting = decision.restart and diagnosis.kind == "environment"
    action = (f"restart in {decision.delay_s:.0f}s" if restarting
              else f"stopped: {decision.reason}")
    warning = _scratch_warning(run, choice, last) if restarting else None
    trees = tree_diagnoses(outcome.history)
    _record(context.add_diagnosis, last, diagnosis.cause, diagnosis.kind, diagnosis.evidence,
            action, resumed or "none", restart_from=choice.describe() if restarting else None,
            skipped=choice.skipped, warning=warning, diagnostics=trees)
    log.warning("attempt %d ended: %s (%s) -> %s", number, diagnosis.cause, diagnosis.kind,
                action)
    for line in trees:
        log.warning("attempt %d: %s", number, line)
    if not restarting:
        state_name = "stopped_code_failure" if diagnosis.kind == "code" else "stopped_crash_loop"
        _record(context.set_status, state_name, attempts=number, last_step=last,
                reason=decision.reason)
    return AttemptReport(number, False, diagnosis, decision, last, resumed, tuple(trees))


def tree_diagnoses(history: MetricHistory) -> list[str]:
    """SPML's diagnostics (`spml.toolkit.diagnostics`) on the attempt's logged steps: each
    line names its tree and the numbers that decided; none without logged metrics. They add
    to the classification (how the attempt ended), never change it."""
    return diagnosis_lines(evidence_from_values(point.values for point in history.points))


def _diagnose(outcome: AttemptOutcome, seen: bool, log_file: Path | None,
              total_steps: int | None) -> Diagnosis:
    """Why an attempt that did not finish training ended. An exit 0 is no finish when the
    watchdog never saw training (a wrong log_file, a command that does not train), nor
    before total_steps (preempted after a save)."""
    if not outcome.finished:
        return classify(outcome.end)
    if not seen:
        waited = outcome.ended_at - outcome.started_at
        return Diagnosis("code", f"exited 0 but {unseen_text(log_file, waited)}",
                         "exit0-unseen", ("exit status 0",))
    return Diagnosis("environment", f"exited 0 at step {outcome.end.last_step} before "
                     f"total_steps {total_steps} (preempted after saving?)", "exit0-early",
                     ("exit status 0",))


def _record(write: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Write to experiment-context.md; a full disk must not stop the watchdog's decision."""
    try:
        write(*args, **kwargs)
    except OSError as exc:
        log.error("could not update experiment-context.md: %s", exc)
