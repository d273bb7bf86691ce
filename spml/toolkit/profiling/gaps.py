"""Why a run is below peak: step-time split, clock throttling and TCA vs MFU, as named causes.

Top-down, after shared/spec/toolkit-and-watchdog-notes.md §3.3: first where the step's wall time
goes (data wait / host / GPU compute / GPU idle), then whether the SM clock ran below its maximum
(NVML clocks and clock-event reasons, from `gpm.GpmSampler`), then what the tensor cores did:
tensor-core activity (TCA, the share of cycles a tensor pipe was busy) against MFU. Each cause
carries the numbers that triggered it; a cause whose input is missing is not guessed.

Reading TCA against MFU (notes §2.2, measured on an H200): on pure GEMMs TCA ~= MFU x (peak clock
/ SM clock), and on real training steps TCA tracked MFU within ~4 points. So busy tensor cores
with a low MFU mean inefficient tensor work (or throttled clocks), and low TCA with low MFU means
the tensor cores are simply idle. All fractions here are 0-1; gaps are in percentage points.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from spml.toolkit.profiling.gpm import ClockSample

# Thresholds (fractions of step time unless named _PP). Chosen from the notes' probes: a
# starved loader measured 77 % data wait and a tuned one 3.8 %; a launch-bound loop left the GPU
# 57 % idle. 10-15 % is where fixing the part is usually worth it.
DATA_BOUND_SHARE = 0.10  # data wait above this share of the step: data-bound
HOST_BOUND_SHARE = 0.15  # host work between "batch ready" and "forward launched"
GPU_IDLE_SHARE = 0.15  # GPU idle inside the forward/backward/optimizer window: launch/sync bound
CLOCK_THROTTLE_FACTOR = 0.95  # median SM clock below 95 % of its maximum (the reference's 0.95)
LARGE_GAP_PP = 15.0  # TCA - MFU above this: tensor work is inefficient (reference threshold)
MODERATE_GAP_PP = 5.0  # TCA - MFU above this: a moderate gap (reference threshold)
LOW_TCA = 0.20  # both TCA and MFU below these: tensor cores mostly idle
LOW_MFU = 0.20
# Clock-event reasons that point at hardware limits (heat, power brake) even without a lower
# median clock.
SEVERE_CLOCK_REASONS = frozenset({"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                                  "hw_power_brake_slowdown"})
_GPU_BUSY_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})


@dataclass(frozen=True)
class StepTimestamps:
    """One training step on one host clock (e.g. ``time.perf_counter``), in seconds.

    ``end_s`` must be taken after the GPU finished the step (``torch.cuda.synchronize()``), or
    the split measures launch time, not compute. ``gpu_busy_s`` is MEASURED GPU busy time in the
    step: the union of kernel intervals from a torch.profiler trace (`kernel_busy_s`). Without
    it the whole forward-to-end span counts as compute and idle is unknown (None). CUDA events
    around the step do not give busy time: they span the gaps between kernels too.
    """

    start_s: float  # the loop started waiting for the batch
    data_ready_s: float  # the batch is in hand
    fwd_start_s: float  # the forward pass is launched
    end_s: float  # the step is over, synchronised
    gpu_busy_s: float | None = None


@dataclass(frozen=True)
class StepSplit:
    """Where a (mean) step's wall time went, in seconds."""

    data_wait_s: float
    host_s: float
    compute_s: float
    idle_s: float | None  # None: no measured GPU busy time, so idle is not separated
    steps: int = 1

    @property
    def total_s(self) -> float:
        """Wall time of the step."""
        return self.data_wait_s + self.host_s + self.compute_s + (self.idle_s or 0.0)

    def share(self, part_s: float | None) -> float | None:
        """``part_s`` as a fraction of the step (None when unknown or the step is empty)."""
        if part_s is None or self.total_s <= 0:
            return None
        return part_s / self.total_s


def split_step(step: StepTimestamps) -> StepSplit:
    """Split one step: data wait, host, compute and (when busy time is known) GPU idle.

    Raises:
        ValueError: the timestamps are out of order or the busy time is negative.
    """
    marks = (step.start_s, step.data_ready_s, step.fwd_start_s, step.end_s)
    if any(later < earlier for earlier, later in pairwise(marks)):
        raise ValueError(f"step timestamps must be non-decreasing but got {marks}")
    device_span = step.end_s - step.fwd_start_s
    if step.gpu_busy_s is None:
        compute, idle = device_span, None
    elif step.gpu_busy_s < 0:
        raise ValueError(f"gpu_busy_s must be >= 0 but got {step.gpu_busy_s}")
    else:
        compute = min(step.gpu_busy_s, device_span)  # busy time outside the span is not ours
        idle = device_span - compute
    return StepSplit(data_wait_s=step.data_ready_s - step.start_s,
                     host_s=step.fwd_start_s - step.data_ready_s, compute_s=compute, idle_s=idle)


