"""Tests of spml.toolkit.watchdog.policy: backoff, reset-after-healthy and every stop reason."""

from __future__ import annotations

import doctest
import random

import pytest

from spml.toolkit.watchdog import policy as policy_module
from spml.toolkit.watchdog.classify import Diagnosis
from spml.toolkit.watchdog.policy import (
    AttemptRecord,
    RestartDecision,
    RestartPolicy,
    decide_restart,
)

NO_JITTER = RestartPolicy(jitter=0.0)
BUDGETS = RestartPolicy(jitter=0.0, max_restarts=10, max_restarts_per_hour=3, max_no_progress=3)
PREEMPTED = Diagnosis("environment", "SIGTERM: preemption or external stop", "signal:15", ())
HOURS = 7200.0  # spacing that keeps attempts out of each other's hourly window


def _diag(signature: str, kind: str = "environment") -> Diagnosis:
    return Diagnosis(kind, f"cause of {signature}", signature, ())  # type: ignore[arg-type]


def _attempt(start: float, started_step: int | None, last_step: int | None, *,
             minutes: float = 10.0, diagnosis: Diagnosis = PREEMPTED,
             checkpoint_step: int | None = None) -> AttemptRecord:
    return AttemptRecord(start, start + minutes * 60, started_step, last_step, diagnosis,
                         checkpoint_step)


def _progressing(count: int, *, spacing_s: float = HOURS, minutes: float = 10.0,
                 signature: str = "signal:15") -> list[AttemptRecord]:
    """``count`` short failed attempts, each getting 100 steps further than the one before."""
    return [_attempt(i * spacing_s, i * 100 or None, (i + 1) * 100, minutes=minutes,
                     diagnosis=_diag(signature)) for i in range(count)]


def _stalled(count: int, *, minutes: float = 10.0) -> list[AttemptRecord]:
    """A first attempt to step 1000 (checkpoint 900), then ``count - 1`` short failures that
    resume from 900 and die before 1000, each at another step: no progress, no loop."""
    first = _attempt(0, None, 1000, minutes=minutes, checkpoint_step=900)
    return [first, *(_attempt(i * HOURS, 900, 900 + 10 * i, minutes=minutes,
                              checkpoint_step=900) for i in range(1, count))]


def _decide(history: list[AttemptRecord], policy: RestartPolicy = NO_JITTER) -> RestartDecision:
    return decide_restart(policy, history, rng=random.Random(0))


# --- restarts and backoff -------------------------------------------------------------------


def test_module_example_runs() -> None:
    assert doctest.testmod(policy_module).failed == 0


def test_environment_failure_restarts_after_the_base_delay() -> None:
    decision = _decide(_progressing(1))
    assert decision == RestartDecision(True, 30.0, decision.reason)
    assert "restart 1 in 30.0s (backoff step 0)" in decision.reason
    assert "cause of signal:15" in decision.reason
    assert "restart 1 of at most 10 in 30.0s" in _decide(_progressing(1), BUDGETS).reason


def test_backoff_doubles_per_consecutive_failure_up_to_the_cap() -> None:
    delays = [_decide(_stalled(n)).delay_s for n in range(1, 10)]
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0, 600.0, 600.0]


def test_an_attempt_that_progressed_resets_the_backoff() -> None:
    history = _stalled(5)
    assert _decide(history).delay_s == 480.0
    onward = _attempt(6 * HOURS, 900, 1100, checkpoint_step=1000)  # past the high-water mark
    assert _decide([*history, onward]).delay_s == 30.0
    again = _attempt(7 * HOURS, 1000, 1050, checkpoint_step=1000)
    assert _decide([*history, onward, again]).delay_s == 60.0
    saved = _attempt(6 * HOURS, 900, 990, checkpoint_step=950)  # no higher step, newer ckpt
    assert _decide([*history, saved]).delay_s == 30.0


def test_custom_cap() -> None:
    policy = RestartPolicy(base_delay_s=100.0, cap_s=250.0, jitter=0.0)
    assert [_decide(_stalled(n), policy).delay_s for n in range(1, 5)] == [100, 200, 250, 250]


