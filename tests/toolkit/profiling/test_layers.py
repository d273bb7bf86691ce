"""Layer profiler on CPU, small real model: forward and backward time, depth, hook cleanup."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from spml.toolkit.profiling.layers import (
    LayerProfile,
    LayerTime,
    modules_at_depth,
    profile_layers,
)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(256, 512)
        self.act = nn.GELU()
        self.inner = nn.Sequential(nn.Linear(512, 256), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.act(self.fc1(x)))


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(512, 256), nn.ReLU(), Block(), nn.Linear(256, 8))


def train_step(model: nn.Module, batch: int = 512, features: int = 512) -> Callable[[], None]:
    x = torch.randn(batch, features)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    return step


def hook_count(model: nn.Module) -> int:
    count = 0
    for module in model.modules():
        count += len(module._forward_hooks) + len(module._forward_pre_hooks)
        count += len(module._backward_hooks) + len(module._backward_pre_hooks)
    for param in model.parameters():
        count += len(getattr(param, "_post_accumulate_grad_hooks", None) or {})
    return count


def by_name(profile: LayerProfile) -> dict[str, LayerTime]:
    return {layer.name: layer for layer in profile.layers}


def test_depth_means_exactly_that_level() -> None:
    model = make_model()
    assert [n for n, _ in modules_at_depth(model, 1)] == ["0", "1", "2", "3"]
    assert [n for n, _ in modules_at_depth(model, 2)] == ["2.fc1", "2.act", "2.inner"]
    assert [n for n, _ in modules_at_depth(model, 3)] == ["2.inner.0", "2.inner.1"]
    assert modules_at_depth(model, 4) == []
    with pytest.raises(ValueError, match="depth must be >= 1"):
        modules_at_depth(model, 0)


def test_forward_and_backward_time_per_layer_on_cpu() -> None:
    model = make_model()
    profile = profile_layers(model, train_step(model), depth=1, iterations=3, warmup=1)
    assert profile.device == "cpu"
    assert profile.depth == 1
    assert profile.notes == ()
    layers = by_name(profile)
    assert set(layers) == {"0", "1", "2", "3"}
    for name in ("0", "2", "3"):  # layers with parameters do backward work
        layer = layers[name]
        assert layer.forward_ms > 0, name
        assert layer.backward_ms > 0, name
        assert layer.calls == 1
    totals = [layer.total_ms for layer in profile.layers]
    assert totals == sorted(totals, reverse=True)
    assert 0 < profile.attributed_share <= 1.05
    assert profile.step_ms > 0


def test_first_layer_backward_includes_its_weight_gradients() -> None:
    # Its input needs no grad, so its full backward hook fires before the weight gradient is
    # computed; without the accumulate-grad end mark its backward would read ~0 (a few
    # microseconds). Its weight gradient is a matmul the size of its forward: on a shared
    # machine one slow forward made it read 0.3x (CI), so the bound is 0.1x over 7 iterations.
    model = make_model()
    profile = profile_layers(model, train_step(model), depth=1, iterations=7, warmup=2)
    first = by_name(profile)["0"]
    assert first.backward_ms > 0.1 * first.forward_ms


def test_depth_two_profiles_only_depth_two_modules() -> None:
    model = make_model()
    profile = profile_layers(model, train_step(model), depth=2, iterations=2, warmup=0)
    assert {layer.name for layer in profile.layers} == {"2.fc1", "2.act", "2.inner"}
    assert by_name(profile)["2.fc1"].backward_ms > 0


def test_hooks_are_removed_afterwards_even_on_error() -> None:
    model = make_model()
    before = hook_count(model)
    profile_layers(model, train_step(model), depth=2, iterations=1, warmup=0)
    assert hook_count(model) == before == 0

    def failing_step() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        profile_layers(model, failing_step, depth=1)
    assert hook_count(model) == 0


def test_reused_module_counts_every_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Linear(64, 64)
            self.head = nn.Linear(64, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.shared(self.shared(x)))

    model = Twice()
    profile = profile_layers(model, train_step(model, batch=32, features=64), iterations=2)
    shared = by_name(profile)["shared"]
    assert shared.calls == 2
    assert shared.backward_ms > 0


def test_inplace_op_falls_back_to_forward_only_and_says_so() -> None:
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(inplace=True), nn.Linear(16, 1))
    profile = profile_layers(model, train_step(model, batch=8, features=16), iterations=2)
    assert profile.notes
    assert "backward not measured" in profile.notes[0]
    assert all(layer.backward_ms is None for layer in profile.layers)
    assert by_name(profile)["0"].forward_ms > 0
    assert hook_count(model) == 0


def test_bad_arguments() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="no modules at depth 5"):
        profile_layers(model, train_step(model), depth=5)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        profile_layers(model, train_step(model), iterations=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_events_time_forward_and_backward() -> None:
    model = make_model().cuda()
    x = torch.randn(4096, 512, device="cuda")

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    profile = profile_layers(model, step, depth=1, iterations=5, warmup=2)
    assert profile.device == "cuda"
    layers = by_name(profile)
    for name in ("0", "2", "3"):
        assert layers[name].forward_ms > 0, name
        assert layers[name].backward_ms > 0, name
    assert layers["0"].backward_ms > 0.3 * layers["0"].forward_ms
    assert 0 < profile.attributed_share <= 1.05
    assert hook_count(model) == 0
