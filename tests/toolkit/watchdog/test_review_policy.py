"""The restart-policy findings of the issue-11 review, as decisions over AttemptRecords.

The rule (issue 11): environment failures restart for as long as training progresses; the
crash-loop guard stops the same failure at the same place without progress, and failures
before the first step; a code bug never restarts. Each test names the review scenario it
ports (p1-p8 ran the real watchdog on a fake trainer; the records here are theirs).
"""

from __future__ import annotations

import random

from spml.toolkit.watchdog.classify import AttemptEnd, Diagnosis, classify
from spml.toolkit.watchdog.policy import (
    AttemptRecord,
    RestartDecision,
    RestartPolicy,
    decide_restart,
)

POLICY = RestartPolicy(jitter=0.0)
KILL = Diagnosis("environment", "SIGKILL without OOM evidence", "signal:9", ())
TERM = Diagnosis("environment", "SIGTERM: preemption", "signal:15", ())
HANG = Diagnosis("environment", "hang: no heartbeat", "hang", ())
BUG = Diagnosis("code", "python exception: KeyError: 'bug'", "exc:KeyError@trainer.py:94", ())
MINUTE = 60.0


def _rec(start: float, minutes: float, started: int | None, last: int | None,
         diagnosis: Diagnosis = KILL, ckpt: int | None = None) -> AttemptRecord:
    return AttemptRecord(start, start + minutes * MINUTE, started, last, diagnosis, ckpt)


def _seq(*attempts: tuple, minutes: float = 1.0) -> list[AttemptRecord]:
    """Records spaced an hour apart from ``(started, last, diagnosis, ckpt)`` tuples."""
    return [_rec(i * 3600.0, minutes, *attempt) for i, attempt in enumerate(attempts)]


def _decide(history: list[AttemptRecord], policy: RestartPolicy = POLICY) -> RestartDecision:
    return decide_restart(policy, history, rng=random.Random(0))


def _nccl(seq: int) -> Diagnosis:
    """What classify() makes of a real NCCL watchdog timeout with sequence number ``seq``."""
    line = (f"[rank0]:[E ProcessGroupNCCL.cpp:616] [Rank 0] Watchdog caught collective "
            f"operation timeout: WorkNCCL(SeqNum={seq}, OpType=ALLREDUCE, NumelIn=1, "
            "NumelOut=1, Timeout(ms)=600000) ran for 600001 milliseconds before timing out.")
    return classify(AttemptEnd(exit_code=-6, log_tail=line))


# --- 1. a preemption storm is not a deterministic fault (p2) ---------------------------------


def test_p2_second_preemption_before_the_high_water_mark_restarts() -> None:
    # Killed at 18 (checkpoint 10); resumed from 10 and killed again at 15.
    history = _seq((None, 18, KILL, 10), (10, 15, KILL, 10))
    decision = _decide(history)
    assert decision.restart, decision.reason


def test_policy_unit_2_preempted_at_900_then_at_850_restarts() -> None:
    history = [_rec(0, 25, None, 900, KILL, 500), _rec(1600, 20, 500, 850, KILL, 500)]
    assert _decide(history).restart


def test_a_storm_of_kills_at_different_steps_keeps_restarting() -> None:
    # Nine kills in a row from checkpoint 10, none reaching step 18 again, all at other steps.
    history = _seq((None, 18, KILL, 10), *((10, 10 + i, KILL, 10) for i in range(1, 8)),
                   (10, 17, TERM, 10))
    assert all(_decide(history[: n + 1]).restart for n in range(len(history)))


def test_the_same_failure_at_the_same_step_stops() -> None:
    # p2 continued: the third attempt dies at step 15 again, with no newer checkpoint.
    history = _seq((None, 18, KILL, 10), (10, 15, KILL, 10), (10, 15, KILL, 10))
    decision = _decide(history)
    assert not decision.restart
    assert "the same failure 'signal:9' ended 2 attempts at the same step 15" in decision.reason


def test_p3_a_b_a_at_one_step_is_still_a_loop() -> None:
    history = _seq((None, 12, KILL, 10), (10, 12, TERM, 10))
    assert _decide(history).restart
    decision = _decide([*history, _rec(9000, 1, 10, 12, KILL, 10)])
    assert not decision.restart
    assert "'signal:9' ended 2 attempts at the same step 12" in decision.reason


def test_p7_hangs_at_different_steps_restart_at_the_same_step_stop() -> None:
    history = _seq((None, 12, HANG, 10), (10, 11, HANG, 10))
    assert _decide(history).restart
    decision = _decide([*history, _rec(9000, 1, 10, 11, HANG, 10)])
    assert not decision.restart
    assert "'hang' ended 2 attempts at the same step 11" in decision.reason


def test_same_step_with_a_newer_checkpoint_between_is_no_loop() -> None:
    # Died at 25 from checkpoint 10; the next saved 20 before dying at 25 again: progress.
    history = _seq((None, 25, KILL, 10), (10, 25, KILL, 20))
    assert _decide(history).restart


def test_two_failures_before_the_first_step_are_the_same_place() -> None:
    history = _seq((None, None, KILL, None), (None, None, KILL, None))
    assert not _decide(history).restart


# --- 2. NCCL timeouts repeat; the backstop (p8) -----------------------------------------------


def test_p8_nccl_timeouts_with_new_sequence_numbers_are_the_same_failure() -> None:
    first, second, third = _nccl(615729), _nccl(290531), _nccl(841337)
    assert first.signature == second.signature == third.signature == "nccl:timeout:ALLREDUCE"
    history = _seq((None, 20, first, 20), (20, 25, second, 20))
    assert _decide(history).restart
    decision = _decide([*history, _rec(9000, 1, 20, 25, third, 20)])
    assert not decision.restart
    assert "'nccl:timeout:ALLREDUCE' ended 2 attempts at the same step 25" in decision.reason


