"""MFU arithmetic, steady-state detection (5-step CV rule, forced at 50) and the report text."""

from __future__ import annotations

import statistics

import pytest

from spml.errors import SpmlError
from spml.toolkit.profiling.gpuinfo import detect_gpu
from spml.toolkit.profiling.mfu import (
    CV_THRESHOLD,
    FORCE_AFTER_STEPS,
    WINDOW_STEPS,
    MfuResult,
    SteadyStart,
    SteadyState,
    coefficient_of_variation,
    find_steady_start,
    format_mfu_report,
    median_step_time,
    mfu,
    mfu_for_gpu,
    mfu_result,
)
from spml.toolkit.profiling.peaks import Hardware, PeakFlops, resolve_peak

H100_PCIE = PeakFlops(756.0, "bf16", "H100 PCIe", "https://example.org/h100")


# --- MFU arithmetic ---------------------------------------------------------------------------


def test_mfu_is_flops_over_time_over_devices_times_peak() -> None:
    assert mfu(1e15, 2.0, H100_PCIE) == pytest.approx(1e15 / 2.0 / 756e12)
    assert mfu(8e15, 2.0, H100_PCIE, n_gpus=8) == pytest.approx(1e15 / 2.0 / 756e12)
    # nanoGPT's example: 124M model, 6N+12LHQT per token, A100 bf16.
    per_token = 6 * 85_000_000 + 12 * 12 * 12 * 64 * 1024
    a100 = PeakFlops(312.0, "bf16", "A100", "https://example.org/a100")
    assert mfu(per_token * 491_520, 1.0, a100) == pytest.approx(per_token * 491_520 / 312e12)


@pytest.mark.parametrize(
    ("flops", "seconds", "n_gpus", "message"),
    [(1e12, 0.0, 1, "step_time_s must be > 0"), (1e12, -1.0, 1, "step_time_s must be > 0"),
     (1e12, float("nan"), 1, "step_time_s"), (0.0, 1.0, 1, "flops_per_step must be > 0"),
     (1e12, 1.0, 0, "n_gpus must be >= 1")],
)
def test_mfu_rejects_impossible_inputs(flops: float, seconds: float, n_gpus: int,
                                       message: str) -> None:
    with pytest.raises(SpmlError, match=message):
        mfu(flops, seconds, H100_PCIE, n_gpus)


def test_result_with_a_peak_and_its_dict() -> None:
    result = mfu_result(1e15, 2.0, resolve_peak("NVIDIA H100 PCIe"), n_gpus=1)
    assert result.mfu == pytest.approx(500 / 756)
    assert result.mfu_percent == pytest.approx(100 * 500 / 756)
    assert result.achieved_tflops_per_gpu == pytest.approx(500)
    assert (result.estimated, result.reason) == (False, "")
    assert result.source.startswith("https://")
    row = result.as_dict()
    assert row["peak_tflops"] == 756
    assert row["peak_gpu_row"] == "H100 PCIe"
    assert row["mfu_percent"] == pytest.approx(result.mfu_percent)


def test_an_unknown_gpu_gives_na_never_zero() -> None:
    result = mfu_for_gpu(1e15, 2.0, gpu="NVIDIA Quantum Flux 9000")
    assert result.mfu is None
    assert result.peak is None
    assert "not in the peak-FLOPS table" in result.reason
    assert result.as_dict()["mfu_percent"] is None
    text = format_mfu_report(result)
    assert text.startswith("MFU: N/A: GPU 'NVIDIA Quantum Flux 9000' is not in")
    assert "500 TFLOPS per GPU" in text


def test_mfu_for_a_named_gpu_with_mig_and_dtype() -> None:
    result = mfu_for_gpu(1e15, 2.0, gpu="NVIDIA H100 80GB HBM3 MIG 3g.40gb", dtype="bf16")
    assert result.peak.tflops == pytest.approx(3 / 7 * 989.4)
    assert result.mfu == pytest.approx(500 / (3 / 7 * 989.4))
    fp16 = mfu_for_gpu(1e15, 2.0, gpu="Tesla V100-SXM2-16GB", dtype="float16")
    assert fp16.mfu == pytest.approx(500 / 125)
    assert mfu_for_gpu(1e15, 2.0, gpu="Tesla V100-SXM2-16GB").mfu is None  # no bf16 on Volta


