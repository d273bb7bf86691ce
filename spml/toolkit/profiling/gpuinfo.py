"""Which GPU is local: name, count, MIG profile, SM count and clocks, or why none is known.

NVML (``pynvml`` from nvidia-ml-py) is asked first because it needs no CUDA context. Names
follow NVML (``"NVIDIA H100 80GB HBM3"``, a MIG device ``"... MIG 3g.40gb"``), which is what
the peak table matches (toolkit-and-watchdog-notes §1.8). When MIG is on, the MIG device named
in ``CUDA_VISIBLE_DEVICES`` (else the first one) is reported, with its own SM count. When NVML
is missing (no driver, or an AMD GPU), torch is asked; on ROCm the compute capability is
dropped because AMD's gfx numbers are not CUDA compute capabilities (gfx90a reads as 9.0).
`detect_gpu` never raises for a missing GPU: it returns ``gpu=None`` and the reason.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

from spml.toolkit.profiling.peaks import Hardware, parse_mig_profile

# FP32 lanes per SM (CUDA C++ Programming Guide, "Arithmetic Instructions" throughput table:
# 32-bit floating-point add/multiply results per clock per SM). NVML reports CUDA cores, not
# SMs, for a full GPU: SMs = cores / lanes.
# https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#arithmetic-instructions
_FP32_LANES_PER_SM = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128,
                      (8, 9): 128, (9, 0): 128}


@dataclass(frozen=True)
class GpuInfo:
    """The local GPU as the profiler needs it.

    Attributes:
        name: Device name (NVML or torch), with the " MIG <profile>" suffix on a MIG device.
        count: Number of GPUs the driver sees (not MIG instances).
        mig_enabled: Whether MIG mode is on for the reported GPU.
        mig_profile: The reported MIG device's profile (``"3g.40gb"``), else None.
        hardware: SM count, max SM clock and compute capability, each None when unknown.
        sm_clock_mhz: The SM clock at the time of the query (throttling evidence).
        backend: ``"nvml"`` or ``"torch"``.
    """

    name: str
    count: int
    mig_enabled: bool
    mig_profile: str | None
    hardware: Hardware
    sm_clock_mhz: int | None
    backend: str


@dataclass(frozen=True)
class GpuDetection:
    """The detected GPU, or None and why."""

    gpu: GpuInfo | None
    reason: str = ""


def load_nvml() -> Any:
    """Import ``pynvml``; raises ImportError when nvidia-ml-py is not installed."""
    return importlib.import_module("pynvml")


def detect_gpu(index: int = 0, *, nvml: Any | None = None, use_torch: bool = True) -> GpuDetection:
    """Describe GPU ``index`` (NVML numbering), falling back to torch when NVML cannot.

    Args:
        index: Which GPU; NVML ignores CUDA_VISIBLE_DEVICES, torch honours it.
        nvml: The ``pynvml`` module or a stand-in with the same names; imported when None.
        use_torch: Ask torch when NVML gives nothing (imports torch: seconds, not ms).
    """
    found = _detect_nvml(index, nvml)
    if found.gpu is not None or not use_torch:
        return found
    fallback = _detect_torch(index)
    if fallback.gpu is not None:
        return fallback
    return GpuDetection(None, f"{found.reason}; {fallback.reason}")


def _detect_nvml(index: int, nvml: Any | None) -> GpuDetection:
    try:
        nv = nvml if nvml is not None else load_nvml()
    except ImportError as exc:
        return GpuDetection(None, f"NVML not available: pynvml cannot be imported ({exc})")
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        return GpuDetection(None, f"NVML not available: {exc}")
    try:
        return _read_device(nv, index)
    except nv.NVMLError as exc:
        return GpuDetection(None, f"NVML query failed: {exc}")
    finally:
        nv.nvmlShutdown()


def _read_device(nv: Any, index: int) -> GpuDetection:
    count = nv.nvmlDeviceGetCount()
    if count < 1:
        return GpuDetection(None, "NVML found no GPU")
    if not 0 <= index < count:
        return GpuDetection(None, f"GPU index must be in [0, {count}), got {index}")
    handle = nv.nvmlDeviceGetHandleByIndex(index)
    major, minor = nv.nvmlDeviceGetCudaComputeCapability(handle)
    cc = (int(major), int(minor))
    mig_enabled = _mig_enabled(nv, handle)
    mig_handle = _visible_mig_device(nv, handle) if mig_enabled else None
    if mig_handle is not None:
        name = _text(nv.nvmlDeviceGetName(mig_handle))
        attributes = _optional(nv, lambda: nv.nvmlDeviceGetAttributes(mig_handle))
        sm_count = getattr(attributes, "multiprocessorCount", None)
    else:
        name = _text(nv.nvmlDeviceGetName(handle))
        sm_count = _sm_count_from_cores(nv, handle, cc)
    max_clock = _optional(nv, lambda: nv.nvmlDeviceGetMaxClockInfo(handle, nv.NVML_CLOCK_SM))
    clock = _optional(nv, lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM))
    profile = parse_mig_profile(name) if mig_handle is not None else None
    hardware = Hardware(sm_count=sm_count, max_sm_clock_mhz=max_clock, compute_capability=cc)
    return GpuDetection(GpuInfo(name=name, count=count, mig_enabled=mig_enabled,
                                mig_profile=profile.text if profile else None, hardware=hardware,
                                sm_clock_mhz=clock, backend="nvml"))


def _mig_enabled(nv: Any, handle: Any) -> bool:
    try:
        current, _pending = nv.nvmlDeviceGetMigMode(handle)
    except nv.NVMLError:  # NOT_SUPPORTED on GPUs without MIG
        return False
    return bool(current == nv.NVML_DEVICE_MIG_ENABLE)


def _visible_mig_device(nv: Any, handle: Any) -> Any | None:
    """The MIG device this process would use: the one in CUDA_VISIBLE_DEVICES, else the first."""
    devices = []
    for slot in range(nv.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            devices.append(nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot))
        except nv.NVMLError:  # NOT_FOUND: an empty slot
            continue
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    for device in devices:
        if _text(nv.nvmlDeviceGetUUID(device)) in visible:
            return device
    return devices[0] if devices else None


def _sm_count_from_cores(nv: Any, handle: Any, cc: tuple[int, int]) -> int | None:
    lanes = _FP32_LANES_PER_SM.get(cc)
    cores = _optional(nv, lambda: nv.nvmlDeviceGetNumGpuCores(handle))
    if lanes is None or not cores:
        return None
    return int(cores) // lanes


def _optional(nv: Any, query: Any) -> Any:
    """A query that some GPUs/drivers do not support: None instead of an error."""
    try:
        return query()
    except nv.NVMLError:
        return None


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes.
    return value.decode() if isinstance(value, bytes) else str(value)


def _detect_torch(index: int) -> GpuDetection:
    try:
        torch = importlib.import_module("torch")
    except ImportError as exc:
        return GpuDetection(None, f"torch cannot be imported ({exc})")
    if not torch.cuda.is_available():
        return GpuDetection(None, "torch sees no CUDA or ROCm device")
    if not 0 <= index < torch.cuda.device_count():
        return GpuDetection(None, f"GPU index must be < {torch.cuda.device_count()}, got {index}")
    props = torch.cuda.get_device_properties(index)
    rocm = getattr(torch.version, "hip", None) is not None
    clock_khz = getattr(props, "clock_rate", None)
    hardware = Hardware(sm_count=props.multi_processor_count,
                        max_sm_clock_mhz=clock_khz / 1000 if clock_khz else None,
                        compute_capability=None if rocm else (props.major, props.minor))
    profile = parse_mig_profile(props.name) if " MIG " in props.name else None
    return GpuDetection(GpuInfo(name=props.name, count=torch.cuda.device_count(),
                                mig_enabled=profile is not None,
                                mig_profile=profile.text if profile else None,
                                hardware=hardware, sm_clock_mhz=None, backend="torch"))


def gpus_held(nvml: Any | None = None) -> int:
    """How many GPUs a command started here holds: those ``CUDA_VISIBLE_DEVICES`` names when
    it is set, else every GPU NVML sees (0 without NVML or a GPU)."""
    return len(visible_gpus(nvml))


def visible_gpus(nvml: Any | None = None) -> list[str]:
    """The GPUs a command started here may use, as ``CUDA_VISIBLE_DEVICES`` entries: that
    variable's own entries (indices or UUIDs) when it is set, else the indices of every GPU
    NVML sees (none without NVML or a GPU)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        names = [d.strip() for d in visible.split(",") if d.strip()]
        # CUDA stops at the first invalid entry: "-1" hides every GPU after it.
        return names[:names.index("-1")] if "-1" in names else names
    try:
        nv = nvml if nvml is not None else load_nvml()
        nv.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver: no GPU held
        return []
    try:
        return [str(i) for i in range(int(nv.nvmlDeviceGetCount()))]
    except Exception:  # noqa: BLE001 - a driver that answers nothing holds nothing
        return []
    finally:
        nv.nvmlShutdown()