def test_backstop_stops_failures_that_move_from_step_to_step() -> None:
    # Resumed from 20 each time, a timeout at another step each time, never past 31.
    history = _seq((None, 31, _nccl(1), 20),
                   *((20, 20 + i, _nccl(1000 + i), 20) for i in range(1, 11)))
    assert _decide(history[:10]).restart  # 9 attempts in a row without progress
    decision = _decide(history)  # the 10th
    assert not decision.restart
    assert "10 consecutive attempts made no progress" in decision.reason
    assert "max_no_progress=10" in decision.reason
    assert _decide(history, RestartPolicy(jitter=0.0, max_no_progress=None)).restart


def test_policy_unit_3_fifty_nccl_timeouts_without_progress_stop() -> None:
    history = [_rec(0, 10, None, 900, _nccl(1), 500)]
    history += [_rec(i * 700, 10, 500, 600 + i % 7, _nccl(1000 + i), 500) for i in range(1, 50)]
    stops = [n for n in range(1, 51) if not _decide(history[:n]).restart]
    assert stops
    assert stops[0] <= 10


def test_backstop_backoff_grows_while_nothing_progresses() -> None:
    history = _seq((None, 29, KILL, 20), *((20, 20 + i, KILL, 20) for i in range(1, 6)))
    assert [_decide(history[:n]).delay_s for n in range(1, 7)] == [30, 60, 120, 240, 480, 600]


# --- 3. early failures count since the last progress (p1) -------------------------------------


def test_p1_early_failure_after_progress_restarts() -> None:
    history = _seq((None, None, KILL, None), (None, 12, KILL, 10), (10, None, KILL, 10))
    assert _decide(history).restart


def test_policy_unit_1_early_kill_after_twenty_minutes_of_training_restarts() -> None:
    history = [_rec(0, 1, None, None), _rec(100, 20, None, 500, KILL, 500),
               _rec(1400, 1, 500, None, KILL, 500)]
    assert _decide(history).restart


def test_two_early_failures_after_the_last_progress_still_stop() -> None:
    history = _seq((None, None, KILL, None), (None, 12, KILL, 10), (10, None, KILL, 10),
                   (10, None, TERM, 10))
    decision = _decide(history)
    assert not decision.restart
    assert "2 attempts failed before logging their first step" in decision.reason


# --- 4. the backoff resets after progress (policy_unit 4) -------------------------------------


def test_policy_unit_4_preemptions_every_25_minutes_wait_the_base_delay() -> None:
    history: list[AttemptRecord] = []
    for i in range(8):
        history.append(_rec(i * 1600, 25, i * 100 or None, i * 100 + 150, KILL, i * 100 + 100))
        decision = _decide(history)
        assert (decision.restart, decision.delay_s) == (True, 30.0), decision.reason
        assert "(backoff step 0)" in decision.reason


# --- 5. counters that do not climb (p5, p6) ---------------------------------------------------


def test_p5_epoch_reset_counters_with_step_less_checkpoints_restart() -> None:
    history = _seq((None, 50, KILL, None), (None, 80, KILL, None), (None, 45, KILL, None))
    assert all(_decide(history[: n + 1]).restart for n in range(3))


def test_p5_a_long_run_of_healthy_attempts_is_no_loop_despite_a_chance_repeat() -> None:
    # Per-epoch steps (0..99) and last.pt: nothing ever passes the high-water mark, but each
    # attempt trained for an hour. Step 50 comes back three attempts later: chance, no loop.
    steps = [99, 50, 80, 45, 50, 12, 70, 33, 61, 50, 7, 88, 23, 50]
    history = [_rec(i * 4000, 60, None, step, KILL, None) for i, step in enumerate(steps)]
    for n in range(1, len(history) + 1):
        decision = _decide(history[:n])
        assert decision.restart, (n, decision.reason)
        assert decision.delay_s == 30.0  # each ran healthily


def test_p5_healthy_attempts_dying_at_the_same_step_twice_in_a_row_stop() -> None:
    # A fault reached after an hour each time is still a loop: a healthy attempt does not end
    # the stretch it closes.
    history = [_rec(i * 4000, 60, None, step, HANG, None) for i, step in enumerate([99, 50, 50])]
    decision = _decide(history)
    assert not decision.restart
    assert "'hang' ended 2 attempts at the same step 50" in decision.reason


def test_p6_a_bogus_step_line_does_not_stop_the_next_repeats() -> None:
    history = _seq((None, 1_000_000, KILL, None), (None, 50, KILL, None), (None, 90, KILL, None),
                   (None, 130, KILL, None))
    assert all(_decide(history[: n + 1]).restart for n in range(4))


def test_p6_a_bogus_step_line_with_step_checkpoints_still_sees_progress() -> None:
    history = _seq((None, 1_000_000, KILL, 10), (10, 25, KILL, 20))
    decision = _decide(history)
    assert decision.restart
    assert "(backoff step 0)" in decision.reason  # the newer checkpoint is progress


# --- a code bug never restarts (p4) ------------------------------------------------------------


def test_p4_code_failure_after_environment_failures_stops() -> None:
    history = _seq((None, 12, KILL, 10), (10, 22, KILL, 20), (20, 23, BUG, 20))
    decision = _decide(history)
    assert not decision.restart
    assert decision.reason.startswith("code failure, not restarting")
