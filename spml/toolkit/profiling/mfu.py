"""MFU = FLOPs per step / steady-state step time / (devices x dense peak), reported honestly.

Steady state follows the legacy rule (spml-reference §7.1): slide a window of
`WINDOW_STEPS` = 5 step times; the first window whose coefficient of variation (sample stdev /
mean) is below `CV_THRESHOLD` = 0.05 starts steady state. If no window qualifies within
`FORCE_AFTER_STEPS` = 50 steps, steady state is forced and starts at the last window seen
(steps 45-49), so a noisy run still gets a number and the report says it was forced. Steps
before the start are warm-up (compile, autotune, allocator) and never enter the median.

MFU itself (PaLM App. B; notes §1.9): ``flops_per_step / step_time_s / (n_gpus x peak)``,
with the peak from `peaks.resolve_peak`. A GPU without a known peak gives MFU ``None`` and the
reason, rendered "N/A: <reason>", never 0 and never a guessed peak (house style H26).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from spml.errors import SpmlError
from spml.toolkit.profiling.gpuinfo import detect_gpu
from spml.toolkit.profiling.peaks import PeakFlops, PeakLookup, resolve_peak

WINDOW_STEPS = 5
CV_THRESHOLD = 0.05
FORCE_AFTER_STEPS = 50


@dataclass(frozen=True)
class SteadyStart:
    """Where steady state starts in a list of step times, and whether it was forced."""

    index: int
    forced: bool


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation / mean (needs >= 2 values and a positive mean)."""
    if len(values) < 2:
        raise SpmlError(f"the coefficient of variation needs >= 2 values, got {len(values)}.")
    mean = statistics.fmean(values)
    if mean <= 0:
        raise SpmlError(f"the mean step time must be > 0, got {mean!r}.")
    return statistics.stdev(values) / mean


def _check_times(step_times_s: Sequence[float]) -> None:
    bad = [t for t in step_times_s if not (math.isfinite(t) and t > 0)]
    if bad:
        raise SpmlError(f"step times must be finite and > 0 seconds, got {bad[:3]!r}.")


@dataclass
class SteadyState:
    """Online steady-state detector: feed step times with `add`, read `start` and the median.

    Args:
        window: Step times per window (5).
        cv_threshold: A window with CV below this is steady (0.05).
        force_after: Steps after which steady state is forced (50).
    """

    window: int = WINDOW_STEPS
    cv_threshold: float = CV_THRESHOLD
    force_after: int = FORCE_AFTER_STEPS
    step_times_s: list[float] = field(default_factory=list)
    start: SteadyStart | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.window <= self.force_after:
            raise SpmlError(f"window must be in [2, force_after={self.force_after}], "
                            f"got {self.window}.")
        if self.cv_threshold <= 0:
            raise SpmlError(f"cv_threshold must be > 0, got {self.cv_threshold!r}.")

    @property
    def steady(self) -> bool:
        return self.start is not None

    def add(self, step_time_s: float) -> bool:
        """Record one step time; returns whether steady state has been reached."""
        _check_times([step_time_s])
        self.step_times_s.append(step_time_s)
        count = len(self.step_times_s)
        if self.start is None and count >= self.window:
            recent = self.step_times_s[-self.window:]
            if coefficient_of_variation(recent) < self.cv_threshold:
                self.start = SteadyStart(count - self.window, forced=False)
            elif count >= self.force_after:
                self.start = SteadyStart(count - self.window, forced=True)
        return self.steady

    @property
    def steady_times_s(self) -> list[float]:
        """The step times from the start of steady state on (empty before it)."""
        return [] if self.start is None else self.step_times_s[self.start.index:]

    @property
    def median_step_time_s(self) -> float | None:
        """Median of the steady step times, None before steady state."""
        times = self.steady_times_s
        return statistics.median(times) if times else None


def find_steady_start(step_times_s: Sequence[float], window: int = WINDOW_STEPS,
                      cv_threshold: float = CV_THRESHOLD,
                      force_after: int = FORCE_AFTER_STEPS) -> SteadyStart | None:
    """Where steady state starts in recorded step times (the online rule replayed), or None."""
    detector = SteadyState(window=window, cv_threshold=cv_threshold, force_after=force_after)
    for step_time_s in step_times_s:
        if detector.add(step_time_s):
            break
    return detector.start


def median_step_time(step_times_s: Sequence[float], window: int = WINDOW_STEPS,
                     cv_threshold: float = CV_THRESHOLD,
                     force_after: int = FORCE_AFTER_STEPS) -> float | None:
    """Median step time after warm-up; None when steady state was never reached."""
    _check_times(step_times_s)
    start = find_steady_start(step_times_s, window, cv_threshold, force_after)
    return None if start is None else statistics.median(step_times_s[start.index:])


def _check_inputs(flops_per_step: float, step_time_s: float, n_gpus: int) -> None:
    if not (math.isfinite(flops_per_step) and flops_per_step > 0):
        raise SpmlError(f"flops_per_step must be > 0, got {flops_per_step!r}.")
    if not (math.isfinite(step_time_s) and step_time_s > 0):
        raise SpmlError(f"step_time_s must be > 0 seconds, got {step_time_s!r}.")
    if n_gpus < 1:
        raise SpmlError(f"n_gpus must be >= 1, got {n_gpus!r}.")


