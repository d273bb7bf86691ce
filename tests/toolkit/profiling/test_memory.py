"""Memory report from captured ``torch.cuda.memory_stats()`` dicts; grad bytes measured on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spml.errors import SpmlError
from spml.toolkit.profiling import memory
from spml.toolkit.profiling.memory import (
    FRAGMENTATION_THRESHOLD,
    analyze_memory,
    grad_bytes,
    param_bytes,
)

MIB = 1024**2


def captured_stats(*, allocated: int, reserved: int, inactive_split: int, peak_allocated: int,
                   peak_reserved: int, retries: int = 0, ooms: int = 0) -> dict[str, int]:
    """A flat memory_stats() dict with the key names torch uses (subset of its 122 keys)."""
    stats: dict[str, int] = {}
    for pool in ("all", "large_pool", "small_pool"):
        share = 1.0 if pool == "all" else (0.9 if pool == "large_pool" else 0.1)
        for family, current, peak in (("allocated_bytes", allocated, peak_allocated),
                                      ("reserved_bytes", reserved, peak_reserved),
                                      ("inactive_split_bytes", inactive_split, inactive_split),
                                      ("active_bytes", allocated, peak_allocated)):
            stats[f"{family}.{pool}.current"] = int(current * share)
            stats[f"{family}.{pool}.peak"] = int(peak * share)
    stats.update(num_alloc_retries=retries, num_ooms=ooms, num_sync_all_streams=0,
                 max_split_size=-1)
    return stats


def test_probe_numbers_give_low_fragmentation_not_the_naive_79_percent() -> None:
    # notes §3.2 probe: 3.71 GB reserved, 0.79 GB allocated between steps, inactive split 0.078
    stats = captured_stats(allocated=790 * MIB, reserved=3710 * MIB, inactive_split=289 * MIB,
                           peak_allocated=3400 * MIB, peak_reserved=3710 * MIB)
    report = analyze_memory(stats)
    assert report.fragmentation == pytest.approx(289 / 3710)
    assert not report.fragmentation_high
    assert report.warnings == ()
    assert report.allocated_bytes == 790 * MIB
    assert report.reserved_bytes == 3710 * MIB
    assert report.peak_allocated_bytes == 3400 * MIB
    assert report.peak_fragmentation == pytest.approx(1 - 3400 / 3710)
    assert report.param_bytes is None
    assert report.grad_bytes is None


def test_high_fragmentation_retries_and_ooms_are_flagged() -> None:
    stats = captured_stats(allocated=1000 * MIB, reserved=2000 * MIB, inactive_split=500 * MIB,
                           peak_allocated=1900 * MIB, peak_reserved=2000 * MIB, retries=3,
                           ooms=1)
    report = analyze_memory(stats)
    assert report.fragmentation == pytest.approx(0.25)
    assert report.fragmentation_high
    assert report.num_alloc_retries == 3
    assert report.num_ooms == 1
    assert len(report.warnings) == 3
    assert "expandable_segments:True" in report.warnings[0]
    assert "3 allocation retries" in report.warnings[1]
    assert "out-of-memory" in report.warnings[2]


def test_threshold_is_spmls_twenty_percent_and_can_be_changed() -> None:
    assert FRAGMENTATION_THRESHOLD == 0.20
    stats = captured_stats(allocated=0, reserved=100 * MIB, inactive_split=15 * MIB,
                           peak_allocated=80 * MIB, peak_reserved=100 * MIB)
    assert not analyze_memory(stats).fragmentation_high
    assert analyze_memory(stats, threshold=0.10).fragmentation_high


def test_nothing_reserved_means_zero_fragmentation() -> None:
    stats = captured_stats(allocated=0, reserved=0, inactive_split=0, peak_allocated=0,
                           peak_reserved=0)
    report = analyze_memory(stats)
    assert report.fragmentation == 0.0
    assert report.peak_fragmentation is None


def test_empty_stats_are_an_error_not_zeros() -> None:
    with pytest.raises(ValueError, match="no allocator statistics"):
        analyze_memory({})


def make_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    model[0].requires_grad_(False)  # frozen: no grad is ever created for it
    return model


def test_grad_bytes_are_measured_from_existing_grads() -> None:
    model = make_model()
    assert grad_bytes(model) == 0  # no backward yet: nothing to count (an estimate would not be 0)
    model(torch.randn(2, 8)).sum().backward()
    trainable = (16 * 4 + 4) * 4  # fp32 bytes of the second Linear only
    assert grad_bytes(model) == trainable
    assert param_bytes(model) == ((8 * 16 + 16) + (16 * 4 + 4)) * 4


def test_grad_bytes_follow_the_grad_dtype() -> None:
    model = nn.Linear(4, 4, bias=False)
    if hasattr(model.weight, "grad_dtype"):  # torch >= 2.10 checks grad dtypes unless told not to
        model.weight.grad_dtype = None
    model.weight.grad = torch.zeros(4, 4, dtype=torch.bfloat16)
    assert grad_bytes(model) == 16 * 2


def test_model_bytes_are_included_in_the_report() -> None:
    model = make_model()
    model(torch.randn(2, 8)).sum().backward()
    stats = captured_stats(allocated=1, reserved=2, inactive_split=0, peak_allocated=1,
                           peak_reserved=2)
    report = analyze_memory(stats, model=model)
    assert report.grad_bytes == grad_bytes(model)
    assert report.param_bytes == param_bytes(model)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_live_paths_refuse_without_cuda() -> None:
    assert "CUDA is not available" in (memory.cuda_unavailable_reason() or "")
    with pytest.raises(SpmlError, match="CUDA is not available"):
        memory.live_memory_report()
    with pytest.raises(SpmlError, match="CUDA is not available"):
        memory.measure_step_memory(lambda: None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_live_step_memory_on_cuda() -> None:
    model = make_model().cuda()
    x = torch.randn(1024, 8, device="cuda")
    report = memory.measure_step_memory(lambda: model(x).sum().backward(), model=model)
    assert report.peak_allocated_bytes >= report.allocated_bytes > 0
    assert report.reserved_bytes >= report.allocated_bytes
    assert 0.0 <= report.fragmentation <= 1.0
    assert report.grad_bytes == (16 * 4 + 4) * 4
    assert report.non_pytorch_bytes is not None
    assert report.non_pytorch_bytes > 0  # at least the CUDA context
