"""Tensor-core activity without DCGM: NVML GPM metrics sampled in windows on a background thread.

NVML GPM ("GPU performance monitoring") reads a hardware block that Nsight/DCGM do not lock, so it
works while other profilers run, but only on Hopper and newer GPUs (nvml.h: "For Hopper or newer
fully supported devices"). A metric is computed from TWO samples: the counters' difference over
the window between them. The calls and their measured behaviour are in
shared/spec/toolkit-and-watchdog-notes.md §2.2 (H200): a 20 ms pair returned zeros and a NaN DRAM
bandwidth, so windows shorter than `MIN_WINDOW_S` are never used.

`GpmSampler` samples one device: ``start()``, let the workload run, ``stop()`` returns a
`GpmSummary` with per-window values, mean/median per metric and the SM clock and clock-event
reasons read at the end of each window (throttling evidence for `gaps.analyze_gaps`). When GPM
cannot be used the summary has ``available=False`` and the reason; no number is ever invented.

NVML is reached through `GpmNvml`, the handful of ``pynvml`` names used here, so tests can pass a
fake with the same names. MIG instances (``nvmlGpmMigSampleGet``) are not handled: the whole GPU
is sampled.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import statistics
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Two GPM samples closer than this give zeros/NaN (H200 probe, notes §2.2; the Rust NVML wrapper
# documents a >100 ms internal refresh). Shorter requested intervals are raised to it.
MIN_WINDOW_S = 0.1
DEFAULT_INTERVAL_S = 1.0  # long windows only average; 1 s keeps overhead negligible

# NVML_GPM_METRIC_* ids from nvml.h (the same values are pynvml constants; a test checks them).
# Values are percentages 0-100 over the window.
CORE_METRICS: dict[str, int] = {
    "any_tensor_util_pct": 5,  # ANY_TENSOR_UTIL: any tensor pipe busy -> TCA
    "sm_util_pct": 2,  # SM_UTIL: share of SMs busy
    "sm_occupancy_pct": 3,  # SM_OCCUPANCY: active warps vs theoretical maximum
    "dram_bw_util_pct": 10,  # DRAM_BW_UTIL: DRAM bandwidth vs peak
}
OPTIONAL_METRICS: dict[str, int] = {
    "hmma_tensor_util_pct": 7,  # HMMA_TENSOR_UTIL: FP16/BF16 (and TF32, measured) tensor pipe
    "fp32_util_pct": 12,  # FP32_UTIL: non-tensor FP32; high with TCA 0 = TF32 disabled
}
TCA_METRIC = "any_tensor_util_pct"

NVML_CLOCK_SM = 1  # nvmlClockType_t NVML_CLOCK_SM
NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_FUNCTION_NOT_FOUND = 13  # driver too old for the call

# nvmlClocksEventReason* bits (pynvml; "ThrottleReason" is the deprecated name of the same bits).
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}
IDLE_REASON = 0x1  # an idle GPU lowers its clock; that is not throttling


class GpmNvml(Protocol):
    """The ``pynvml`` names this module uses (the module itself satisfies it)."""

    NVMLError: type[Exception]
    NVML_GPM_METRICS_GET_VERSION: int

    def c_nvmlGpmMetricsGet_t(self) -> Any: ...
    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> Any: ...
    def nvmlGpmSampleAlloc(self) -> Any: ...
    def nvmlGpmSampleGet(self, handle: Any, sample: Any) -> Any: ...
    def nvmlGpmSampleFree(self, sample: Any) -> None: ...
    def nvmlGpmMetricsGet(self, request: Any) -> Any: ...
    def nvmlDeviceGetClockInfo(self, handle: Any, clock: int) -> int: ...
    def nvmlDeviceGetMaxClockInfo(self, handle: Any, clock: int) -> int: ...
    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int: ...


@dataclass(frozen=True)
class ClockSample:
    """SM clock and clock-event reasons read at one instant (NVML gives no window average)."""

    sm_mhz: int | None
    max_sm_mhz: int | None
    reasons: int | None  # nvmlClocksEventReason bitmask; None when the driver cannot say

    @property
    def ratio(self) -> float | None:
        """Current / maximum SM clock, or None when either is unknown."""
        if not self.sm_mhz or not self.max_sm_mhz:
            return None
        return self.sm_mhz / self.max_sm_mhz

    @property
    def reason_names(self) -> tuple[str, ...]:
        """Names of the active reasons that limit the clock (``gpu_idle`` left out)."""
        if not self.reasons:
            return ()
        return tuple(name for bit, name in CLOCK_EVENT_REASONS.items()
                     if self.reasons & bit and bit != IDLE_REASON)


@dataclass(frozen=True)
class GpmWindow:
    """One sample pair: metric values in percent (None: NVML gave no valid value)."""

    start_s: float  # time.monotonic() at the first sample, comparable with the caller's clock
    length_s: float
    values: Mapping[str, float | None]
    clock: ClockSample | None = None


@dataclass(frozen=True)
class MetricStats:
    """Statistics of one metric over the windows that had a valid value."""

    mean: float
    median: float
    min: float
    max: float
    count: int


@dataclass(frozen=True)
class GpmSummary:
    """What a `GpmSampler` saw; ``available=False`` with ``reason`` when it could not sample."""

    available: bool
    reason: str  # why unavailable, or which device was sampled
    interval_s: float
    windows: tuple[GpmWindow, ...] = ()
    metrics: Mapping[str, MetricStats] = field(default_factory=dict)
    error: str | None = None  # an NVML error that ended sampling early

    @property
    def num_windows(self) -> int:
        """How many complete windows were measured."""
        return len(self.windows)

    @property
    def mean_window_s(self) -> float | None:
        """Mean measured window length in seconds (None without windows)."""
        if not self.windows:
            return None
        return statistics.fmean(w.length_s for w in self.windows)

    @property
    def tca(self) -> float | None:
        """Tensor-core activity as a fraction 0-1 (mean ANY_TENSOR_UTIL), None when unmeasured."""
        stats = self.metrics.get(TCA_METRIC)
        return None if stats is None else stats.mean / 100.0

    @property
    def clocks(self) -> list[ClockSample]:
        """The clock readings, one per window that had one."""
        return [w.clock for w in self.windows if w.clock is not None]

    def since(self, start_s: float) -> GpmSummary:
        """The same summary restricted to windows starting at or after ``start_s`` (monotonic),
        e.g. to drop warmup steps."""
        kept = [w for w in self.windows if w.start_s >= start_s]
        return summarize_windows(kept, interval_s=self.interval_s, reason=self.reason,
                                 error=self.error)


def summarize_windows(windows: Iterable[GpmWindow], *, interval_s: float, reason: str,
                      error: str | None = None) -> GpmSummary:
    """Mean/median/min/max per metric over the windows; invalid (None) values are skipped.

    A metric with no valid value in any window is absent from ``metrics``.
    """
    kept = tuple(windows)
    by_name: dict[str, list[float]] = {}
    for window in kept:
        for name, value in window.values.items():
            if value is not None:
                by_name.setdefault(name, []).append(value)
    metrics = {name: MetricStats(mean=statistics.fmean(vals), median=statistics.median(vals),
                                 min=min(vals), max=max(vals), count=len(vals))
               for name, vals in by_name.items()}
    return GpmSummary(available=True, reason=reason, interval_s=interval_s, windows=kept,
                      metrics=metrics, error=error)


def unavailable(reason: str, interval_s: float = DEFAULT_INTERVAL_S) -> GpmSummary:
    """A summary that says GPM could not be used, and why."""
    return GpmSummary(available=False, reason=reason, interval_s=interval_s)


class GpmUnavailableError(Exception):
    """GPM cannot be used on this machine; the message is the reason shown to users."""


def load_nvml() -> GpmNvml:
    """Import ``pynvml`` (package nvidia-ml-py).

    Raises:
        GpmUnavailableError: the package is not installed.
    """
    try:
        return importlib.import_module("pynvml")  # type: ignore[return-value]
    except ImportError as exc:
        raise GpmUnavailableError(
            f"NVML unavailable: pynvml cannot be imported ({exc}); install nvidia-ml-py") from exc


def describe_nvml_error(exc: Exception, doing: str) -> str:
    """A user-facing reason for an NVML error raised while ``doing`` something."""
    code = getattr(exc, "value", None)
    if code == NVML_ERROR_NO_PERMISSION:
        return (f"permission denied while {doing} ({exc}): GPM profiling may be restricted to "
                "admins (driver option NVreg_RestrictProfilingToAdminUsers)")
    if code in (NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND):
        return (f"GPM unsupported while {doing} ({exc}): NVML GPM needs a Hopper-or-newer GPU "
                "and driver >= R525")
    return f"NVML error while {doing}: {exc}"


def _name(nv: GpmNvml, handle: Any) -> str:
    try:
        name = nv.nvmlDeviceGetName(handle)
    except nv.NVMLError:
        return "unknown GPU"
    return name.decode() if isinstance(name, bytes) else str(name)


def open_gpm_device(nv: GpmNvml, index: int) -> tuple[Any, str]:
    """Handle and name of device ``index`` after checking GPM support; NVML must be initialised.

    Raises:
        GpmUnavailableError: no such GPU, or the GPU does not support GPM.
    """
    try:
        count = nv.nvmlDeviceGetCount()
        if not 0 <= index < count:
            raise GpmUnavailableError(f"no GPU: NVML sees {count} device(s), index {index} "
                                      "requested")
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        name = _name(nv, handle)
        support = nv.nvmlGpmQueryDeviceSupport(handle)
    except nv.NVMLError as exc:
        raise GpmUnavailableError(describe_nvml_error(exc, "querying GPM support")) from exc
    if not getattr(support, "isSupportedDevice", 0):
        raise GpmUnavailableError(f"GPM unsupported on {name} (GPU {index}): NVML GPM needs a "
                                  "Hopper-or-newer GPU (e.g. H100, H200)")
    return handle, name


def query_metrics(nv: GpmNvml, samples: tuple[Any, Any],
                  metrics: Mapping[str, int]) -> dict[str, float | None]:
    """Compute ``metrics`` (name -> NVML_GPM_METRIC id) between two filled samples.

    A metric whose per-metric return code is not success, or whose value is not finite (NaN on
    too-short windows), is None: it is missing, not zero.
    """
    request = nv.c_nvmlGpmMetricsGet_t()
    request.version = nv.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(metrics)
    request.sample1, request.sample2 = samples
    for slot, metric_id in enumerate(metrics.values()):
        request.metrics[slot].metricId = metric_id
    nv.nvmlGpmMetricsGet(request)
    values: dict[str, float | None] = {}
    for slot, name in enumerate(metrics):
        result = request.metrics[slot]
        value = float(result.value)
        ok = result.nvmlReturn == NVML_SUCCESS and math.isfinite(value)
        values[name] = value if ok else None
    return values


def read_clock_sample(nv: GpmNvml, handle: Any) -> ClockSample:
    """SM clock, its maximum and the clock-event reasons now; a part NVML refuses is None."""

    def attempt(call: Any, *args: Any) -> int | None:
        try:
            return int(call(handle, *args))
        except (nv.NVMLError, AttributeError):  # unsupported, or a pynvml without the call
            return None

    reasons = attempt(nv.nvmlDeviceGetCurrentClocksEventReasons)
    if reasons is None:  # drivers before the rename only have the "Throttle" spelling
        legacy = getattr(nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        reasons = attempt(legacy) if legacy is not None else None
    return ClockSample(sm_mhz=attempt(nv.nvmlDeviceGetClockInfo, NVML_CLOCK_SM),
                       max_sm_mhz=attempt(nv.nvmlDeviceGetMaxClockInfo, NVML_CLOCK_SM),
                       reasons=reasons)


def gpm_available_reason(device_index: int = 0, nvml: GpmNvml | None = None) -> str | None:
    """None when GPM can sample device ``device_index`` here, else the reason it cannot.

    Takes one real sample, so a permission problem shows up too.
    """
    try:
        nv = nvml or load_nvml()
    except GpmUnavailableError as exc:
        return str(exc)
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        return f"NVML unavailable (no NVIDIA driver or GPU?): {exc}"
    sample = None
    try:
        handle, _ = open_gpm_device(nv, device_index)
        sample = nv.nvmlGpmSampleAlloc()
        nv.nvmlGpmSampleGet(handle, sample)
    except GpmUnavailableError as exc:
        return str(exc)
    except nv.NVMLError as exc:
        return describe_nvml_error(exc, "taking a GPM sample")
    finally:
        if sample is not None:
            with contextlib.suppress(nv.NVMLError):
                nv.nvmlGpmSampleFree(sample)
        with contextlib.suppress(nv.NVMLError):
            nv.nvmlShutdown()
    return None


class GpmSampler:
    """Samples NVML GPM metrics of one GPU in windows on a background thread.

    Use ``with GpmSampler() as sampler: ...`` then ``sampler.summary``, or call `start` and
    `stop` yourself. The two GPM sample buffers are freed and NVML shut down whatever happens.

    Args:
        device_index: NVML index of the GPU.
        interval_s: Window length; values below `MIN_WINDOW_S` are raised to it because GPM
            metrics need a window of at least 100 ms.
        nvml: ``pynvml`` or a stand-in with the same names; imported when None.
        optional_metrics: Also ask for `OPTIONAL_METRICS` (dropped if the driver refuses them).
    """

    def __init__(self, device_index: int = 0, interval_s: float = DEFAULT_INTERVAL_S, *,
                 nvml: GpmNvml | None = None, optional_metrics: bool = True) -> None:
        self.device_index = device_index
        self.interval_s = max(float(interval_s), MIN_WINDOW_S)
        self.summary: GpmSummary | None = None
        self._nvml = nvml
        self._metrics = {**CORE_METRICS, **(OPTIONAL_METRICS if optional_metrics else {})}
        self._windows: list[GpmWindow] = []
        self._samples: list[Any] = []
        self._handle: Any = None
        self._device = ""
        self._error: str | None = None
        self._unavailable: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = True

    def __enter__(self) -> GpmSampler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Open the device, take the first sample and start the thread; on failure the summary
        of `stop` says why."""
        if self._thread or self._unavailable is not None or self.summary is not None:
            return  # running, failed, or finished: a sampler is used once
        try:
            nv = self._nvml = self._nvml or load_nvml()
        except GpmUnavailableError as exc:
            self._unavailable = str(exc)
            return
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            self._unavailable = f"NVML unavailable (no NVIDIA driver or GPU?): {exc}"
            return
        self._released = False
        try:
            self._handle, name = open_gpm_device(nv, self.device_index)
            for _ in range(2):  # one at a time, so a failed second alloc still frees the first
                self._samples.append(nv.nvmlGpmSampleAlloc())
            nv.nvmlGpmSampleGet(self._handle, self._samples[0])
        except GpmUnavailableError as exc:
            self._unavailable = str(exc)
        except nv.NVMLError as exc:
            self._unavailable = describe_nvml_error(exc, "taking the first GPM sample")
        if self._unavailable is not None:
            self._release()
            return
        self._device = f"NVML GPM on GPU {self.device_index} ({name})"
        self._thread = threading.Thread(target=self._run, args=(time.monotonic(),),
                                        name="gpm-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> GpmSummary:
        """Stop sampling (a last window counts if it lasted at least `MIN_WINDOW_S`) and return
        the summary; idempotent."""
        if self.summary is not None:
            return self.summary
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join(timeout=self.interval_s + 10.0)
            if thread.is_alive():  # stuck inside NVML: freeing its buffers under it is unsafe
                self._error = self._error or "GPM sampler thread did not stop; buffers leaked"
                log.warning(self._error)
        if self._unavailable is not None:
            self.summary = unavailable(self._unavailable, self.interval_s)
        elif not self._device:
            self.summary = unavailable("GPM sampler was never started", self.interval_s)
        elif not self._windows:
            reason = self._error or f"{self._device}: stopped before one {MIN_WINDOW_S}s window"
            self.summary = unavailable(reason, self.interval_s)
        else:
            self.summary = summarize_windows(list(self._windows), interval_s=self.interval_s,
                                             reason=self._device, error=self._error)
        return self.summary

    def _run(self, started: float) -> None:
        nv = self._nvml
        assert nv is not None  # set by start()
        first, second = self._samples
        try:
            while not self._stopping.wait(self.interval_s - (time.monotonic() - started)):
                started = self._window(first, second, started)
                first, second = second, first  # the newer sample opens the next window
            if time.monotonic() - started >= MIN_WINDOW_S:
                self._window(first, second, started)
        except nv.NVMLError as exc:
            self._error = describe_nvml_error(exc, "sampling GPM metrics")
            log.warning("GPM sampling ended early: %s", self._error)
        finally:
            self._release()

    def _window(self, first: Any, second: Any, started: float) -> float:
        nv = self._nvml
        assert nv is not None
        nv.nvmlGpmSampleGet(self._handle, second)
        ended = time.monotonic()
        try:
            values = query_metrics(nv, (first, second), self._metrics)
        except nv.NVMLError:
            if self._metrics.keys() == CORE_METRICS.keys():
                raise
            log.info("GPM refused the optional metrics; sampling the core ones only")
            self._metrics = dict(CORE_METRICS)
            values = query_metrics(nv, (first, second), self._metrics)
        clock = read_clock_sample(nv, self._handle)
        self._windows.append(GpmWindow(start_s=started, length_s=ended - started,
                                       values=values, clock=clock))
        return ended

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        nv = self._nvml
        assert nv is not None
        for sample in self._samples:
            try:
                nv.nvmlGpmSampleFree(sample)
            except nv.NVMLError as exc:
                log.warning("could not free a GPM sample: %s", exc)
        self._samples = []
        with contextlib.suppress(nv.NVMLError):
            nv.nvmlShutdown()
