"""FLOPs: FlopCounterMode on real (small) modules against the analytic PaLM count."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spml.errors import SpmlError
from spml.toolkit.profiling.flops import (
    count_params,
    count_step_flops,
    flops_per_step,
    transformer_flops_per_token,
)

VOCAB, D_MODEL, N_HEAD, N_LAYER, SEQ, BATCH = 64, 32, 4, 2, 16, 3


class Block(nn.Module):
    """A pre-norm GPT block; attention either explicit (q @ k^T) or through SDPA."""

    def __init__(self, sdpa: bool) -> None:
        super().__init__()
        self.sdpa = sdpa
        self.ln1, self.ln2 = nn.LayerNorm(D_MODEL), nn.LayerNorm(D_MODEL)
        self.qkv = nn.Linear(D_MODEL, 3 * D_MODEL, bias=False)
        self.proj = nn.Linear(D_MODEL, D_MODEL, bias=False)
        self.fc = nn.Linear(D_MODEL, 4 * D_MODEL, bias=False)
        self.out = nn.Linear(4 * D_MODEL, D_MODEL, bias=False)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(D_MODEL, dim=2)
        q, k, v = (z.view(b, t, N_HEAD, -1).transpose(1, 2) for z in (q, k, v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
            mask = torch.ones(t, t, dtype=torch.bool).tril()
            y = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, D_MODEL))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attend(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, sdpa: bool = False) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, D_MODEL)
        self.wpe = nn.Embedding(SEQ, D_MODEL)
        self.blocks = nn.ModuleList(Block(sdpa) for _ in range(N_LAYER))
        self.head = nn.Linear(D_MODEL, VOCAB, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor,
               targets: torch.Tensor) -> None:
    logits = model(batch)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator)
    return batch, torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator)


def palm_flops(model: nn.Module, attention_factor: int = 12) -> float:
    n = count_params(model)
    per_token = 6 * n + attention_factor * N_LAYER * N_HEAD * (D_MODEL // N_HEAD) * SEQ
    return per_token * BATCH * SEQ


def test_counted_step_matches_the_palm_formula_for_explicit_attention() -> None:
    torch.manual_seed(0)
    model = TinyGPT()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch, targets = make_batch()
    counted = count_step_flops(train_step, model, optimizer, batch, targets)
    n = count_params(model)
    expected = flops_per_step(
        transformer_flops_per_token(n, N_LAYER, N_HEAD, D_MODEL // N_HEAD, SEQ), BATCH * SEQ)
    # N includes the LayerNorm weights, which do no matmul: the only (0.9 %) difference.
    assert counted.flops == pytest.approx(expected, rel=0.01)
    assert int(counted) == counted.flops
    assert counted.by_operator  # e.g. {"aten.mm": ..., "aten.bmm": ...}
    assert sum(counted.by_operator.values()) == counted.flops


def test_cpu_sdpa_is_counted_not_zero() -> None:
    # torch leaves the CPU flash kernel unregistered (0 FLOPs); flops.py maps the SDPA formula
    # onto it, so the count is 6N + 14·L·H·Q·T per token, as on GPUs (notes §1.5).
    torch.manual_seed(0)
    model = TinyGPT(sdpa=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    batch, targets = make_batch()
    counted = count_step_flops(train_step, model, optimizer, batch, targets)
    assert counted.flops == pytest.approx(palm_flops(model, attention_factor=14), rel=0.01)


def test_a_linear_layer_counts_six_flops_per_weight_and_sample() -> None:
    layer = nn.Linear(128, 64, bias=False)
    x = torch.randn(8, 128, requires_grad=True)  # an input that needs its gradient, like a
    counted = count_step_flops(lambda inp: layer(inp).sum().backward(), x)  # hidden layer's
    assert counted.flops == 6 * 128 * 64 * 8
    assert counted.input_shapes == ((8, 128),)


def test_the_real_batch_shape_is_recorded_and_checked() -> None:
    model = TinyGPT()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    batch, targets = make_batch()
    counted = count_step_flops(train_step, model, optimizer, batch, targets)
    # Module parameters are not arguments' tensors; only the batch tensors are recorded.
    assert counted.input_shapes == ((BATCH, SEQ), (BATCH, SEQ))
    assert counted.matches(model, optimizer, batch, targets)
    assert not counted.matches(model, optimizer, batch[:1], targets[:1])
    nested = count_step_flops(lambda b: None, {"ids": batch, "mask": [targets]})
    assert nested.input_shapes == ((BATCH, SEQ), (BATCH, SEQ))


def test_no_tensor_argument_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    layer = nn.Linear(4, 4)
    with caplog.at_level(logging.WARNING, logger="spml.toolkit.profiling.flops"):
        counted = count_step_flops(lambda: layer(torch.randn(2, 4)).sum().backward())
    assert counted.input_shapes == ()
    assert counted.flops > 0
    assert "batch shape" in caplog.text


def test_count_params_drops_untied_embeddings_only() -> None:
    model = TinyGPT()
    total = sum(p.numel() for p in model.parameters())
    assert count_params(model, exclude_embeddings=False) == total
    embeddings = model.wte.weight.numel() + model.wpe.weight.numel()
    assert count_params(model) == total - embeddings
    model.head.weight = model.wte.weight  # tied LM head: its matmul counts (nanoGPT)
    tied_total = sum(p.numel() for p in model.parameters())
    assert count_params(model) == tied_total - model.wpe.weight.numel()


def test_transformer_formula_and_the_causal_convention() -> None:
    # nanoGPT 124M-like: N = 85M, L = 12, H = 12, Q = 64, T = 1024.
    full = transformer_flops_per_token(85_000_000, 12, 12, 64, 1024)
    assert full == 6 * 85_000_000 + 12 * 12 * 12 * 64 * 1024
    causal = transformer_flops_per_token(85_000_000, 12, 12, 64, 1024, causal=True)
    assert full - causal == 6 * 12 * 12 * 64 * 1024
    assert flops_per_step(full, 8 * 1024) == full * 8 * 1024


def test_formula_inputs_are_checked() -> None:
    with pytest.raises(SpmlError, match="seq_len must be > 0"):
        transformer_flops_per_token(1, 1, 1, 1, 0)
    with pytest.raises(SpmlError, match="must be > 0"):
        flops_per_step(10.0, 0)
