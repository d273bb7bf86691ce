"""L0 static checks: the registry (an explicit tuple; nothing registers itself on import).

IDs follow SPML's numbering (L0-01 .. L0-25, same meaning); checks spml adds beyond SPML get
L0-26 onward. An ID is never renumbered or reused: a retired check's ID goes to ``RETIRED``.
"""

from __future__ import annotations

from spml.errors import SpmlError
from spml.toolkit.checks._base import Check, Finding
from spml.toolkit.checks.accumulation_batch import AccumulationBatchMismatch
from spml.toolkit.checks.accumulation_loss import AccumulationLossUnscaled
from spml.toolkit.checks.attention_sdpa import AttentionWithoutSdpa
from spml.toolkit.checks.checkpoint_interval import CheckpointIntervalFixed
from spml.toolkit.checks.console_metrics import ConsoleWithoutMetrics
from spml.toolkit.checks.data_mmap import LargeDataWithoutMmap
from spml.toolkit.checks.data_time import DataTimeNotRecorded
from spml.toolkit.checks.dataloader_workers import DataLoaderWorkers
from spml.toolkit.checks.device_mismatch import DeviceMismatch
from spml.toolkit.checks.eval_mode import EvalWithoutEvalMode
from spml.toolkit.checks.eval_no_grad import EvalWithGrad
from spml.toolkit.checks.flops_estimate import FlopsEstimate
from spml.toolkit.checks.frozen_layers import FrozenLayers
from spml.toolkit.checks.fused_adam import UnfusedAdamOnCuda
from spml.toolkit.checks.gpu_assumptions import HardcodedGpuAssumptions
from spml.toolkit.checks.host_sync import HostSyncInStep
from spml.toolkit.checks.logging_cadence import LoggingEveryStep
from spml.toolkit.checks.loss_logging import LossNotWritten
from spml.toolkit.checks.memory_estimate import MemoryEstimate
from spml.toolkit.checks.mixed_precision import MixedPrecisionMisuse
from spml.toolkit.checks.moe import MoeWithoutBalancing
from spml.toolkit.checks.optimizer_coverage import OptimizerMissesParameters
from spml.toolkit.checks.padding_waste import PaddingWaste
from spml.toolkit.checks.scheduler_binding import SchedulerWrongOptimizer
from spml.toolkit.checks.seeds import MissingSeeds
from spml.toolkit.checks.slow_fallbacks import SlowFallback
from spml.toolkit.checks.step_order import StepBeforeBackward
from spml.toolkit.checks.step_time_logging import StepTimeNotWritten
from spml.toolkit.checks.torch_load import UnsafeTorchLoad
from spml.toolkit.checks.unparsable import UnparsableFile
from spml.toolkit.checks.visualisation import VisualisationNotWired
from spml.toolkit.checks.vocab_embedding import VocabEmbeddingMismatch
from spml.toolkit.checks.zero_grad import ZeroGradMisplaced

CHECKS: tuple[type[Check], ...] = (
    UnparsableFile,
    DeviceMismatch,
    MixedPrecisionMisuse,
    AttentionWithoutSdpa,
    OptimizerMissesParameters,
    SchedulerWrongOptimizer,
    DataLoaderWorkers,
    LargeDataWithoutMmap,
    PaddingWaste,
    MissingSeeds,
    AccumulationBatchMismatch,
    AccumulationLossUnscaled,
    VocabEmbeddingMismatch,
    FrozenLayers,
    FlopsEstimate,
    HardcodedGpuAssumptions,
    MemoryEstimate,
    MoeWithoutBalancing,
    SlowFallback,
    LossNotWritten,
    StepTimeNotWritten,
    DataTimeNotRecorded,
    LoggingEveryStep,
    ConsoleWithoutMetrics,
    VisualisationNotWired,
    CheckpointIntervalFixed,
    HostSyncInStep,
    ZeroGradMisplaced,
    EvalWithoutEvalMode,
    EvalWithGrad,
    UnsafeTorchLoad,
    UnfusedAdamOnCuda,
    StepBeforeBackward,
)
RETIRED: tuple[str, ...] = ()


class UnknownCheck(SpmlError, ValueError):
    """An id on the command line or in the config names no check."""


def check_by_id(check_id: str) -> type[Check]:
    wanted = check_id.strip().upper()
    for check in CHECKS:
        if check.id == wanted:
            return check
    known = ", ".join(c.id for c in CHECKS)
    raise UnknownCheck(f"unknown check id {check_id!r}; known ids: {known}")


__all__ = ["CHECKS", "RETIRED", "Check", "Finding", "UnknownCheck", "check_by_id"]