def test_base_zero_restarts_immediately() -> None:
    policy = RestartPolicy(base_delay_s=0.0)
    assert [_decide(_stalled(n), policy).delay_s for n in (1, 4, 8)] == [0.0, 0.0, 0.0]


def test_jitter_stays_within_bounds_and_is_deterministic_with_a_seed() -> None:
    history, policy = _stalled(2), RestartPolicy()  # backoff step 1: 60 s +/- 20 %
    delays = [decide_restart(policy, history, rng=random.Random(seed)).delay_s
              for seed in range(50)]
    assert all(48.0 <= delay <= 72.0 for delay in delays)
    assert len(set(delays)) > 40
    assert decide_restart(policy, history, rng=random.Random(7)) == decide_restart(
        policy, history, rng=random.Random(7))
    assert 48.0 <= decide_restart(policy, history).delay_s <= 72.0  # unseeded


def test_healthy_attempt_resets_the_backoff() -> None:
    history = _stalled(4)
    assert _decide(history).delay_s == 240.0
    # Ran >= 30 min and advanced 90 steps past its resume step, though not past step 1000.
    healthy = _attempt(5 * HOURS, 900, 990, minutes=31, checkpoint_step=900)
    assert _decide([*history, healthy]).delay_s == 30.0
    quick = _attempt(6 * HOURS, 900, 950, checkpoint_step=900)
    assert _decide([*history, healthy, quick]).delay_s == 60.0


@pytest.mark.parametrize(("minutes", "last_step"), [(29, 990), (31, 950)])
def test_reset_needs_both_enough_time_and_enough_steps(minutes: float, last_step: int) -> None:
    policy = RestartPolicy(jitter=0.0, healthy_reset_steps=100)
    history = [*_stalled(4), _attempt(5 * HOURS, 900, last_step, minutes=minutes,
                                      checkpoint_step=900)]
    assert decide_restart(policy, history).delay_s == 480.0


# --- stop reasons ---------------------------------------------------------------------------


def test_code_failure_never_restarts_and_names_the_cause() -> None:
    bug = Diagnosis("code", "python exception: KeyError: 'lr'", "exc:KeyError@train.py:12", ())
    decision = _decide([_attempt(0, None, 40, diagnosis=bug)])
    assert (decision.restart, decision.delay_s) == (False, 0.0)
    assert decision.reason == ("code failure, not restarting: python exception: KeyError: 'lr' "
                               "[exc:KeyError@train.py:12]")


def test_total_restart_budget_when_set() -> None:
    assert _decide(_progressing(10), BUDGETS).restart
    decision = _decide(_progressing(11), BUDGETS)
    assert not decision.restart
    assert "10 restarts made, max_restarts=10" in decision.reason


def test_hourly_restart_budget_when_set() -> None:
    assert _decide(_progressing(3, spacing_s=900, minutes=5), BUDGETS).restart
    decision = _decide(_progressing(4, spacing_s=900, minutes=5), BUDGETS)
    assert not decision.restart
    assert "4 failures within the last hour exceed max_restarts_per_hour=3" in decision.reason


def test_failures_older_than_an_hour_do_not_count_against_the_hourly_budget() -> None:
    assert _decide(_progressing(4, spacing_s=1300, minutes=5), BUDGETS).restart


def test_same_signature_twice_at_the_same_step_without_progress_stops() -> None:
    nccl = _diag("nccl:timeout:ALLREDUCE")
    first = _attempt(0, None, 1500, diagnosis=nccl, checkpoint_step=1000)
    again = _attempt(HOURS, 1000, 1500, diagnosis=nccl, checkpoint_step=1000)  # resumed, same
    decision = _decide([first, again])
    assert not decision.restart
    assert ("the same failure 'nccl:timeout:ALLREDUCE' ended 2 attempts at the same step 1500 "
            "with no progress between them (no higher logged step, no newer checkpoint; "
            "max_same_signature=2)") in decision.reason


