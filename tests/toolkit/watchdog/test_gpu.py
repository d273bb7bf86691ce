"""Xid watcher: the unavailable path, the NVML path against a scripted stand-in, a real GPU."""

from __future__ import annotations

import queue
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest

from spml.toolkit.watchdog.gpu import (
    DOUBLE_BIT_ECC_XID,
    GPU_LOST_XID,
    NvmlXidWatcher,
    UnavailableXidWatcher,
    make_xid_watcher,
)

XID, DBE, PSTATE = 0x8, 0x2, 0x4
TIMEOUT, NOT_SUPPORTED, GPU_IS_LOST, LIB_NOT_FOUND = 10, 3, 15, 12


class FakeNvmlError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNvml:
    """The pynvml functions the watcher uses, scripted: events come from a queue."""

    NVMLError = FakeNvmlError
    NVML_ERROR_TIMEOUT, NVML_ERROR_GPU_IS_LOST = TIMEOUT, GPU_IS_LOST
    nvmlEventTypeXidCriticalError, nvmlEventTypeDoubleBitEccError = XID, DBE

    def __init__(self, supported: list[int], init_error: int | None = None) -> None:
        self.supported, self.init_error = supported, init_error
        self.events: queue.Queue[Any] = queue.Queue()
        self.registered: list[tuple[int, int]] = []
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise FakeNvmlError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.supported)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetSupportedEventTypes(self, handle: int) -> int:
        if self.supported[handle] < 0:
            raise FakeNvmlError(NOT_SUPPORTED)
        return self.supported[handle]

    def nvmlEventSetCreate(self) -> str:
        self.calls.append("create")
        return "event-set"

    def nvmlDeviceRegisterEvents(self, handle: int, mask: int, event_set: str) -> None:
        self.registered.append((handle, mask))

    def nvmlEventSetWait_v2(self, event_set: str, timeout_ms: int) -> Any:
        try:
            item = self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise FakeNvmlError(TIMEOUT) from None
        if isinstance(item, int):
            raise FakeNvmlError(item)
        return item

    def nvmlEventSetFree(self, event_set: str) -> None:
        self.calls.append("free")


def _event(event_type: int, data: int) -> SimpleNamespace:
    return SimpleNamespace(eventType=event_type, eventData=data, device=0)


def _drain_until(watcher: NvmlXidWatcher, count: int) -> list[int]:
    seen: list[int] = []
    deadline = time.monotonic() + 5
    while len(seen) < count and time.monotonic() < deadline:
        seen += watcher.drain()
        time.sleep(0.01)
    return seen


def test_unavailable_watcher_is_inert() -> None:
    watcher = UnavailableXidWatcher("NVML not available: test")

    watcher.start()
    assert watcher.drain() == []
    watcher.stop()
    assert not watcher.available


@pytest.mark.skipif(make_xid_watcher().available, reason="this machine has a GPU")
def test_without_a_gpu_the_real_factory_says_why() -> None:
    watcher = make_xid_watcher()

    assert not watcher.available
    assert "NVML" in watcher.reason
    watcher.start()
    assert watcher.drain() == []
    watcher.stop()


def test_missing_pynvml_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail

    watcher = make_xid_watcher()

    assert not watcher.available
    assert "NVML not available" in watcher.reason
    assert "nvidia-ml-py" in watcher.reason


def test_failed_init_and_no_device_are_unavailable() -> None:
    broken = make_xid_watcher(FakeNvml([XID], init_error=LIB_NOT_FOUND))  # type: ignore[arg-type]
    empty_nvml = FakeNvml([])
    empty = make_xid_watcher(empty_nvml)  # type: ignore[arg-type]

    assert not broken.available
    assert broken.reason == "NVML not available: NVML error 12"
    assert not empty.available
    assert "no GPU device" in empty.reason
    assert empty_nvml.calls == ["init", "shutdown"]  # the probe does not keep NVML open


def test_factory_returns_the_nvml_watcher_when_a_device_exists() -> None:
    nvml = FakeNvml([XID])

    watcher = make_xid_watcher(nvml)  # type: ignore[arg-type]

    assert isinstance(watcher, NvmlXidWatcher)
    assert watcher.available
    assert nvml.calls == ["init", "shutdown"]  # NVML is opened again by start()


def test_collects_xid_codes_and_ignores_timeouts() -> None:
    nvml = FakeNvml([XID | DBE | PSTATE, XID])
    watcher = NvmlXidWatcher(nvml, wait_ms=20)  # timeouts come often; each must be ignored

    watcher.start()
    time.sleep(0.1)
    nvml.events.put(_event(XID, 79))
    nvml.events.put(_event(DBE, 0))
    codes = _drain_until(watcher, 2)
    watcher.stop()

    assert codes == [79, DOUBLE_BIT_ECC_XID]
    assert nvml.registered == [(0, XID | DBE), (1, XID)]
    assert watcher.available
    assert watcher.devices == 2
    assert watcher.error is None
    assert nvml.calls[-2:] == ["free", "shutdown"]
    assert watcher.drain() == []


def test_stop_is_idempotent_and_start_only_once() -> None:
    nvml = FakeNvml([XID])
    watcher = NvmlXidWatcher(nvml, wait_ms=10)

    watcher.start()
    watcher.start()
    watcher.stop()
    watcher.stop()

    assert nvml.calls == ["init", "create", "free", "shutdown"]


def test_no_device_with_xid_events_turns_unavailable_and_releases_nvml() -> None:
    nvml = FakeNvml([PSTATE, -1])  # one without Xid support, one refusing the query
    watcher = NvmlXidWatcher(nvml, wait_ms=10)

    watcher.start()

    assert not watcher.available
    assert "no device supports Xid events" in watcher.reason
    assert nvml.calls == ["init", "create", "free", "shutdown"]
    assert watcher.drain() == []
    watcher.stop()


def test_lost_gpu_is_reported_as_xid_79_and_ends_the_thread() -> None:
    nvml = FakeNvml([XID])
    watcher = NvmlXidWatcher(nvml, wait_ms=10)

    watcher.start()
    nvml.events.put(GPU_IS_LOST)
    codes = _drain_until(watcher, 1)
    watcher.stop()

    assert codes == [GPU_LOST_XID]
    assert watcher.error is not None
    assert "failed" in watcher.error


@pytest.mark.skipif(not make_xid_watcher().available, reason="needs an NVIDIA GPU and NVML")
def test_real_nvml_watcher_starts_and_stops() -> None:
    watcher = make_xid_watcher()

    watcher.start()
    time.sleep(1.2)  # at least two waits, each ending in NVML_ERROR_TIMEOUT
    codes = watcher.drain()
    watcher.stop()

    assert watcher.available, watcher.reason
    assert all(isinstance(code, int) for code in codes)
    assert getattr(watcher, "error", None) is None
