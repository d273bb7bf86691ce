"""Restart policy of the watchdog: a pure decision over the attempts of one training run.

A code failure never restarts. An environment failure restarts, after a capped exponential
backoff with jitter, for as long as training progresses between failures: an attempt
*progressed* when it logged a higher step than any attempt before (the high-water mark), or
left a newer (higher-step) checkpoint to resume from. There is no retry limit by default: a
night of preemptions that each cost a few steps must not end the run. The crash-loop guard
stops only

* the same failure at the same place: one signature ending ``max_same_signature`` attempts
  (default 2) at the same logged step (or all before their first step), with no progress
  between them (no newer checkpoint, no higher logged step; other failures in between
  included). Random external kills land at different steps; a deterministic fault does not.
  Failures of one signature at different steps are not a loop;
* repeated failures before the first logged step since the last attempt that progressed
  (``max_early_failures``, default 2; pytorch#60910: a restart of a startup failure makes no
  sense); and
* the backstop ``max_no_progress`` (default 10): that many attempts in a row that neither
  progressed nor ran healthily, whatever their causes (NVIDIA resiliency-ext's
  ``max_no_progress_restarts``). It catches a loop the guards above miss, such as a failure
  that moves from step to step; a night of preemptions regains its high-water mark long
  before 10 failures in a row. ``None`` turns it off.

Budgets exist as options, off (``None``) by default: ``max_restarts`` (whole run) and
``max_restarts_per_hour``; ``0`` means "no restarts". The backoff step resets after an
attempt that progressed or ran healthily (``healthy_reset_s`` and ``healthy_reset_steps``;
Kubernetes reset-after-stability): a preemption every 25 minutes that loses a few steps waits
the base delay each time. A healthy attempt also starts a new stretch for the crash-loop
guards, so counters that do not climb (per-epoch steps, a bogus ``step=1000000`` line, a
step-less ``last.pt``) cannot make a long run's chance repeats look like a loop. Anchors:
shared/spec/toolkit-and-watchdog-notes.md §5.7 and §5.9.

Example:
    >>> from spml.toolkit.watchdog.classify import Diagnosis
    >>> kill = Diagnosis("environment", "SIGTERM: preemption", "signal:15", ())
    >>> decision = decide_restart(RestartPolicy(jitter=0.0), [AttemptRecord(0, 60, None, 7, kill)])
    >>> decision.restart, decision.delay_s
    (True, 30.0)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from spml.toolkit.watchdog.classify import Diagnosis

logger = logging.getLogger(__name__)

_HOUR_S = 3600.0
_MAX_DOUBLINGS = 64  # 2**64 * any sane base is far past any cap; avoids float overflow


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff and crash-loop limits (notes §5.9); every count is per training run.

    A ``None`` budget is off. Raises:
        ValueError: A delay or count is negative, a loop guard is below 1, or ``jitter`` is
            outside ``[0, 1)``.
    """

    base_delay_s: float = 30.0  # first delay; doubles per consecutive environment failure
    cap_s: float = 600.0  # the doubling stops here (before jitter)
    jitter: float = 0.2  # delay is scaled by a uniform factor in [1 - jitter, 1 + jitter]
    max_restarts_per_hour: int | None = None  # failures ending within one hour (latest included)
    max_restarts: int | None = None  # restarts over the whole run
    max_no_progress: int | None = 10  # backstop: attempts in a row without progress, any cause
    max_early_failures: int = 2  # failures before their first logged step (stop at the 2nd)
    healthy_reset_s: float = 1800.0  # an attempt that ran this long ...
    healthy_reset_steps: int = 1  # ... and advanced this many steps resets the backoff
    max_same_signature: int = 2  # same failure at the same step this many times (no progress)

    def __post_init__(self) -> None:
        guards = {"max_no_progress", "max_early_failures", "max_same_signature"}
        for field in fields(self):
            value, floor = getattr(self, field.name), 1 if field.name in guards else 0
            if field.name != "jitter" and value is not None and value < floor:
                raise ValueError(f"{field.name} must be >= {floor}, got {value!r} "
                                 "(RestartPolicy; a budget may be None = off).")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r} (RestartPolicy). "
                             "Use e.g. 0.2 for +/-20 %.")


