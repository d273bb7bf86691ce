"""Local GPU detection: a scripted NVML stand-in, the no-GPU path, and a real GPU when present."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from spml.toolkit.profiling.gpuinfo import detect_gpu
from spml.toolkit.profiling.peaks import lookup_peak

NOT_SUPPORTED, NOT_FOUND, LIB_NOT_FOUND = 3, 6, 12


class FakeNvmlError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNvml:
    """The pynvml names `detect_gpu` uses; devices are dicts, MIG devices nested in them."""

    NVMLError = FakeNvmlError
    NVML_CLOCK_SM = 1
    NVML_DEVICE_MIG_ENABLE = 1

    def __init__(self, devices: list[dict[str, Any]], init_error: int | None = None) -> None:
        self.devices, self.init_error = devices, init_error
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise FakeNvmlError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str | bytes:
        return handle["name"]

    def nvmlDeviceGetCudaComputeCapability(self, handle: dict[str, Any]) -> tuple[int, int]:
        return handle["cc"]

    def nvmlDeviceGetNumGpuCores(self, handle: dict[str, Any]) -> int:
        if "cores" not in handle:
            raise FakeNvmlError(NOT_SUPPORTED)
        return handle["cores"]

    def nvmlDeviceGetMaxClockInfo(self, handle: dict[str, Any], clock: int) -> int:
        return handle["max_clock"]

    def nvmlDeviceGetClockInfo(self, handle: dict[str, Any], clock: int) -> int:
        return handle["clock"]

    def nvmlDeviceGetMigMode(self, handle: dict[str, Any]) -> tuple[int, int]:
        if "mig" not in handle:
            raise FakeNvmlError(NOT_SUPPORTED)
        return (1, 1)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: dict[str, Any]) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: dict[str, Any], slot: int) -> Any:
        if slot >= len(handle["mig"]):
            raise FakeNvmlError(NOT_FOUND)
        return handle["mig"][slot]

    def nvmlDeviceGetUUID(self, handle: dict[str, Any]) -> str:
        return handle["uuid"]

    def nvmlDeviceGetAttributes(self, handle: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(multiprocessorCount=handle["sms"])


H100 = {"name": b"NVIDIA H100 80GB HBM3", "cc": (9, 0), "cores": 16896, "max_clock": 1980,
        "clock": 1755}


def test_a_plain_gpu_is_described_from_nvml() -> None:
    nvml = FakeNvml([H100, H100])
    found = detect_gpu(nvml=nvml, use_torch=False)
    gpu = found.gpu
    assert gpu is not None
    assert (gpu.name, gpu.count, gpu.backend) == ("NVIDIA H100 80GB HBM3", 2, "nvml")
    assert (gpu.mig_enabled, gpu.mig_profile) == (False, None)
    assert gpu.hardware.sm_count == 132  # 16896 cores / 128 FP32 lanes per SM
    assert (gpu.hardware.max_sm_clock_mhz, gpu.sm_clock_mhz) == (1980, 1755)
    assert gpu.hardware.compute_capability == (9, 0)
    assert nvml.calls == ["init", "shutdown"]
    assert lookup_peak(gpu.name).tflops == pytest.approx(989.4)


def test_the_visible_mig_device_is_reported_with_its_sm_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    migs = [{"name": "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "uuid": "MIG-aaa", "sms": 16},
            {"name": "NVIDIA H100 80GB HBM3 MIG 3g.40gb", "uuid": "MIG-bbb", "sms": 60}]
    nvml = FakeNvml([{**H100, "mig": migs}])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-bbb")
    gpu = detect_gpu(nvml=nvml, use_torch=False).gpu
    assert (gpu.name, gpu.mig_enabled, gpu.mig_profile) == (migs[1]["name"], True, "3g.40gb")
    assert gpu.hardware.sm_count == 60
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert detect_gpu(nvml=nvml, use_torch=False).gpu.mig_profile == "1g.10gb"


def test_unknown_core_counts_leave_the_sm_count_unknown() -> None:
    device = {k: v for k, v in H100.items() if k != "cores"}
    assert detect_gpu(nvml=FakeNvml([device]), use_torch=False).gpu.hardware.sm_count is None
    odd = {**H100, "cc": (5, 2)}
    assert detect_gpu(nvml=FakeNvml([odd]), use_torch=False).gpu.hardware.sm_count is None


def test_no_nvml_no_device_and_a_bad_index_give_reasons() -> None:
    failed = detect_gpu(nvml=FakeNvml([], init_error=LIB_NOT_FOUND), use_torch=False)
    assert failed.gpu is None
    assert failed.reason.startswith("NVML not available")
    empty = detect_gpu(nvml=FakeNvml([]), use_torch=False)
    assert (empty.gpu, empty.reason) == (None, "NVML found no GPU")
    out_of_range = detect_gpu(3, nvml=FakeNvml([H100]), use_torch=False)
    assert "index must be in [0, 1)" in out_of_range.reason


def test_missing_pynvml_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr("spml.toolkit.profiling.gpuinfo.load_nvml", refuse)
    found = detect_gpu(use_torch=False)
    assert found.gpu is None
    assert "pynvml cannot be imported" in found.reason


@pytest.mark.skipif(detect_gpu().gpu is not None, reason="this machine has a GPU")
def test_without_a_gpu_both_backends_say_why() -> None:
    found = detect_gpu()
    assert found.gpu is None
    assert "NVML" in found.reason
    assert "torch" in found.reason


@pytest.mark.skipif(detect_gpu().gpu is None, reason="needs a GPU")
def test_a_real_gpu_is_described() -> None:
    gpu = detect_gpu().gpu
    assert gpu.name
    assert gpu.count >= 1