def split_steps(steps: Sequence[StepTimestamps]) -> StepSplit:
    """The mean split over ``steps``; idle is None unless every step has a busy time.

    Raises:
        ValueError: no steps, or a step's timestamps are invalid.
    """
    if not steps:
        raise ValueError("split_steps needs at least one step")
    parts = [split_step(step) for step in steps]
    idles = [p.idle_s for p in parts if p.idle_s is not None]
    idle = statistics.fmean(idles) if len(idles) == len(parts) else None
    return StepSplit(data_wait_s=statistics.fmean(p.data_wait_s for p in parts),
                     host_s=statistics.fmean(p.host_s for p in parts),
                     compute_s=statistics.fmean(p.compute_s for p in parts),
                     idle_s=idle, steps=len(parts))


def kernel_busy_s(trace_events: Iterable[Mapping[str, Any]], start_us: float,
                  end_us: float) -> float:
    """Seconds in [start_us, end_us] during which at least one GPU kernel, memcpy or memset ran.

    ``trace_events`` are the ``traceEvents`` of a torch.profiler (Kineto) Chrome trace; their
    ``ts``/``dur`` are microseconds. Overlapping kernels (several streams) count once.
    """
    intervals = sorted(
        (max(float(e["ts"]), start_us), min(float(e["ts"]) + float(e.get("dur", 0)), end_us))
        for e in trace_events
        if e.get("cat") in _GPU_BUSY_CATEGORIES and "ts" in e
    )
    busy_us, reach = 0.0, start_us
    for begin, end in intervals:
        begin = max(begin, reach)
        if end > begin:
            busy_us += end - begin
            reach = end
    return busy_us / 1e6


@dataclass(frozen=True)
class ClockEvidence:
    """SM clock readings over a run: median clock vs maximum and how often each reason held."""

    factor: float | None  # median(current / max SM clock); None without readings
    sm_mhz: float | None  # median current SM clock
    max_sm_mhz: int | None
    reasons: Mapping[str, int] = field(default_factory=dict)  # reason -> readings it was active
    samples: int = 0


def summarize_clocks(samples: Iterable[ClockSample]) -> ClockEvidence:
    """Median clock factor and reason counts over the readings that have both clocks."""
    readings = [(s.sm_mhz, s.max_sm_mhz, s) for s in samples if s.sm_mhz and s.max_sm_mhz]
    if not readings:
        return ClockEvidence(factor=None, sm_mhz=None, max_sm_mhz=None)
    reasons = Counter(name for *_, s in readings for name in s.reason_names)
    return ClockEvidence(factor=statistics.median(sm / top for sm, top, _ in readings),
                         sm_mhz=statistics.median(sm for sm, _, _ in readings),
                         max_sm_mhz=max(top for _, top, _ in readings),
                         reasons=dict(reasons), samples=len(readings))


@dataclass(frozen=True)
class GapCause:
    """One named cause, the numbers behind it and what to try."""

    name: str
    evidence: str
    suggestion: str

    def __str__(self) -> str:
        return f"{self.name}: {self.evidence} -> {self.suggestion}"


@dataclass(frozen=True)
class GapReport:
    """Inputs as used, the TCA-MFU gap in percentage points, and the causes found."""

    mfu: float | None
    tca: float | None
    gap_pp: float | None
    clocks: ClockEvidence
    split: StepSplit | None
    causes: tuple[GapCause, ...]

    def lines(self) -> list[str]:
        """The measured inputs, then one line per cause (or that none was found)."""
        head = f"MFU {_pct(self.mfu)}" if self.mfu is not None else "MFU N/A"
        head += (f" vs TCA {_pct(self.tca)} (gap {self.gap_pp:+.1f} pp)"
                 if self.tca is not None and self.gap_pp is not None else ", TCA N/A")
        clocks = self.clocks
        if clocks.factor is not None:
            head += (f"; SM clock {clocks.sm_mhz:.0f}/{clocks.max_sm_mhz} MHz "
                     f"({clocks.factor * 100:.0f}% of max, {clocks.samples} readings)")
        causes = [str(cause) for cause in self.causes]
        return [head, *(causes or ["no cause found: no gap, throttling or stall above the "
                                   "thresholds"])]


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def split_causes(split: StepSplit) -> list[GapCause]:
    """Causes read from the step-time split."""
    causes: list[GapCause] = []
    step_ms = split.total_s * 1000
    data, host, idle = split.share(split.data_wait_s), split.share(split.host_s), \
        split.share(split.idle_s)
    if data is not None and data > DATA_BOUND_SHARE:
        causes.append(GapCause(
            "data-bound",
            f"data wait is {_pct(data)} of step time ({split.data_wait_s * 1000:.1f} of "
            f"{step_ms:.1f} ms)",
            "more DataLoader workers, pin_memory=True, persistent_workers=True, prefetching; "
            "move decoding and augmentation out of the training process"))
    if host is not None and host > HOST_BOUND_SHARE:
        causes.append(GapCause(
            "host-bound",
            f"host work between batch ready and forward launch is {_pct(host)} of step time",
            "move batch preparation into the DataLoader; copy with non_blocking=True from "
            "pinned memory"))
    if idle is not None and idle > GPU_IDLE_SHARE:
        causes.append(GapCause(
            "host-bound / launch overhead",
            f"the GPU is idle {_pct(idle)} of step time inside forward/backward/optimizer",
            "remove syncs in the step (.item(), .cpu(), printing tensors); use CUDA graphs or "
            "torch.compile(mode='reduce-overhead'), fused/foreach optimizers, a larger batch"))
    return causes


