"""Profiling toolkit: FLOPs, MFU, tensor-core activity, gaps, memory, layers."""

from spml.toolkit.profiling.flops import (
    StepFlops,
    count_params,
    count_step_flops,
    flops_per_step,
    transformer_flops_per_token,
)
from spml.toolkit.profiling.gpuinfo import GpuDetection, GpuInfo, detect_gpu
from spml.toolkit.profiling.mfu import (
    MfuResult,
    SteadyStart,
    SteadyState,
    find_steady_start,
    format_mfu_report,
    median_step_time,
    mfu,
    mfu_for_gpu,
    mfu_result,
)
from spml.toolkit.profiling.peaks import (
    Hardware,
    PeakFlops,
    PeakLookup,
    estimate_peak,
    lookup_peak,
    resolve_peak,
)

__all__ = [
    "GpuDetection",
    "GpuInfo",
    "Hardware",
    "MfuResult",
    "PeakFlops",
    "PeakLookup",
    "StepFlops",
    "SteadyStart",
    "SteadyState",
    "count_params",
    "count_step_flops",
    "detect_gpu",
    "estimate_peak",
    "find_steady_start",
    "flops_per_step",
    "format_mfu_report",
    "lookup_peak",
    "median_step_time",
    "mfu",
    "mfu_for_gpu",
    "mfu_result",
    "resolve_peak",
    "transformer_flops_per_token",
]