@pytest.mark.skipif(detect_gpu().gpu is not None, reason="this machine has a GPU")
def test_without_a_gpu_name_or_a_local_gpu_mfu_is_na() -> None:
    result = mfu_for_gpu(1e15, 2.0)
    assert result.mfu is None
    assert "no local GPU detected" in result.reason


# --- report text --------------------------------------------------------------------------------


def test_report_shows_mfu_peak_and_source() -> None:
    text = format_mfu_report(mfu_for_gpu(1e15, 2.0, gpu="NVIDIA H100 PCIe"))
    lines = text.splitlines()
    assert lines[0] == "MFU: 66.14 %"
    assert "peak used: 756 TFLOPS dense bf16 per GPU [H100 PCIe]" in text
    assert "source: https://" in text
    assert "ESTIMATED" not in text


def test_report_labels_an_estimated_peak() -> None:
    hardware = Hardware(sm_count=132, max_sm_clock_mhz=1830, compute_capability=(9, 0))
    lookup = resolve_peak("NVIDIA Hopper Prototype", estimate=True, hardware=hardware)
    result = mfu_result(1e15, 2.0, lookup)
    assert result.estimated
    text = format_mfu_report(result)
    assert text.splitlines()[0].endswith("(ESTIMATED, not a datasheet figure)")
    assert "note: ESTIMATE" in text


def test_report_warns_above_one_hundred_percent() -> None:
    result = MfuResult(1.2, 1e15, 1.0, 1, "bf16", H100_PCIE)
    assert "warning: MFU above 100 %" in format_mfu_report(result)


# --- steady state -----------------------------------------------------------------------------


def test_the_documented_rule_constants() -> None:
    assert (WINDOW_STEPS, CV_THRESHOLD, FORCE_AFTER_STEPS) == (5, 0.05, 50)


def test_noisy_warm_up_then_stable() -> None:
    warm_up = [9.0, 4.0, 2.5, 1.6, 1.3]
    stable = [1.00, 1.02, 0.99, 1.01, 1.00, 0.98, 1.01, 1.00]
    times = warm_up + stable
    # The windows overlapping the 1.3 s step have CV >= 0.05 (checked here, not assumed).
    assert coefficient_of_variation([1.3, 1.00, 1.02, 0.99, 1.01]) >= CV_THRESHOLD
    assert find_steady_start(times) == SteadyStart(index=5, forced=False)
    assert median_step_time(times) == statistics.median(stable)


def test_the_online_detector_ignores_warm_up() -> None:
    detector = SteadyState()
    flags = [detector.add(t) for t in [5.0, 3.0, 1.0, 1.0, 1.01, 0.99, 1.0]]
    assert flags == [False, False, False, False, False, False, True]
    assert detector.start == SteadyStart(index=2, forced=False)
    assert detector.steady_times_s == [1.0, 1.0, 1.01, 0.99, 1.0]
    detector.add(1.02)  # steady stays steady; later steps join the median
    assert detector.median_step_time_s == pytest.approx(1.0)


def test_never_stable_is_forced_at_fifty_steps() -> None:
    times = [1.0, 2.0, 0.5, 1.5] * 20  # every window has a CV far above 0.05
    start = find_steady_start(times)
    assert start == SteadyStart(index=FORCE_AFTER_STEPS - WINDOW_STEPS, forced=True)
    assert median_step_time(times) == statistics.median(times[45:])
    assert find_steady_start(times[:49]) is None  # not yet forced
    assert median_step_time(times[:49]) is None


def test_too_few_steps_are_not_steady() -> None:
    assert find_steady_start([1.0, 1.0, 1.0, 1.0]) is None
    assert SteadyState().median_step_time_s is None


def test_step_times_and_detector_settings_are_checked() -> None:
    with pytest.raises(SpmlError, match="step times must be finite and > 0"):
        median_step_time([1.0, 0.0, 1.0])
    with pytest.raises(SpmlError, match="step times must be finite and > 0"):
        SteadyState().add(float("inf"))
    with pytest.raises(SpmlError, match="window must be in"):
        SteadyState(window=1)
    with pytest.raises(SpmlError, match="cv_threshold must be > 0"):
        SteadyState(cv_threshold=0)
    with pytest.raises(SpmlError, match="needs >= 2 values"):
        coefficient_of_variation([1.0])
