"""GPU memory report from the caching allocator's statistics, with measured gradient bytes.

Reads the flat dict of ``torch.cuda.memory_stats()`` (keys like
``"allocated_bytes.all.current"``), so a captured dict can be analysed anywhere; the live helpers
call torch.cuda when it is available. Definitions (shared/spec/toolkit-and-watchdog-notes.md §3.2):

* allocated: bytes in live tensors; reserved: bytes the caching allocator holds from cudaMalloc.
* fragmentation = ``inactive_split_bytes.all.current / reserved_bytes.all.current``: free pieces
  stuck inside split segments, which cannot be returned or used for a larger block. The
  reference's ``(reserved - allocated) / reserved`` is NOT used: it counts the allocator's normal
  cache of freed activations (0.79 between steps in the probe, against 0.078 by this measure).
* peak fragmentation = ``1 - allocated.peak / reserved.peak``, the waste at the step's peak.
* ``num_alloc_retries`` > 0: a cudaMalloc failed, the allocator emptied its cache and retried
  (slow, close to OOM); ``num_ooms`` counts out-of-memory errors raised.

Parameter and gradient bytes are measured from the tensors (``numel * element_size`` of each
``p.grad`` that exists), not estimated from ``requires_grad`` as the reference did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from spml.errors import SpmlError

FRAGMENTATION_THRESHOLD = 0.20  # SPML's threshold: above it, suggest expandable segments
GIB = 1024**3


@dataclass(frozen=True)
class MemoryReport:
    """Allocator state and pressure signals; bytes unless named otherwise."""

    allocated_bytes: int
    peak_allocated_bytes: int
    reserved_bytes: int
    peak_reserved_bytes: int
    inactive_split_bytes: int
    fragmentation: float  # inactive_split / reserved (0 when nothing is reserved)
    peak_fragmentation: float | None  # 1 - allocated.peak / reserved.peak
    num_alloc_retries: int
    num_ooms: int
    threshold: float = FRAGMENTATION_THRESHOLD
    param_bytes: int | None = None
    grad_bytes: int | None = None  # measured from existing .grad tensors
    non_pytorch_bytes: int | None = None  # CUDA context, NCCL, cuBLAS: total - free - reserved
    warnings: tuple[str, ...] = ()

    @property
    def fragmentation_high(self) -> bool:
        """Whether fragmentation is above the threshold."""
        return self.fragmentation > self.threshold

    @property
    def peak_allocated_gib(self) -> float:
        """Peak allocated memory in GiB."""
        return self.peak_allocated_bytes / GIB


def param_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters (shared parameters counted once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def grad_bytes(model: nn.Module) -> int:
    """Bytes of the gradients that exist now (``p.grad`` set), measured from the grad tensors
    themselves, so a grad kept in another dtype than its parameter is counted right."""
    return sum(p.grad.numel() * p.grad.element_size()
               for p in model.parameters() if p.grad is not None)


def _stat(stats: Mapping[str, Any], key: str) -> int:
    # A counter the allocator never touched is absent; absent means zero for these counters.
    return int(stats.get(key, 0))


def memory_warnings(report: MemoryReport) -> tuple[str, ...]:
    """Human-readable warnings for the pressure signals in ``report``."""
    found: list[str] = []
    if report.fragmentation_high:
        found.append(
            f"fragmentation {report.fragmentation:.0%} > {report.threshold:.0%}: "
            f"{report.inactive_split_bytes / GIB:.2f} GiB of {report.reserved_bytes / GIB:.2f} "
            "GiB reserved sit in inactive split blocks; try "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")
    if report.num_alloc_retries:
        found.append(
            f"{report.num_alloc_retries} allocation retries: cudaMalloc failed and the allocator "
            "freed its cache to retry (slow; the run is close to out of memory)")
    if report.num_ooms:
        found.append(f"{report.num_ooms} CUDA out-of-memory error(s) were raised")
    return tuple(found)


def analyze_memory(stats: Mapping[str, Any], *, model: nn.Module | None = None,
                   threshold: float = FRAGMENTATION_THRESHOLD,
                   non_pytorch_bytes: int | None = None) -> MemoryReport:
    """Build a `MemoryReport` from a ``torch.cuda.memory_stats()`` dict.

    Args:
        stats: The flat statistics dict (captured or live).
        model: If given, parameter and gradient bytes are measured from it.
        threshold: Fragmentation above this is flagged.
        non_pytorch_bytes: Device memory outside PyTorch's allocator, when known.

    Raises:
        ValueError: ``stats`` is empty (the allocator has no statistics to report).
    """
    if not stats:
        raise ValueError("no allocator statistics: memory_stats() is empty (nothing allocated "
                         "on this device yet?)")
    reserved = _stat(stats, "reserved_bytes.all.current")
    peak_reserved = _stat(stats, "reserved_bytes.all.peak")
    peak_allocated = _stat(stats, "allocated_bytes.all.peak")
    inactive = _stat(stats, "inactive_split_bytes.all.current")
    report = MemoryReport(
        allocated_bytes=_stat(stats, "allocated_bytes.all.current"),
        peak_allocated_bytes=peak_allocated,
        reserved_bytes=reserved,
        peak_reserved_bytes=peak_reserved,
        inactive_split_bytes=inactive,
        fragmentation=inactive / reserved if reserved else 0.0,
        peak_fragmentation=1 - peak_allocated / peak_reserved if peak_reserved else None,
        num_alloc_retries=_stat(stats, "num_alloc_retries"),
        num_ooms=_stat(stats, "num_ooms"),
        threshold=threshold,
        param_bytes=param_bytes(model) if model is not None else None,
        grad_bytes=grad_bytes(model) if model is not None else None,
        non_pytorch_bytes=non_pytorch_bytes,
    )
    return _with_warnings(report)


def _with_warnings(report: MemoryReport) -> MemoryReport:
    return replace(report, warnings=memory_warnings(report))


def cuda_unavailable_reason() -> str | None:
    """None when torch can use a CUDA device, else why not."""
    if not torch.cuda.is_available():
        return f"CUDA is not available to torch {torch.__version__} (no GPU or a CPU build)"
    return None


def live_memory_report(device: torch.device | int | None = None, *,
                       model: nn.Module | None = None,
                       threshold: float = FRAGMENTATION_THRESHOLD) -> MemoryReport:
    """The report for a CUDA device now, including memory held outside PyTorch.

    Raises:
        SpmlError: CUDA is not available.
    """
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise SpmlError(reason)
    stats = torch.cuda.memory_stats(device)
    free, total = torch.cuda.mem_get_info(device)
    outside = total - free - _stat(stats, "reserved_bytes.all.current")
    return analyze_memory(stats, model=model, threshold=threshold,
                          non_pytorch_bytes=max(outside, 0))


def measure_step_memory(step_fn: Callable[[], Any], *, model: nn.Module | None = None,
                        device: torch.device | int | None = None,
                        threshold: float = FRAGMENTATION_THRESHOLD) -> MemoryReport:
    """Run one training step and report memory, with the peak counted for that step alone.

    ``num_alloc_retries`` and ``num_ooms`` stay cumulative over the process (resetting the peak
    does not clear them).

    Args:
        step_fn: Runs one step (forward, backward, optimizer) on the CUDA device.
        model: Measured for parameter and gradient bytes after the step.
        device: The CUDA device (default: current).
        threshold: Fragmentation above this is flagged.

    Raises:
        SpmlError: CUDA is not available.
    """
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise SpmlError(reason)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)  # the peak of this step, not of the process
    step_fn()
    torch.cuda.synchronize(device)
    return live_memory_report(device, model=model, threshold=threshold)
