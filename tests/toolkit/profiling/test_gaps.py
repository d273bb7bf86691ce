"""Gap analysis: step-time split, clock throttling and TCA vs MFU causes."""

from __future__ import annotations

import pytest

from spml.toolkit.profiling.gaps import (
    CLOCK_THROTTLE_FACTOR,
    GapReport,
    StepSplit,
    StepTimestamps,
    analyze_gaps,
    kernel_busy_s,
    split_step,
    split_steps,
    summarize_clocks,
)
from spml.toolkit.profiling.gpm import ClockSample


def names(report: GapReport) -> list[str]:
    return [cause.name for cause in report.causes]


def test_split_step_with_measured_busy_time() -> None:
    split = split_step(StepTimestamps(start_s=10.0, data_ready_s=10.041, fwd_start_s=10.046,
                                      end_s=10.100, gpu_busy_s=0.044))
    assert split.data_wait_s == pytest.approx(0.041)
    assert split.host_s == pytest.approx(0.005)
    assert split.compute_s == pytest.approx(0.044)
    assert split.idle_s == pytest.approx(0.010)
    assert split.total_s == pytest.approx(0.100)
    assert split.share(split.data_wait_s) == pytest.approx(0.41)


def test_split_without_busy_time_leaves_idle_unknown() -> None:
    split = split_step(StepTimestamps(0.0, 0.01, 0.02, 0.10))
    assert split.idle_s is None
    assert split.compute_s == pytest.approx(0.08)
    assert split.share(split.idle_s) is None


def test_split_rejects_out_of_order_timestamps() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        split_step(StepTimestamps(0.0, 0.05, 0.04, 0.10))
    with pytest.raises(ValueError, match="at least one"):
        split_steps([])


def test_split_steps_averages_and_needs_busy_everywhere_for_idle() -> None:
    steps = [StepTimestamps(0.0, 0.01, 0.01, 0.11, gpu_busy_s=0.08),
             StepTimestamps(1.0, 1.03, 1.03, 1.13, gpu_busy_s=0.10)]
    split = split_steps(steps)
    assert split.steps == 2
    assert split.data_wait_s == pytest.approx(0.02)
    assert split.idle_s == pytest.approx(0.01)
    assert split_steps([steps[0], StepTimestamps(2.0, 2.0, 2.0, 2.1)]).idle_s is None


def test_kernel_busy_unions_overlaps_and_clips_to_window() -> None:
    events = [
        {"cat": "kernel", "ts": 100, "dur": 50},  # 100-150
        {"cat": "kernel", "ts": 120, "dur": 50},  # overlaps: 150-170 new
        {"cat": "gpu_memcpy", "ts": 300, "dur": 100},  # clipped at 350
        {"cat": "cpu_op", "ts": 0, "dur": 1000},  # host op: not GPU busy
        {"cat": "kernel", "ts": 10, "dur": 20},  # before the window
    ]
    assert kernel_busy_s(events, start_us=50, end_us=350) == pytest.approx(120e-6)


def test_data_bound_cause_names_the_share() -> None:
    split = StepSplit(data_wait_s=0.041, host_s=0.005, compute_s=0.054, idle_s=0.0)
    report = analyze_gaps(None, split=split)
    assert names(report) == ["data-bound"]
    assert "data wait is 41% of step time" in report.causes[0].evidence


def test_launch_overhead_and_host_causes() -> None:
    split = StepSplit(data_wait_s=0.0, host_s=0.02, compute_s=0.05, idle_s=0.03)
    report = analyze_gaps(None, split=split)
    assert names(report) == ["host-bound", "host-bound / launch overhead"]
    assert "idle 30%" in report.causes[1].evidence


def test_tensor_cores_busy_but_low_mfu() -> None:
    report = analyze_gaps(0.12, 0.45)
    assert report.gap_pp == pytest.approx(33.0)
    assert names(report) == ["tensor cores busy but low MFU"]
    assert "TCA 45% vs MFU 12%" in report.causes[0].evidence
    assert "large gap" in report.causes[0].evidence
    assert "moderate" in analyze_gaps(0.30, 0.40).causes[0].evidence


def test_low_tca_and_low_mfu_means_idle_tensor_cores() -> None:
    report = analyze_gaps(0.05, 0.08)
    assert names(report) == ["tensor cores idle"]
    assert "bf16" in report.causes[0].suggestion
    assert "TF32" in report.causes[0].suggestion


def test_close_tca_and_mfu_give_no_tensor_cause() -> None:
    assert analyze_gaps(0.41, 0.45).causes == ()


def test_mfu_above_tca_points_at_flop_counting() -> None:
    assert names(analyze_gaps(0.60, 0.40)) == ["MFU above TCA"]


def test_missing_tca_is_reported_not_guessed() -> None:
    report = analyze_gaps(0.30, None, tca_reason="GPM unsupported on NVIDIA A100")
    assert report.gap_pp is None
    assert names(report) == ["tca unavailable"]
    assert "A100" in report.causes[0].evidence


def test_clock_throttling_from_nvml_clocks() -> None:
    clocks = [ClockSample(1290, 1980, 0x4)] * 3 + [ClockSample(1980, 1980, 0x1)]
    evidence = summarize_clocks(clocks)
    assert evidence.factor == pytest.approx(1290 / 1980)
    assert evidence.reasons == {"sw_power_cap": 3}
    report = analyze_gaps(0.30, 0.60, clocks=clocks)
    assert names(report) == ["clock throttling", "tensor cores busy but low MFU"]
    assert "SM clock 1290/1980 MHz" in report.causes[0].evidence
    assert "sw_power_cap in 3/4" in report.causes[0].evidence
    assert "lower SM clocks explain ~21 pp" in report.causes[1].evidence


def test_full_clocks_are_not_throttling_but_severe_events_are_reported() -> None:
    assert analyze_gaps(None, clocks=[ClockSample(1980, 1980, 0)]).causes == ()
    near_max = int(1980 * (CLOCK_THROTTLE_FACTOR + 0.01))
    report = analyze_gaps(None, clocks=[ClockSample(near_max, 1980, 0x40)])
    assert names(report) == ["clock events"]
    assert "hw_thermal_slowdown" in report.causes[0].evidence


def test_clock_readings_without_values_are_ignored() -> None:
    evidence = summarize_clocks([ClockSample(None, 1980, 0x4)])
    assert evidence.factor is None
    assert evidence.samples == 0
    assert analyze_gaps(None, clocks=[ClockSample(None, None, None)]).causes == ()


def test_report_lines_join_name_evidence_and_suggestion() -> None:
    lines = analyze_gaps(0.12, 0.45).lines()
    assert lines[0] == "MFU 12% vs TCA 45% (gap +33.0 pp)"
    assert lines[1].startswith("tensor cores busy but low MFU: large gap of 33 pp")
    assert " -> " in lines[1]


def test_report_says_when_no_cause_is_found() -> None:
    # The H200 GPT-2-small run: MFU 30 % and TCA 29 % agree, clocks not throttled.
    assert analyze_gaps(0.297, 0.286).lines() == [
        "MFU 30% vs TCA 29% (gap -1.1 pp)",
        "no cause found: no gap, throttling or stall above the thresholds"]