@dataclass(frozen=True)
class AttemptRecord:
    """One ended attempt, as the restart policy sees it."""

    started_at: float  # wall-clock seconds (time.time())
    ended_at: float
    started_step: int | None  # step it resumed from (None = fresh start)
    last_step: int | None  # last step seen in its log (None = failed before any step)
    diagnosis: Diagnosis
    # Step of the newest verified checkpoint when it ended, i.e. where the next attempt
    # resumes (None: none, or a step-less name such as last.pt).
    checkpoint_step: int | None = None


@dataclass(frozen=True)
class RestartDecision:
    """Whether to relaunch the run, after how long, and why (numbers quoted)."""

    restart: bool
    delay_s: float
    reason: str


def decide_restart(
    policy: RestartPolicy,
    history: Sequence[AttemptRecord],
    *,
    rng: random.Random | None = None,
) -> RestartDecision:
    """Decide whether the run restarts after its latest attempt (``history[-1]``).

    Args:
        policy: Backoff and crash-loop limits.
        history: Every attempt of the run so far, oldest first; all but the last were restarted.
        rng: Source of the jitter; pass a seeded one for a reproducible delay.

    Returns:
        A restart after ``min(base * 2**k, cap)`` seconds with jitter (k = attempts after the
        last one that progressed or ran healthily) for an environment failure within every
        budget; else ``restart=False`` with a reason that names the cause or the limit hit, and
        ``delay_s=0``.

    Raises:
        ValueError: ``history`` is empty.
    """
    if not history:
        raise ValueError("history must hold at least the attempt that just ended, got [] "
                         "(decide_restart).")
    last = history[-1].diagnosis
    if last.kind == "code":
        return _stop(f"code failure, not restarting: {last.cause} [{last.signature}]")
    for check in _STOP_CHECKS:
        if (why := check(policy, history)) is not None:
            return _stop(f"environment failure ({last.cause}), but {why}")
    k = len(_since_reset(policy, history)) - 1
    delay = min(policy.base_delay_s * 2.0 ** min(k, _MAX_DOUBLINGS), policy.cap_s)
    delay *= 1.0 + (rng or random.Random()).uniform(-policy.jitter, policy.jitter)
    limit = "" if policy.max_restarts is None else f" of at most {policy.max_restarts}"
    reason = (f"environment failure ({last.cause}): restart {len(history)}{limit} in "
              f"{delay:.1f}s (backoff step {k})")
    logger.info("restart decision: %s", reason)
    return RestartDecision(True, delay, reason)


# --- stop checks, in order; each returns why the run must stop, or None ---------------------


def _total_budget(policy: RestartPolicy, history: Sequence[AttemptRecord]) -> str | None:
    done = len(history) - 1
    if policy.max_restarts is None or done < policy.max_restarts:
        return None
    return f"the restart budget is spent: {done} restarts made, max_restarts={policy.max_restarts}"


def _hourly_budget(policy: RestartPolicy, history: Sequence[AttemptRecord]) -> str | None:
    if policy.max_restarts_per_hour is None:
        return None
    now = history[-1].ended_at
    recent = sum(1 for record in history if record.ended_at >= now - _HOUR_S)
    if recent <= policy.max_restarts_per_hour:
        return None
    return (f"{recent} failures within the last hour exceed "
            f"max_restarts_per_hour={policy.max_restarts_per_hour}")


def _early_failures(policy: RestartPolicy, history: Sequence[AttemptRecord]) -> str | None:
    """Failures before the first logged step, counted since the last attempt that progressed
    or ran healthily: a startup failure after hours of progress is a new event."""
    early = [r for r in _since_reset(policy, history) if r.last_step is None]
    if history[-1].last_step is not None or len(early) < policy.max_early_failures:
        return None
    return (f"{len(early)} attempts failed before logging their first step since the last "
            f"attempt that progressed (max_early_failures={policy.max_early_failures}): a "
            "startup problem")


def _same_failure_same_place(policy: RestartPolicy,
                             history: Sequence[AttemptRecord]) -> str | None:
    """The latest failure's signature ended ``max_same_signature`` attempts at the same logged
    step (or before the first step) within the stretch without progress it closes. Other
    failures in between do not hide the repeat (A, B, A at one step is a loop as much as A, A);
    the same signature at different steps is no loop (preemptions land anywhere)."""
    last = history[-1]
    if _progressed(history, len(history) - 1):
        return None
    count, signature = policy.max_same_signature, last.diagnosis.signature
    repeats = sum(1 for record in _stalled_stretch(policy, history)
                  if record.diagnosis.signature == signature
                  and record.last_step == last.last_step)
    if repeats < count:
        return None
    where = ("before their first logged step" if last.last_step is None
             else f"at the same step {last.last_step}")
    return (f"the same failure {signature!r} ended {repeats} attempts {where} with no progress "
            f"between them (no higher logged step, no newer checkpoint; max_same_signature="
            f"{count}): likely a code or hardware fault")


