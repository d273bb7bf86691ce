"""NVML GPM sampling against a fake NVML that speaks pynvml's names and real ctypes structs."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import pynvml
import pytest

from spml.toolkit.profiling import dcgm, gpm
from spml.toolkit.profiling.gpm import (
    CORE_METRICS,
    MIN_WINDOW_S,
    OPTIONAL_METRICS,
    ClockSample,
    GpmSampler,
    GpmWindow,
    gpm_available_reason,
    summarize_windows,
)

ANY_TENSOR, SM_UTIL, SM_OCC, DRAM_BW, HMMA, FP32 = 5, 2, 3, 10, 7, 12


class FakeNvml:
    """Scripted NVML: metric values per nvmlGpmMetricsGet call, counted resources.

    Uses pynvml's real request struct and sample pointer type, so the code under test fills the
    same ctypes fields it fills on a GPU.
    """

    NVMLError = pynvml.NVMLError
    NVML_GPM_METRICS_GET_VERSION = pynvml.NVML_GPM_METRICS_GET_VERSION
    c_nvmlGpmMetricsGet_t = pynvml.c_nvmlGpmMetricsGet_t

    def __init__(self, *, supported: bool = True, count: int = 1,
                 fail: dict[str, int] | None = None) -> None:
        self.supported, self.count = supported, count
        self.fail = dict(fail or {})  # call name -> NVML error code to raise
        self.fail_metrics_after: int | None = None  # raise on calls after this many
        self.metric_calls: list[dict[int, float]] = []  # what each call returned
        self.unsupported_metrics: set[int] = set()
        self.refuse_optional = False
        self.allocated: list[Any] = []
        self.freed: list[Any] = []
        self.sample_gets = 0
        self.inits = self.shutdowns = 0
        self.clock_mhz, self.max_mhz, self.reasons = 1290, 1980, 0x4
        self._lock = threading.Lock()

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise pynvml.NVMLError(self.fail[name])

    def nvmlInit(self) -> None:
        self._maybe_fail("init")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle-{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"NVIDIA H100 80GB HBM3" if self.supported else b"NVIDIA A100-SXM4-80GB"

    def nvmlGpmQueryDeviceSupport(self, handle: str) -> Any:
        self._maybe_fail("support")
        support = pynvml.c_nvmlGpmSupport_t()
        support.isSupportedDevice = int(self.supported)
        return support

    def nvmlGpmSampleAlloc(self) -> Any:
        sample = pynvml.c_nvmlGpmSample_t()
        self.allocated.append(sample)
        return sample

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        self.freed.append(sample)

    def nvmlGpmSampleGet(self, handle: str, sample: Any) -> Any:
        self._maybe_fail("sample")
        self.sample_gets += 1
        return sample

    def value_for(self, call: int, metric_id: int) -> float:
        return {ANY_TENSOR: 40.0 + call, SM_UTIL: 90.0, SM_OCC: 30.0, DRAM_BW: float("nan"),
                HMMA: 39.0 + call, FP32: 1.0}.get(metric_id, 0.0)

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        call = len(self.metric_calls)
        if self.fail_metrics_after is not None and call >= self.fail_metrics_after:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        ids = [request.metrics[i].metricId for i in range(request.numMetrics)]
        if self.refuse_optional and set(ids) - set(CORE_METRICS.values()):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        assert request.version == pynvml.NVML_GPM_METRICS_GET_VERSION
        returned = {}
        for i, metric_id in enumerate(ids):
            if metric_id in self.unsupported_metrics:
                request.metrics[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            request.metrics[i].value = self.value_for(call, metric_id)
            request.metrics[i].nvmlReturn = pynvml.NVML_SUCCESS
            returned[metric_id] = request.metrics[i].value
        self.metric_calls.append(returned)
        return request

    def nvmlDeviceGetClockInfo(self, handle: str, clock: int) -> int:
        assert clock == pynvml.NVML_CLOCK_SM
        return self.clock_mhz

    def nvmlDeviceGetMaxClockInfo(self, handle: str, clock: int) -> int:
        return self.max_mhz

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: str) -> int:
        self._maybe_fail("reasons")
        return self.reasons


def run_until(sampler: GpmSampler, fake: FakeNvml, calls: int, timeout_s: float = 5.0) -> None:
    sampler.start()
    deadline = time.monotonic() + timeout_s
    while len(fake.metric_calls) < calls and time.monotonic() < deadline:
        time.sleep(0.01)


def test_metric_ids_match_pynvml_constants() -> None:
    names = {"any_tensor_util_pct": "ANY_TENSOR_UTIL", "sm_util_pct": "SM_UTIL",
             "sm_occupancy_pct": "SM_OCCUPANCY", "dram_bw_util_pct": "DRAM_BW_UTIL",
             "hmma_tensor_util_pct": "HMMA_TENSOR_UTIL", "fp32_util_pct": "FP32_UTIL"}
    for key, metric_id in {**CORE_METRICS, **OPTIONAL_METRICS}.items():
        assert getattr(pynvml, f"NVML_GPM_METRIC_{names[key]}") == metric_id
    assert pynvml.NVML_CLOCK_SM == gpm.NVML_CLOCK_SM
    checked = 0
    for bit, name in gpm.CLOCK_EVENT_REASONS.items():
        camel = "".join(part.capitalize() for part in name.split("_"))
        named = {value for attr, value in vars(pynvml).items()
                 if attr.startswith("nvmlClocks") and attr.lower().endswith(camel.lower())}
        if named:  # nvidia-ml-py versions name some reasons differently (seen on the H200)
            assert bit in named, name
            checked += 1
    assert checked >= len(gpm.CLOCK_EVENT_REASONS) // 2


def test_sampler_assembles_windows_from_fake_nvml() -> None:
    fake = FakeNvml()
    sampler = GpmSampler(interval_s=0.1, nvml=fake)
    run_until(sampler, fake, calls=3)
    summary = sampler.stop()
    assert summary.available, summary.reason
    assert "H100" in summary.reason
    assert summary.num_windows == len(fake.metric_calls) >= 3
    tca = [call[ANY_TENSOR] for call in fake.metric_calls]
    stats = summary.metrics["any_tensor_util_pct"]
    assert stats.mean == pytest.approx(sum(tca) / len(tca))
    assert stats.min == 40.0
    assert stats.count == len(tca)
    assert summary.tca == pytest.approx(stats.mean / 100)
    assert summary.metrics["sm_util_pct"].median == 90.0
    assert summary.metrics["hmma_tensor_util_pct"].max == pytest.approx(39.0 + len(tca) - 1)
    # NaN DRAM bandwidth (too-short windows do this) is missing, never 0
    assert "dram_bw_util_pct" not in summary.metrics
    assert all(w.values["dram_bw_util_pct"] is None for w in summary.windows)


def test_windows_are_at_least_the_minimum_and_requested_interval_is_clamped() -> None:
    fake = FakeNvml()
    sampler = GpmSampler(interval_s=0.01, nvml=fake)
    assert sampler.interval_s == MIN_WINDOW_S
    run_until(sampler, fake, calls=2)
    summary = sampler.stop()
    assert min(w.length_s for w in summary.windows) >= MIN_WINDOW_S
    starts = [w.start_s for w in summary.windows]
    assert starts == sorted(starts)


def test_samples_freed_and_nvml_shut_down_after_stop() -> None:
    fake = FakeNvml()
    sampler = GpmSampler(interval_s=0.1, nvml=fake)
    run_until(sampler, fake, calls=1)
    sampler.stop()
    assert len(fake.allocated) == 2
    assert sorted(map(id, fake.freed)) == sorted(map(id, fake.allocated))
    assert fake.shutdowns == fake.inits == 1


def test_clock_readings_are_kept_per_window() -> None:
    fake = FakeNvml()
    with GpmSampler(interval_s=0.1, nvml=fake) as sampler:
        run_until(sampler, fake, calls=2)
    clocks = sampler.summary.clocks if sampler.summary else []
    assert clocks
    assert all(c.sm_mhz == 1290 and c.max_sm_mhz == 1980 for c in clocks)
    assert clocks[0].reason_names == ("sw_power_cap",)
    assert clocks[0].ratio == pytest.approx(1290 / 1980)


def test_unsupported_per_metric_value_is_none_not_zero() -> None:
    fake = FakeNvml()
    fake.unsupported_metrics = {SM_OCC}
    sampler = GpmSampler(interval_s=0.1, nvml=fake)
    run_until(sampler, fake, calls=1)
    summary = sampler.stop()
    assert "sm_occupancy_pct" not in summary.metrics
    assert summary.windows[0].values["sm_occupancy_pct"] is None


def test_refused_optional_metrics_fall_back_to_core_ones() -> None:
    fake = FakeNvml()
    fake.refuse_optional = True
    sampler = GpmSampler(interval_s=0.1, nvml=fake)
    run_until(sampler, fake, calls=2)
    summary = sampler.stop()
    assert summary.available
    assert summary.error is None
    assert set(summary.metrics) == set(CORE_METRICS) - {"dram_bw_util_pct"}


def test_unsupported_gpu_reports_reason_and_frees_everything() -> None:
    fake = FakeNvml(supported=False)
    sampler = GpmSampler(nvml=fake)
    sampler.start()
    summary = sampler.stop()
    assert not summary.available
    assert "Hopper" in summary.reason
    assert "A100" in summary.reason
    assert summary.tca is None
    assert summary.num_windows == 0
    assert fake.allocated == []
    assert fake.shutdowns == 1


def test_permission_error_on_first_sample() -> None:
    fake = FakeNvml(fail={"sample": pynvml.NVML_ERROR_NO_PERMISSION})
    sampler = GpmSampler(nvml=fake)
    sampler.start()
    summary = sampler.stop()
    assert not summary.available
    assert "permission" in summary.reason
    assert len(fake.freed) == len(fake.allocated) == 2


def test_failed_second_allocation_frees_the_first() -> None:
    class AllocFails(FakeNvml):
        def nvmlGpmSampleAlloc(self) -> Any:
            if self.allocated:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_MEMORY)
            return super().nvmlGpmSampleAlloc()

    fake = AllocFails()
    sampler = GpmSampler(nvml=fake)
    sampler.start()
    assert "Insufficient Memory" in sampler.stop().reason
    assert len(fake.allocated) == 1
    assert fake.freed == fake.allocated
    assert fake.shutdowns == 1


@pytest.mark.parametrize(("fake", "expected"), [
    (FakeNvml(fail={"init": pynvml.NVML_ERROR_LIBRARY_NOT_FOUND}), "NVML unavailable"),
    (FakeNvml(count=0), "no GPU"),
    (FakeNvml(fail={"support": pynvml.NVML_ERROR_NOT_SUPPORTED}), "GPM unsupported"),
])
def test_unavailable_reasons(fake: FakeNvml, expected: str) -> None:
    sampler = GpmSampler(nvml=fake)
    sampler.start()
    assert expected in sampler.stop().reason
    assert expected in (gpm_available_reason(nvml=fake) or "")


def test_available_reason_is_none_on_a_supported_gpu() -> None:
    fake = FakeNvml()
    assert gpm_available_reason(nvml=fake) is None
    assert len(fake.freed) == len(fake.allocated) == 1
    assert fake.sample_gets == 1


def test_error_mid_run_keeps_earlier_windows() -> None:
    fake = FakeNvml()
    fake.fail_metrics_after = 2
    sampler = GpmSampler(interval_s=0.1, nvml=fake)
    run_until(sampler, fake, calls=2)
    time.sleep(0.3)
    summary = sampler.stop()
    assert summary.available
    assert summary.num_windows == 2
    assert summary.error
    assert "GPU is lost" in summary.error
    assert len(fake.freed) == 2


def test_stop_without_start_is_unavailable() -> None:
    summary = GpmSampler(nvml=FakeNvml()).stop()
    assert not summary.available
    assert "never started" in summary.reason


def test_clock_reading_falls_back_to_throttle_reasons() -> None:
    class OldDriverNvml(FakeNvml):
        def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: str) -> int:
            return 0x40 | 0x1  # hw thermal slowdown while idle

    fake = OldDriverNvml(fail={"reasons": pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
    sample = gpm.read_clock_sample(fake, "h")
    assert sample.reason_names == ("hw_thermal_slowdown",)


def test_summarize_windows_statistics_and_since() -> None:
    windows = [GpmWindow(start_s=float(i), length_s=1.0,
                         values={"any_tensor_util_pct": v, "sm_util_pct": None},
                         clock=ClockSample(1980, 1980, 0))
               for i, v in enumerate([10.0, 20.0, 60.0, None])]
    summary = summarize_windows(windows, interval_s=1.0, reason="test")
    stats = summary.metrics["any_tensor_util_pct"]
    assert (stats.mean, stats.median, stats.min, stats.max, stats.count) == (30.0, 20.0, 10.0,
                                                                              60.0, 3)
    assert "sm_util_pct" not in summary.metrics
    later = summary.since(2.0)
    assert later.num_windows == 2
    assert later.metrics["any_tensor_util_pct"].mean == 60.0
    assert math.isclose(summary.mean_window_s or 0, 1.0)


# --- DCGM field 1004, the other TCA source ------------------------------------------------------

DMON_TEXT = """\
#Entity   TENSO
ID
GPU 0     0.000
GPU 1     0.900
GPU 0     0.412
GPU 0     N/A
#Entity   TENSO
ID
GPU 0     0.500
Error getting values information. Return -33: Module not loaded
"""


def test_dmon_parser_reads_the_tensor_column_of_one_gpu() -> None:
    assert dcgm.parse_dmon_output(DMON_TEXT, gpu_index=0) == [0.0, 0.412, 0.5]
    assert dcgm.parse_dmon_output(DMON_TEXT) == [0.0, 0.9, 0.412, 0.5]
    assert dcgm.dmon_error(DMON_TEXT) == "Error getting values information. Return -33: Module " \
                                         "not loaded"


def test_dmon_parser_finds_the_named_column_among_several() -> None:
    text = "# Entity  SMACT  TENSO  DRAMA\nID\nGPU 0  0.9  0.25  0.1\nGPU 0  0.8  0.35  0.1\n"
    assert dcgm.parse_dmon_output(text) == [0.25, 0.35]
    unnamed = "#Entity  AAAAA  BBBBB\nGPU 0  0.9  0.25\n"
    assert dcgm.parse_dmon_output(unnamed) == []  # several columns, none named: no guessing


def test_dmon_command_passes_milliseconds_and_warmup_uses_them() -> None:
    argv = dcgm.dmon_command(gpu_index=2, interval_ms=1000)
    assert argv[argv.index("-d") + 1] == "1000"  # the reference passed 1 (seconds)
    assert argv[argv.index("-e") + 1] == "1004"
    assert argv[argv.index("-i") + 1] == "2"
    assert dcgm.dmon_command(interval_ms=5)[5] == str(dcgm.MIN_INTERVAL_MS)
    assert dcgm.warmup_samples(warmup_s=3.0, interval_ms=500) == 6
    assert dcgm.warmup_samples(warmup_s=0.0, interval_ms=500) == 0


def test_tca_stats() -> None:
    stats = dcgm.tca_stats([0.2, 0.4, 0.6])
    assert stats is not None
    assert (stats.mean, stats.median, stats.min, stats.max, stats.count) == pytest.approx(
        (0.4, 0.4, 0.2, 0.6, 3))
    assert stats.std == pytest.approx(0.2)
    assert dcgm.tca_stats([]) is None
    single = dcgm.tca_stats([0.3])
    assert single is not None
    assert single.std == 0.0


def test_no_dcgmi_means_unavailable_with_reason(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "dcgmi not found" in (dcgm.dcgm_unavailable_reason() or "")
    sampler = dcgm.DcgmSampler(tmp_path / "logs")
    sampler.start()
    summary = sampler.stop()
    assert not summary.available
    assert summary.tca is None
    assert "dcgmi not found" in summary.reason


FAKE_DCGMI = """#!/bin/sh
echo "$@" >> "{args_log}"
if [ "$1" = "discovery" ]; then echo "1 GPU found."; exit 0; fi
echo "#Entity   TENSO"
echo "ID"
v=0
while true; do echo "GPU 0     0.$((v % 10))00"; v=$((v + 1)); sleep 0.05; done
"""


def test_dcgm_sampler_runs_dmon_and_parses_it(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "dcgmi"
    script.write_text(FAKE_DCGMI.format(args_log=tmp_path / "args.log"))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    sampler = dcgm.DcgmSampler(tmp_path / "logs", gpu_index=0, interval_ms=250)
    sampler.start()
    time.sleep(0.5)
    summary = sampler.stop()
    assert summary.available, summary.reason
    assert summary.samples[:3] == (0.0, 0.1, 0.2)
    assert summary.tca == pytest.approx(sum(summary.samples) / len(summary.samples))
    calls = (tmp_path / "args.log").read_text().splitlines()
    assert calls == ["discovery -l", "dmon -e 1004 -d 250 -i 0"]


# --- On a real Hopper-or-newer GPU (skipped elsewhere) -------------------------------------------

_GPM_REASON = gpm_available_reason()


@pytest.mark.skipif(_GPM_REASON is not None, reason=f"no NVML GPM here: {_GPM_REASON}")
def test_real_gpm_sees_busy_tensor_cores_during_bf16_matmuls() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip(f"GPM is usable but torch {torch.__version__} cannot reach the GPU")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    with GpmSampler(interval_s=0.5) as sampler:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            for _ in range(20):
                a @ b
            torch.cuda.synchronize()
    summary = sampler.summary
    assert summary is not None
    assert summary.available, summary.reason
    assert summary.error is None
    assert summary.num_windows >= 4
    assert summary.tca is not None
    assert summary.tca > 0.5  # the H200 probe read 90.8 % on this workload
    assert summary.metrics["sm_util_pct"].mean > 50
    assert "hmma_tensor_util_pct" in summary.metrics  # the optional metrics were accepted
    clocks = summary.clocks
    assert clocks
    assert clocks[0].sm_mhz is not None
    assert clocks[0].max_sm_mhz is not None
    assert clocks[0].max_sm_mhz >= clocks[0].sm_mhz > 0