def clock_causes(clocks: ClockEvidence) -> list[GapCause]:
    """Causes read from SM clock readings."""
    if clocks.factor is None:
        return []
    seen = ", ".join(f"{name} in {count}/{clocks.samples}"
                     for name, count in sorted(clocks.reasons.items(), key=lambda kv: -kv[1]))
    why = f" ({seen})" if seen else ""
    if clocks.factor < CLOCK_THROTTLE_FACTOR:
        return [GapCause(
            "clock throttling",
            f"SM clock {clocks.sm_mhz:.0f}/{clocks.max_sm_mhz} MHz, factor "
            f"{clocks.factor:.2f}{why}",
            "check the power limit and cooling (nvidia-smi -q -d POWER,PERFORMANCE) and any "
            "locked application clocks; MFU is measured against the maximum clock")]
    severe = sorted(SEVERE_CLOCK_REASONS & clocks.reasons.keys())
    if severe:
        return [GapCause(
            "clock events",
            f"{', '.join(severe)} reported{why} although the median SM clock is "
            f"{clocks.factor:.2f} of maximum",
            "check cooling and power delivery; hardware slowdowns come and go")]
    return []


def tensor_causes(mfu: float, tca: float | None, clocks: ClockEvidence,
                  tca_reason: str | None) -> list[GapCause]:
    """Causes read from TCA against MFU (both fractions)."""
    if tca is None:
        return [GapCause(
            "tca unavailable",
            f"MFU {_pct(mfu)} but no tensor-core activity: {tca_reason or 'no TCA source'}",
            "MFU alone cannot tell idle tensor cores from inefficient tensor work; sample NVML "
            "GPM (Hopper or newer) or DCGM field 1004")]
    gap_pp = (tca - mfu) * 100
    numbers = f"TCA {_pct(tca)} vs MFU {_pct(mfu)}"
    if tca < LOW_TCA and mfu < LOW_MFU:
        return [GapCause(
            "tensor cores idle", f"low TCA and low MFU ({numbers})",
            "check the matmul dtype (bf16 autocast), allow TF32 for fp32 matmuls, avoid small "
            "matmuls (batch, hidden sizes); most time goes to non-matmul work")]
    if gap_pp > MODERATE_GAP_PP:
        clock_pp = tca * (1 - clocks.factor) * 100 if clocks.factor is not None else None
        explained = (f"; lower SM clocks explain ~{clock_pp:.0f} pp"
                     if clock_pp is not None and clock_pp >= 1 else "")
        size = "large" if gap_pp > LARGE_GAP_PP else "moderate"
        return [GapCause(
            "tensor cores busy but low MFU",
            f"{size} gap of {gap_pp:.0f} pp ({numbers}){explained}",
            "inefficient tensor work: padded or badly shaped GEMMs (dims not multiples of "
            "8/64), memory-bound kernels, or under-counted FLOPs; run the layer profiler and "
            "read the top kernels")]
    if gap_pp < -MODERATE_GAP_PP:
        return [GapCause(
            "MFU above TCA", f"MFU exceeds TCA by {-gap_pp:.0f} pp ({numbers})",
            "check the FLOP count (e.g. causal attention counted as full) and the peak, and "
            "that TCA windows cover the steady state")]
    return []


def analyze_gaps(mfu: float | None, tca: float | None = None, *,
                 clocks: Iterable[ClockSample] = (), split: StepSplit | None = None,
                 tca_reason: str | None = None) -> GapReport:
    """Name the causes behind a low MFU, each with its evidence.

    Args:
        mfu: Model FLOPs utilisation, fraction 0-1; None when unknown (tensor causes skipped).
        tca: Tensor-core activity, fraction 0-1 (GPM ANY_TENSOR_UTIL / 100 or DCGM 1004).
        clocks: SM clock readings taken during the run (`gpm.GpmSummary.clocks`).
        split: The step-time split (`split_steps`).
        tca_reason: Why TCA is None, shown in the cause.

    Returns:
        The report; ``causes`` is empty when nothing crossed a threshold.
    """
    evidence = summarize_clocks(clocks)
    causes = split_causes(split) if split is not None else []
    causes += clock_causes(evidence)
    if mfu is not None:
        causes += tensor_causes(mfu, tca, evidence, tca_reason)
    gap_pp = (tca - mfu) * 100 if mfu is not None and tca is not None else None
    return GapReport(mfu=mfu, tca=tca, gap_pp=gap_pp, clocks=evidence, split=split,
                     causes=tuple(causes))