def test_same_signature_at_another_step_is_no_loop() -> None:
    nccl = _diag("nccl:timeout:ALLREDUCE")
    first = _attempt(0, None, 1500, diagnosis=nccl, checkpoint_step=1000)
    again = _attempt(HOURS, 1000, 1400, diagnosis=nccl, checkpoint_step=1000)  # before 1500
    assert _decide([first, again]).restart


def test_same_signature_with_progress_or_different_signatures_restarts() -> None:
    nccl = _diag("nccl:timeout:ALLREDUCE")
    first = _attempt(0, None, 1500, diagnosis=nccl)
    assert _decide([first, _attempt(HOURS, 1000, 1600, diagnosis=nccl)]).restart
    assert _decide([first, _attempt(HOURS, 1000, 1400, diagnosis=_diag("hang"))]).restart


def test_a_failure_recurring_between_other_failures_without_progress_stops() -> None:
    # A, B, A with no progress is a loop as much as A, A: the B in between hides nothing.
    hang, nccl = _diag("hang"), _diag("nccl:timeout:ALLREDUCE")
    history = [_attempt(0, 40, 45, diagnosis=hang, checkpoint_step=40),
               _attempt(60, 40, 44, diagnosis=nccl, checkpoint_step=40)]
    assert _decide(history).restart  # two different failures: not (yet) a loop
    history.append(_attempt(120, 40, 45, diagnosis=hang, checkpoint_step=40))
    decision = _decide(history)
    assert not decision.restart
    assert "the same failure 'hang' ended 2 attempts at the same step 45" in decision.reason
    # ... but progress in between starts a new stretch: A, (progress) B, A restarts.
    history[1] = _attempt(60, 40, 55, diagnosis=nccl, checkpoint_step=50)
    history[2] = _attempt(120, 50, 55, diagnosis=hang, checkpoint_step=50)
    assert _decide(history).restart


def test_consecutive_attempts_without_progress_stop() -> None:
    history = [_attempt(0, None, 1500, diagnosis=_diag("a")),
               _attempt(1 * HOURS, 1000, 1400, diagnosis=_diag("b")),  # not past 1500
               _attempt(2 * HOURS, 1000, 1350, diagnosis=_diag("c"))]  # not past 1400
    assert _decide(history, BUDGETS).restart  # only 2 stalled so far
    history.append(_attempt(3 * HOURS, 1000, 1000, diagnosis=_diag("d")))
    assert _decide(history).restart  # the default backstop is 10 in a row
    decision = _decide(history, BUDGETS)
    assert not decision.restart
    assert "3 consecutive attempts made no progress" in decision.reason
    assert "the furthest reached before, 1500" in decision.reason
    assert "max_no_progress=3" in decision.reason


def test_an_attempt_that_never_got_past_its_resume_step_made_no_progress() -> None:
    history = [_attempt(i * HOURS, 700, 700, diagnosis=_diag(str(i))) for i in range(3)]
    assert "max_no_progress=3" in _decide(history, BUDGETS).reason


def test_second_failure_before_the_first_step_stops() -> None:
    first = _attempt(0, None, None, diagnosis=_diag("exc:ImportError@train.py:1"))
    assert _decide([first]).restart
    decision = _decide([first, _attempt(HOURS, None, None, diagnosis=_diag("hang"))])
    assert not decision.restart
    assert ("2 attempts failed before logging their first step since the last attempt that "
            "progressed (max_early_failures=2)") in decision.reason


def test_early_failures_count_from_the_last_healthy_attempt() -> None:
    early = _attempt(0, None, None, diagnosis=_diag("x"))
    healthy = _attempt(HOURS, None, 5000, minutes=45, diagnosis=_diag("y"))
    assert _decide([early, healthy, _attempt(2 * HOURS, 4000, None, diagnosis=_diag("z"))]).restart


def test_stop_reason_also_names_the_environment_cause() -> None:
    decision = _decide(_progressing(11, signature="enospc"), BUDGETS)
    assert decision.reason.startswith("environment failure (cause of enospc), but the restart ")


def test_empty_history_is_refused() -> None:
    with pytest.raises(ValueError, match="history must hold at least the attempt"):
        decide_restart(NO_JITTER, [])


