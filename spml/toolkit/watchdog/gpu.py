"""GPU hardware events (Xid errors) seen through NVML, with a clean "not available" path.

`make_xid_watcher` returns an `NvmlXidWatcher` when NVML initialises and at least one GPU is
present, else an `UnavailableXidWatcher` whose ``reason`` says why. Both follow `XidWatcher`:
``start()`` once, ``drain()`` as often as wanted (the Xid codes seen since the last drain),
``stop()`` once. NVML calls follow shared/spec/toolkit-and-watchdog-notes.md §5.4 (measured on
an H200): register ``nvmlEventTypeXidCriticalError`` per device and wait with
``nvmlEventSetWait_v2``, which raises ``NVML_ERROR_TIMEOUT`` when nothing happened.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

log = logging.getLogger(__name__)

# nvml.h: the event data of a double-bit ECC event is 0, not an Xid. Xid 48 is the double-bit
# ECC error in NVIDIA's Xid catalogue, so the event is reported as that code.
DOUBLE_BIT_ECC_XID = 48
# NVML_ERROR_GPU_IS_LOST: "the GPU has fallen off the bus or has otherwise become inaccessible"
# (nvml.h), the condition of Xid 79; the watcher reports it as that code once and stops.
GPU_LOST_XID = 79
WAIT_MS = 500


class XidWatcher(Protocol):
    """Collects Xid codes of every GPU in the background."""

    available: bool
    reason: str

    def start(self) -> None:
        """Begin watching (no-op when unavailable)."""

    def drain(self) -> list[int]:
        """The Xid codes seen since the last drain, oldest first."""

    def stop(self) -> None:
        """Stop watching and release NVML (idempotent)."""


@dataclass
class UnavailableXidWatcher:
    """The watcher used where NVML or a GPU is missing: it never reports anything."""

    reason: str
    available: bool = False

    def start(self) -> None:
        """Nothing to start."""

    def drain(self) -> list[int]:
        """Always empty."""
        return []

    def stop(self) -> None:
        """Nothing to stop."""


def load_nvml() -> ModuleType:
    """Import ``pynvml`` (from the nvidia-ml-py package).

    Raises:
        ImportError: the package is not installed.
    """
    return importlib.import_module("pynvml")


def make_xid_watcher(nvml: ModuleType | None = None) -> XidWatcher:
    """An NVML watcher if NVML initialises and finds a device, else an unavailable one.

    Args:
        nvml: The ``pynvml`` module (or a stand-in); imported when ``None``.
    """
    try:
        nvml = nvml or load_nvml()
    except ImportError as exc:
        return UnavailableXidWatcher(f"NVML not available: pynvml cannot be imported ({exc}); "
                                     "install nvidia-ml-py")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return UnavailableXidWatcher(f"NVML not available: {exc}")
    try:
        count = nvml.nvmlDeviceGetCount()
    except nvml.NVMLError as exc:
        return UnavailableXidWatcher(f"NVML not available: {exc}")
    finally:
        nvml.nvmlShutdown()
    if count < 1:
        return UnavailableXidWatcher("NVML not available: no GPU device found")
    return NvmlXidWatcher(nvml)


class NvmlXidWatcher:
    """Waits for Xid (and double-bit ECC) events of every device on a background thread.

    If NVML fails when the watcher starts, or registers no device, it turns itself into an
    unavailable watcher: ``available`` becomes False and ``reason`` says why. An unexpected
    NVML error while waiting ends the thread; ``error`` then holds it.

    Args:
        nvml: The ``pynvml`` module (or a stand-in with the same functions).
        wait_ms: Longest single ``nvmlEventSetWait_v2`` wait; bounds how long `stop` takes.
    """

    def __init__(self, nvml: ModuleType | Any, wait_ms: int = WAIT_MS) -> None:
        self.available = True
        self.reason = "NVML Xid events"
        self.error: str | None = None
        self.devices = 0  # devices whose events are registered
        self._nvml, self._wait_ms = nvml, wait_ms
        self._codes: list[int] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._event_set: Any = None

    def start(self) -> None:
        """Initialise NVML, register every device and start the waiting thread."""
        if self._thread is not None or not self.available:
            return
        nv = self._nvml
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            self._give_up(f"NVML not available: {exc}", initialised=False)
            return
        try:
            self._event_set = nv.nvmlEventSetCreate()
            self.devices = self._register_all()
        except nv.NVMLError as exc:
            self._give_up(f"NVML events not available: {exc}")
            return
        if self.devices == 0:
            self._give_up("NVML events not available: no device supports Xid events")
            return
        self._thread = threading.Thread(target=self._run, name="nvml-xid-watcher", daemon=True)
        self._thread.start()

    def drain(self) -> list[int]:
        """The Xid codes seen since the last drain, oldest first."""
        with self._lock:
            codes, self._codes = self._codes, []
        return codes

    def stop(self) -> None:
        """End the thread, free the event set and shut NVML down (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout=self._wait_ms / 1000 * 4 + 1)
        if thread.is_alive():  # stuck in NVML: freeing the set under it would be unsafe
            log.warning("NVML Xid watcher thread did not stop; leaving NVML initialised")
            return
        self._release()

    def _register_all(self) -> int:
        nv = self._nvml
        wanted = nv.nvmlEventTypeXidCriticalError | nv.nvmlEventTypeDoubleBitEccError
        registered = 0
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            try:
                mask = wanted & nv.nvmlDeviceGetSupportedEventTypes(handle)
                if mask:
                    nv.nvmlDeviceRegisterEvents(handle, mask, self._event_set)
                    registered += 1
            except nv.NVMLError as exc:  # e.g. NOT_SUPPORTED on this device or in a VM
                log.info("GPU %d: Xid events not registered: %s", index, exc)
        return registered

    def _run(self) -> None:
        nv = self._nvml
        while not self._stopping.is_set():
            try:
                event = nv.nvmlEventSetWait_v2(self._event_set, self._wait_ms)
            except nv.NVMLError as exc:
                if getattr(exc, "value", None) == nv.NVML_ERROR_TIMEOUT:
                    continue
                self._fail(exc)
                return
            code = self._code_of(event)
            log.warning("GPU event: Xid %d", code)
            with self._lock:
                self._codes.append(code)

    def _fail(self, exc: Exception) -> None:
        self.error = f"NVML event wait failed: {exc}"
        log.warning("%s; no more Xid events will be seen", self.error)
        if getattr(exc, "value", None) == self._nvml.NVML_ERROR_GPU_IS_LOST:
            with self._lock:
                self._codes.append(GPU_LOST_XID)

    def _code_of(self, event: Any) -> int:
        if event.eventType & self._nvml.nvmlEventTypeDoubleBitEccError:
            return DOUBLE_BIT_ECC_XID
        return int(event.eventData)

    def _give_up(self, reason: str, initialised: bool = True) -> None:
        self.available, self.reason = False, reason
        log.info("%s", reason)
        if initialised:
            self._release()

    def _release(self) -> None:
        nv = self._nvml
        try:
            if self._event_set is not None:
                nv.nvmlEventSetFree(self._event_set)
        except nv.NVMLError as exc:
            log.info("nvmlEventSetFree failed: %s", exc)
        finally:
            self._event_set = None
            try:
                nv.nvmlShutdown()
            except nv.NVMLError as exc:
                log.info("nvmlShutdown failed: %s", exc)
