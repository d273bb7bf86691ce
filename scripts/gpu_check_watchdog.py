"""Check the watchdog's NVML Xid watcher on a GPU machine (about 5 s, no network needed).

Run from the repository root with any Python that has nvidia-ml-py (``import pynvml``)::

    python scripts/gpu_check_watchdog.py

It loads ``spml/toolkit/watchdog/gpu.py`` by file path (it needs no other spml dependency),
prints each device's name and supported NVML event mask, runs `NvmlXidWatcher` for 3 s, prints
the Xid codes it drained (normally none) and ends with a PASS or FAIL line. Exit status: 0 PASS,
1 FAIL, 2 when pynvml cannot be imported.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

GPU_MODULE = Path(__file__).resolve().parent.parent / "spml" / "toolkit" / "watchdog" / "gpu.py"
WATCH_S = 3.0
STOP_LIMIT_S = 2.0


def say(text: str) -> None:
    """One line to stdout (flushed, so a killed run still shows how far it got)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def load_gpu_module() -> ModuleType:
    """``spml/toolkit/watchdog/gpu.py`` loaded by path, without importing the spml package."""
    spec = importlib.util.spec_from_file_location("spml_watchdog_gpu", GPU_MODULE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {GPU_MODULE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def describe_devices(nv: ModuleType) -> int:
    """Print driver, device names and event masks; returns the number of devices."""
    nv.nvmlInit()
    try:
        say(f"driver {_text(nv.nvmlSystemGetDriverVersion())}, NVML "
            f"{_text(nv.nvmlSystemGetNVMLVersion())}")
        count = nv.nvmlDeviceGetCount()
        xid_bit = nv.nvmlEventTypeXidCriticalError
        for index in range(count):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            try:
                mask = nv.nvmlDeviceGetSupportedEventTypes(handle)
                events = f"supported event types 0x{mask:x} (Xid critical: {bool(mask & xid_bit)})"
            except nv.NVMLError as exc:
                events = f"supported event types unknown: {exc}"
            say(f"GPU {index}: {_text(nv.nvmlDeviceGetName(handle))}, {events}")
        return count
    finally:
        nv.nvmlShutdown()


def run_watcher(gpu: ModuleType, nv: ModuleType) -> list[str]:
    """Run the watcher for `WATCH_S` seconds; returns the problems found (none = PASS)."""
    watcher = gpu.make_xid_watcher(nv)
    if not watcher.available:
        return [f"make_xid_watcher: {watcher.reason}"]
    watcher.start()
    if not watcher.available:
        return [f"start: {watcher.reason}"]
    say(f"watching {watcher.devices} device(s) for {WATCH_S:.0f} s ...")
    time.sleep(WATCH_S)
    codes = watcher.drain()
    began = time.monotonic()
    watcher.stop()
    stop_s = time.monotonic() - began
    say(f"drained Xid codes: {codes} (normally none); stop took {stop_s:.2f} s")
    problems = []
    if watcher.error is not None:
        problems.append(watcher.error)
    if stop_s > STOP_LIMIT_S:
        problems.append(f"stop took {stop_s:.2f} s (limit {STOP_LIMIT_S} s)")
    if codes:
        say("note: Xid events were seen; check `dmesg | grep NVRM` on this machine")
    return problems


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def main() -> int:
    """Run the check; the exit status."""
    try:
        import pynvml as nv
    except ImportError as exc:
        say(f"FAIL: pynvml cannot be imported by {sys.executable} ({exc}). "
            "Install nvidia-ml-py into this Python (pip install nvidia-ml-py), then rerun.")
        return 2
    gpu = load_gpu_module()
    try:
        count = describe_devices(nv)
    except nv.NVMLError as exc:
        say(f"FAIL: NVML does not initialise: {exc}")
        return 1
    problems = run_watcher(gpu, nv) if count else ["no GPU device found"]
    say("PASS: NVML Xid watcher started, waited and stopped cleanly" if not problems
        else "FAIL: " + "; ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