def _no_progress(policy: RestartPolicy, history: Sequence[AttemptRecord]) -> str | None:
    """The backstop: ``max_no_progress`` attempts in a row that neither progressed nor ran
    healthily, whatever their causes."""
    count = policy.max_no_progress
    if count is None or len(history) < count:
        return None
    if any(_resets(policy, history, i) for i in range(len(history) - count, len(history))):
        return None
    best = max((r.last_step for r in history if r.last_step is not None), default=None)
    return (f"{count} consecutive attempts made no progress (none logged a step past the "
            f"furthest reached before, {best}, or left a newer checkpoint; max_no_progress="
            f"{count}, the backstop against loops that move from step to step)")


_STOP_CHECKS: tuple[Callable[[RestartPolicy, Sequence[AttemptRecord]], str | None], ...] = (
    _total_budget, _hourly_budget, _early_failures, _same_failure_same_place, _no_progress,
)


# --- helpers --------------------------------------------------------------------------------


def _stop(reason: str) -> RestartDecision:
    logger.warning("not restarting: %s", reason)
    return RestartDecision(False, 0.0, reason)


def _progressed(history: Sequence[AttemptRecord], i: int) -> bool:
    """Whether attempt ``i`` progressed past every attempt before it (see `_advanced`)."""
    return _advanced(history[i], history[:i])


def _resets(policy: RestartPolicy, history: Sequence[AttemptRecord], i: int) -> bool:
    """Whether attempt ``i`` progressed or ran healthily: the backoff and the guards restart
    their count there."""
    return _progressed(history, i) or _healthy(policy, history[i])


def _advanced(record: AttemptRecord, earlier: Sequence[AttemptRecord]) -> bool:
    """Whether ``record`` progressed past every attempt before it: it logged a step beyond the
    step it resumed from and beyond the furthest step logged before, or it left a checkpoint
    newer than any before.

    The furthest point, not the previous attempt's: failures that alternate between steps 45
    and 44 are no progress. Only a checkpoint with a higher step counts: a step-less one
    (``last.pt``) re-saved at every start would otherwise look like progress forever; logged
    steps judge those runs.
    """
    return _logged_further(record, earlier) or _saved_further(record, earlier)


def _logged_further(record: AttemptRecord, earlier: Sequence[AttemptRecord]) -> bool:
    if record.last_step is None:
        return False
    marks = [r.last_step for r in earlier if r.last_step is not None]
    if record.started_step is not None:
        marks.append(record.started_step)
    return not marks or record.last_step > max(marks)


def _saved_further(record: AttemptRecord, earlier: Sequence[AttemptRecord]) -> bool:
    if record.checkpoint_step is None:
        return False
    before = [r.checkpoint_step for r in earlier if r.checkpoint_step is not None]
    return not before or record.checkpoint_step > max(before)


def _healthy(policy: RestartPolicy, record: AttemptRecord) -> bool:
    """Ran >= healthy_reset_s and advanced >= healthy_reset_steps past its resume step."""
    if record.last_step is None:
        return False
    advanced = record.last_step - (record.started_step or 0)
    ran = record.ended_at - record.started_at
    return ran >= policy.healthy_reset_s and advanced >= policy.healthy_reset_steps


def _since_reset(policy: RestartPolicy, history: Sequence[AttemptRecord]) -> list[AttemptRecord]:
    """The attempts from the last one that progressed or ran healthily on (that one included);
    all of them if none did."""
    resets = [i for i in range(len(history)) if _resets(policy, history, i)]
    return list(history[resets[-1] if resets else 0 :])


def _stalled_stretch(policy: RestartPolicy,
                     history: Sequence[AttemptRecord]) -> list[AttemptRecord]:
    """The attempts the latest one (which did not progress) is compared with: from the last
    earlier attempt that progressed or ran healthily on (that one included: its failure is
    where the stall began). A healthy latest attempt does not end its own stretch: the same
    fault reached after an hour each time is still a loop."""
    resets = [i for i in range(len(history) - 1) if _resets(policy, history, i)]
    return list(history[resets[-1] if resets else 0 :])
