"""Tests of spml.toolkit.watchdog.alerts: report-only rules, baseline, de-duplicating monitor."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from spml.toolkit.metrics.log import LogFollower, MetricHistory, MetricPoint
from spml.toolkit.watchdog.alerts import (
    Alert,
    AlertMonitor,
    Baseline,
    GradNorm,
    LossSpike,
    NonFinite,
    Plateau,
    ThroughputDrop,
    baseline_from,
    default_rules,
)

NO_BASELINE = Baseline()


def pts(start: int = 0, **series: Sequence[float]) -> list[MetricPoint]:
    """Points with steps start, start+1, ...; ``series`` maps a key to its values."""
    length = max(len(values) for values in series.values())
    return [MetricPoint(start + i, {k: float(v[i]) for k, v in series.items() if i < len(v)},
                        float(start + i)) for i in range(length)]


# ---------------------------------------------------------------- NonFinite


def test_non_finite_alerts_on_the_first_nan() -> None:
    points = pts(loss=[1.0, 0.9, math.nan], grad_norm=[1.0, 1.0, math.inf])

    alerts = NonFinite().check(points, NO_BASELINE)

    message = "non-finite metric at step 2: loss=nan, grad_norm=inf"
    assert alerts == [Alert("non_finite", 2, message)]
    assert NonFinite().check(points[:2], NO_BASELINE) == []


def test_non_finite_looks_at_each_metric_latest_value() -> None:
    points = pts(loss=[math.nan]) + pts(1, lr=[1e-4, 1e-4])  # lines without the loss follow

    assert NonFinite().check(points, NO_BASELINE)[0].step == 0
    assert NonFinite().check(points + pts(3, loss=[0.5]), NO_BASELINE) == []
    assert NonFinite(lookback=2).check(points, NO_BASELINE) == []


def test_non_finite_can_be_limited_to_some_keys() -> None:
    points = pts(best_loss=[math.inf], loss=[1.0])

    assert NonFinite().check(points, NO_BASELINE) != []
    assert NonFinite(keys=("loss", "grad_norm")).check(points, NO_BASELINE) == []


# ---------------------------------------------------------------- LossSpike


def test_loss_spike_over_three_times_the_recent_average() -> None:
    points = pts(loss=[0.5] * 10 + [1.6])

    (alert,) = LossSpike().check(points, NO_BASELINE)

    assert alert.rule == "loss_spike"
    assert alert.step == 10
    assert "loss 1.6 at step 10 is 3.2x the average 0.5 of the previous 10" in alert.message


@pytest.mark.parametrize(
    "losses",
    [[0.5] * 10 + [1.4], [0.5] * 9 + [5.0], [-1.0] * 10 + [5.0], [0.5] * 10 + [math.nan]],
    ids=["below-factor", "too-little-history", "negative-average", "nan-is-not-a-spike"],
)
def test_no_loss_spike(losses: list[float]) -> None:
    assert LossSpike().check(pts(loss=losses), NO_BASELINE) == []


def test_loss_spike_skips_lines_without_loss() -> None:
    points = pts(loss=[1.0] * 5) + pts(5, lr=[0.1]) + pts(6, loss=[4.0])

    assert LossSpike(window=5).check(points, NO_BASELINE)[0].step == 6


# ---------------------------------------------------------------- Plateau


def test_plateau_needs_two_consecutive_flat_windows() -> None:
    flat = [1.0 - 0.0005 * i for i in range(15)]  # ~0.25% per 5-point window
    rule = Plateau(window=5)

    assert rule.check(pts(loss=flat[:10]), NO_BASELINE) == []  # one comparison only
    (alert,) = rule.check(pts(loss=flat), NO_BASELINE)

    assert alert.step == 14
    assert "means of 3 windows of 5 losses are 0.999, 0.9965, 0.994" in alert.message
    assert "each below 0.50%" in alert.message


def test_no_plateau_while_loss_improves() -> None:
    improving = [1.0 * 0.99**i for i in range(30)]  # ~5% per window of 5
    one_flat_window = [2.0] * 5 + [1.0] * 10

    assert Plateau(window=5).check(pts(loss=improving), NO_BASELINE) == []
    assert Plateau(window=5).check(pts(loss=one_flat_window), NO_BASELINE) == []


def test_rising_loss_also_counts_as_no_improvement() -> None:
    rising = [1.0 + 0.1 * i for i in range(6)]

    (alert,) = Plateau(window=2).check(pts(loss=rising), NO_BASELINE)

    assert "-" in alert.message.split("relative improvements")[1]


# ---------------------------------------------------------------- GradNorm


@pytest.mark.parametrize(
    ("norm", "kind"), [(12.0, "explosion"), (0.005, "vanishing"), (0.0, "vanishing")])
def test_grad_norm_against_the_baseline(norm: float, kind: str) -> None:
    (alert,) = GradNorm().check(pts(grad_norm=[1.0, norm]), Baseline(grad_norm=1.0))

    assert alert.step == 1
    assert f"gradient {kind}: grad_norm {norm:.4g}" in alert.message
    assert "the baseline 1" in alert.message


@pytest.mark.parametrize("norm", [9.9, 0.011, 1.0])
def test_grad_norm_within_range(norm: float) -> None:
    assert GradNorm().check(pts(grad_norm=[norm]), Baseline(grad_norm=1.0)) == []


def test_grad_norm_is_quiet_without_a_baseline() -> None:
    assert GradNorm().check(pts(grad_norm=[1e9]), NO_BASELINE) == []


# ---------------------------------------------------------------- ThroughputDrop


def test_throughput_drop_over_consecutive_points() -> None:
    baseline = Baseline(throughput=1000.0)
    rule = ThroughputDrop()

    assert rule.check(pts(tokens_per_s=[700, 700, 900]), baseline) == []
    (alert,) = rule.check(pts(tokens_per_s=[700, 790, 750]), baseline)

    assert alert.step == 2
    assert "throughput drop at step 2: last 3 values 700, 790, 750 are 25% below" in alert.message


def test_mfu_drop_uses_fractions_and_step_time_gives_throughput() -> None:
    points = pts(mfu=[30.0, 30.0, 30.0], step_time=[0.5, 0.5, 0.5])

    alerts = ThroughputDrop().check(points, Baseline(throughput=4.0, mfu=0.45))

    assert [a.message.split(" drop")[0] for a in alerts] == ["throughput", "mfu"]


def test_no_throughput_alert_without_baseline_or_enough_points() -> None:
    assert ThroughputDrop().check(pts(tokens_per_s=[1, 1, 1]), NO_BASELINE) == []
    assert ThroughputDrop().check(pts(tokens_per_s=[1, 1]), Baseline(throughput=9.0)) == []


# ---------------------------------------------------------------- baseline_from


def test_baseline_from_the_first_stable_window() -> None:
    points = pts(loss=[9.0] * 5 + [2.0, 4.0] + [8.0] * 3,
                 grad_norm=[50.0] * 5 + [1.0, 2.0, 100.0, 3.0, 2.0],
                 tokens_per_s=[100] * 10, mfu=[40.0] * 9)

    baseline = baseline_from(points, warmup=5, window=5)

    assert baseline == Baseline(loss=6.0, grad_norm=2.0, throughput=100.0, mfu=None)


def test_baseline_from_short_runs_is_empty_and_arguments_are_checked() -> None:
    assert baseline_from(pts(loss=[1.0] * 14)) == Baseline(loss=None)
    assert baseline_from(pts(loss=[1.0] * 15)).loss == 1.0
    with pytest.raises(ValueError, match="warmup"):
        baseline_from([], warmup=-1)


# ---------------------------------------------------------------- AlertMonitor


def test_monitor_reports_each_rule_once_per_episode() -> None:
    monitor = AlertMonitor([NonFinite()])

    first = monitor.update(pts(loss=[1.0, math.nan, math.nan]))
    again = monitor.update(pts(3, loss=[math.nan]) + pts(4, lr=[0.1]))
    cleared = monitor.update(pts(5, loss=[1.0]))
    second = monitor.update(pts(6, loss=[math.inf]))

    assert [a.step for a in first] == [1]
    assert again == []
    assert cleared == []
    assert [a.step for a in second] == [6]
    assert monitor.active == {"non_finite"}


def test_monitor_sees_a_spike_in_the_middle_of_a_batch() -> None:
    monitor = AlertMonitor([LossSpike(window=5)])

    alerts = monitor.update(pts(loss=[1.0] * 5 + [5.0] + [1.0] * 5))

    assert [a.step for a in alerts] == [5]
    assert monitor.active == frozenset()


def test_monitor_derives_the_baseline_after_warmup() -> None:
    monitor = AlertMonitor([GradNorm()], warmup=2, window=3)

    early = monitor.update(pts(grad_norm=[500.0, 400.0, 1.0, 1.0, 1.0]))
    late = monitor.update(pts(5, grad_norm=[20.0]))

    assert early == []  # the warmup's huge norms come before any baseline exists
    assert monitor.baseline.grad_norm == 1.0
    assert [a.step for a in late] == [5]


def test_monitor_given_baseline_wins_and_missing_fields_come_from_the_run() -> None:
    monitor = AlertMonitor(baseline=Baseline(grad_norm=5.0), warmup=0, window=2)

    monitor.update(pts(grad_norm=[1.0, 1.0], tokens_per_s=[100, 100]))

    assert monitor.baseline == Baseline(loss=None, grad_norm=5.0, throughput=100.0)


def test_monitor_accepts_any_rule_with_name_and_check() -> None:
    @dataclass(frozen=True)
    class LrZero:
        name: str = "lr_zero"

        def check(self, points: Sequence[MetricPoint], baseline: Baseline) -> list[Alert]:
            lr = points[-1].values.get("lr")
            return [Alert(self.name, points[-1].step, f"lr={lr}")] if lr == 0 else []

    monitor = AlertMonitor([LrZero()])

    assert monitor.update(pts(lr=[0.1, 0.0, 0.0])) == [Alert("lr_zero", 1, "lr=0.0")]


def test_default_rules_and_a_quiet_healthy_run() -> None:
    losses = [3.0 * 0.98**i for i in range(200)]
    monitor = AlertMonitor()

    alerts = monitor.update(pts(loss=losses, grad_norm=[1.0] * 200, tokens_per_s=[1e4] * 200))

    assert {rule.name for rule in default_rules()} == {
        "non_finite", "loss_spike", "plateau", "grad_norm", "throughput_drop"}
    assert alerts == []


def test_monitor_memory_is_bounded_and_updates_stay_fast() -> None:
    monitor = AlertMonitor(memory=200)
    points = pts(loss=[1.0 + (i % 7) * 0.01 for i in range(5000)], lr=[1e-4] * 5000)

    started = time.perf_counter()
    alerts = monitor.update(points)
    elapsed = time.perf_counter() - started

    assert [a.rule for a in alerts] == ["plateau"]
    assert len(monitor._points) <= 400
    assert elapsed < 10.0


def test_end_to_end_from_a_log_file(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    follower, history = LogFollower(log), MetricHistory()
    monitor = AlertMonitor(baseline=Baseline(grad_norm=1.0))
    lines = [f"step={i} loss={2.0 - 0.01 * i:.3f} grad_norm=1.1" for i in range(12)]
    log.write_text("\n".join(lines) + "\nstep=12 loss=9.5 grad_norm=25\nstep=13 loss=nan grad")

    alerts = monitor.update(history.add_lines(follower.poll(), now=1.0))
    with log.open("a") as fh:
        fh.write("_norm=inf\n")
    alerts += monitor.update(history.add_lines(follower.poll(), now=2.0))

    assert [(a.rule, a.step) for a in alerts] == [
        ("loss_spike", 12), ("grad_norm", 12), ("non_finite", 13)]
    assert "loss=nan, grad_norm=inf" in alerts[-1].message