def mfu(flops_per_step: float, step_time_s: float, peak: PeakFlops, n_gpus: int = 1) -> float:
    """Model FLOPs utilisation as a fraction (0.42 = 42 %).

    Args:
        flops_per_step: Model FLOPs of one optimizer step summed over all devices.
        step_time_s: Wall time of one step (the steady-state median).
        peak: Dense peak of ONE device (`peaks.lookup_peak`).
        n_gpus: Devices the step ran on (torch's count: one per MI250X GCD, per MIG device).
    """
    _check_inputs(flops_per_step, step_time_s, n_gpus)
    if peak.tflops <= 0:
        raise SpmlError(f"peak.tflops must be > 0, got {peak.tflops!r} ({peak.gpu_row}).")
    return flops_per_step / step_time_s / (n_gpus * peak.tflops * 1e12)


@dataclass(frozen=True)
class MfuResult:
    """An MFU figure with the peak it used, or N/A with the reason.

    Attributes:
        mfu: Fraction of peak (0.42), or None when no peak is known.
        flops_per_step: Model FLOPs of one step, all devices.
        step_time_s: Seconds per step.
        n_gpus: Devices.
        dtype: The dtype the peak was looked up for.
        peak: The peak used, or None.
        reason: Why MFU is N/A ("" when it is known).
    """

    mfu: float | None
    flops_per_step: float
    step_time_s: float
    n_gpus: int
    dtype: str
    peak: PeakFlops | None
    reason: str = ""

    @property
    def mfu_percent(self) -> float | None:
        return None if self.mfu is None else 100 * self.mfu

    @property
    def achieved_tflops_per_gpu(self) -> float:
        return self.flops_per_step / self.step_time_s / self.n_gpus / 1e12

    @property
    def estimated(self) -> bool:
        return bool(self.peak and self.peak.estimated)

    @property
    def source(self) -> str | None:
        return self.peak.source if self.peak else None

    def as_dict(self) -> dict[str, Any]:
        """Flat, unit-suffixed keys for JSON output and run summaries."""
        peak = self.peak
        return {"mfu_percent": self.mfu_percent, "flops_per_step": self.flops_per_step,
                "step_time_s": self.step_time_s, "n_gpus": self.n_gpus, "dtype": self.dtype,
                "achieved_tflops_per_gpu": self.achieved_tflops_per_gpu,
                "peak_tflops": peak.tflops if peak else None,
                "peak_gpu_row": peak.gpu_row if peak else None, "peak_source": self.source,
                "peak_estimated": self.estimated, "peak_note": peak.note if peak else None,
                "reason": self.reason}


def mfu_result(flops_per_step: float, step_time_s: float, lookup: PeakLookup,
               n_gpus: int = 1, dtype: str = "bf16") -> MfuResult:
    """`mfu` against a looked-up peak, or an N/A result carrying the lookup's reason."""
    _check_inputs(flops_per_step, step_time_s, n_gpus)
    dtype = lookup.peak.dtype if lookup.peak else dtype
    value = None if lookup.peak is None else mfu(flops_per_step, step_time_s, lookup.peak, n_gpus)
    return MfuResult(value, flops_per_step, step_time_s, n_gpus, dtype, lookup.peak,
                     lookup.reason)


def mfu_for_gpu(flops_per_step: float, step_time_s: float, *, gpu: str | None = None,
                n_gpus: int = 1, dtype: str = "bf16", estimate: bool = False) -> MfuResult:
    """MFU for a named GPU, or for the local one when ``gpu`` is None (what the CLI calls).

    ``n_gpus`` is never inferred from the local device count: a one-GPU job on an eight-GPU
    host would otherwise report an eighth of its MFU.
    """
    _check_inputs(flops_per_step, step_time_s, n_gpus)
    if gpu is not None:
        lookup = resolve_peak(gpu, dtype, estimate=estimate)
    else:
        detection = detect_gpu()
        if detection.gpu is None:
            lookup = PeakLookup(None, f"no GPU name given and no local GPU detected "
                                      f"({detection.reason}); name the GPU")
        else:
            info = detection.gpu
            lookup = resolve_peak(info.name, dtype, info.mig_profile, estimate=estimate,
                                  hardware=info.hardware)
    return mfu_result(flops_per_step, step_time_s, lookup, n_gpus, dtype)


def format_mfu_report(result: MfuResult) -> str:
    """The lines ``spml toolkit mfu`` prints: MFU, the peak used, its source, or N/A: why."""
    inputs = (f"{result.flops_per_step:.4g} FLOPs/step / {result.step_time_s:.4g} s / "
              f"{result.n_gpus} GPU(s) = {result.achieved_tflops_per_gpu:.4g} TFLOPS per GPU")
    if result.peak is None or result.mfu_percent is None:
        return f"MFU: N/A: {result.reason}\nachieved: {inputs}"
    peak = result.peak
    label = " (ESTIMATED, not a datasheet figure)" if peak.estimated else ""
    lines = [f"MFU: {result.mfu_percent:.2f} %{label}",
             f"achieved: {inputs}",
             f"peak used: {peak.tflops:.4g} TFLOPS dense {peak.dtype} per GPU{label} "
             f"[{peak.gpu_row}]",
             f"source: {peak.source}"]
    if peak.note:
        lines.append(f"note: {peak.note}")
    if result.mfu_percent > 100:
        lines.append("warning: MFU above 100 % - check the FLOPs convention (causal attention "
                     "counted in full) and the GPU/dtype of the peak")
    return "\n".join(lines)