# --- policy validation ----------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "message"), [
    ("base_delay_s", -1.0, "base_delay_s must be >= 0, got -1.0"),
    ("max_restarts", -1, "max_restarts must be >= 0, got -1"),
    ("max_same_signature", 0, "max_same_signature must be >= 1, got 0"),
    ("max_early_failures", 0, "max_early_failures must be >= 1, got 0"),
    ("jitter", 1.0, r"jitter must be in \[0, 1\), got 1.0"),
    ("jitter", -0.1, r"jitter must be in \[0, 1\), got -0.1"),
])
def test_invalid_policy_is_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RestartPolicy(**{field: value})


def test_zero_restart_budget_stops_at_once() -> None:
    decision = _decide(_progressing(1), RestartPolicy(max_restarts=0))
    assert not decision.restart
    assert "0 restarts made, max_restarts=0" in decision.reason


# --- the progress rule (issue 11) -------------------------------------------------------------


ISSUE_11_FAULTS = ("signal:9", "hang", "nccl:timeout:ALLREDUCE", "enospc")


def test_progressing_environment_failures_restart_without_any_limit_by_default() -> None:
    # Issue 11: four different faults within minutes, each attempt further than the last.
    history = [_attempt(i * 60, i * 20 or None, 25 + i * 20, minutes=0.5,
                        diagnosis=_diag(sig), checkpoint_step=20 + i * 20)
               for i, sig in enumerate(ISSUE_11_FAULTS)]
    assert all(_decide(history[: n + 1]).restart for n in range(len(history)))
    many = _progressing(200, spacing_s=60, minutes=0.5)  # a night of preemptions
    decision = _decide(many)
    assert decision.restart
    assert decision.delay_s == 30.0  # each progressed: the backoff starts over every time
    assert "of at most" not in decision.reason


def test_none_and_zero_budgets() -> None:
    assert RestartPolicy().max_restarts is None
    assert RestartPolicy().max_restarts_per_hour is None
    assert RestartPolicy().max_no_progress == 10  # the backstop (policy docstring)
    assert RestartPolicy(max_no_progress=None).max_no_progress is None
    assert not _decide(_progressing(1), RestartPolicy(max_restarts_per_hour=0)).restart


def test_same_failure_without_progress_is_a_crash_loop_by_default() -> None:
    hang = _diag("hang")
    first = _attempt(0, 40, 45, diagnosis=hang, checkpoint_step=40)
    again = _attempt(60, 40, 45, diagnosis=hang, checkpoint_step=40)  # same place, same fault
    decision = _decide([first, again])
    assert not decision.restart
    assert "the same failure 'hang' ended 2 attempts at the same step 45" in decision.reason
    assert "no higher logged step, no newer checkpoint" in decision.reason


def test_a_newer_checkpoint_is_progress_even_without_a_higher_logged_step() -> None:
    nccl = _diag("nccl:timeout:ALLREDUCE")
    first = _attempt(0, None, 65, diagnosis=nccl, checkpoint_step=60)
    # Resumed from 60, saved 70 (a logging gap hid the steps), died at the same logged step.
    again = _attempt(60, 60, 65, diagnosis=nccl, checkpoint_step=70)
    assert _decide([first, again]).restart


def test_a_step_less_checkpoint_is_not_progress() -> None:
    kill = _diag("signal:9")
    first = _attempt(0, None, 50, diagnosis=kill)  # last.pt: no step in its name
    again = _attempt(60, None, 50, diagnosis=kill)
    assert not _decide([first, again]).restart


def test_a_higher_logged_step_is_progress() -> None:
    kill = _diag("signal:9")
    first = _attempt(0, None, 50, diagnosis=kill, checkpoint_step=40)
    again = _attempt(60, 40, 51, diagnosis=kill, checkpoint_step=40)
    assert _decide([first, again]).restart


def test_records_without_a_checkpoint_step_still_load() -> None:
    record = AttemptRecord(0.0, 1.0, None, 3, PREEMPTED)
    assert record.checkpoint_step is None
