"""L0-16: the architecture's training memory estimate exceeds the target GPU's memory."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from spml.toolkit.checks._architecture import (
    Architecture,
    architecture,
    human,
    int_value,
    is_transformer,
)
from spml.toolkit.checks._base import Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.patterns import Facts

GB = 1e9
# Bytes per parameter while training: weights + gradients + optimizer state. Mixed
# precision with AdamW keeps bf16/fp16 weights and grads, an fp32 master copy and two fp32
# moments (2 + 2 + 4 + 4 + 4); fp32 training with Adam is the same 4 x 4.
ADAM_BYTES, MOMENTUM_BYTES, PLAIN_BYTES = 16, 12, 8
# Activation bytes per token, per layer, per unit of width (Korthikanti et al. 2022, with
# fused attention so the a·s/h score term is absent).
ACTIVATION_BYTES = 34
# Sharding or adapters divide the per-GPU memory by an amount the code does not show.
SHARDING = ("FullyShardedDataParallel", "fully_shard", "deepspeed.initialize",
            "ZeroRedundancyOptimizer", "get_peft_model", "LoraConfig", "prepare_model_for_kbit")
CHECKPOINTING = ("torch.utils.checkpoint", "gradient_checkpointing_enable",
                 "checkpoint_sequential")


@dataclass(frozen=True)
class Estimate:
    """Training memory in bytes, with the parts and the assumptions behind them."""

    params: int
    bytes_per_param: int
    optimizer: str
    activations: float | None
    activation_note: str

    @property
    def states(self) -> float:
        return float(self.params * self.bytes_per_param)

    @property
    def total(self) -> float:
        return self.states + (self.activations or 0.0)

    def text(self, target_gb: float) -> str:
        states = f"{human(self.params)} params × {self.bytes_per_param} B ({self.optimizer}) " \
                 f"= {_gb(self.states)}"
        acts = (f"activations {_gb(self.activations)} ({self.activation_note})"
                if self.activations is not None else self.activation_note)
        return f"≈ {_gb(self.total)}: {states} + {acts}; target {target_gb:g} GB"


class MemoryEstimate(Check):
    """Checks that the model's estimated training memory fits the target GPU.

    ## What it does
    Reads the model's size from the code (layers, width, context, vocabulary and micro-batch
    size: module constants, ``argparse`` defaults, config-class fields, config calls),
    estimates the parameter count N ≈ 12·L·d² + V·d and the training memory as
    N × bytes per parameter (16 with Adam/AdamW: weights, gradients, an fp32 master copy and
    two moments; 12 with SGD + momentum; 8 with plain SGD) plus activations
    ≈ 34·T·d·L·B bytes (Korthikanti et al.; skipped when no batch size is found or
    activation checkpointing is used). The estimate is printed with the check's result; it is
    a finding when it exceeds ``target-gpu-memory-gb`` (default 80). Projects that shard the
    model (FSDP, ZeRO, DeepSpeed) or train adapters (PEFT/LoRA) get the estimate but no
    finding, since their per-GPU share depends on settings the code does not fix.

    ## Why is this bad?
    A configuration that cannot fit runs out of memory at the first step, or only after the
    first evaluation or a longer batch, wasting the queue time and the setup. An estimate
    before launching tells whether to shrink the micro-batch, checkpoint activations, shard
    the optimizer state or ask for a larger GPU.

    ## Example
    ```python
    n_layer, n_embd, block_size, vocab_size = 48, 6144, 2048, 50304  # ~22B parameters
    batch_size = 8
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)  # ~350 GB of state
    ```

    ## Use instead
    ```python
    n_layer, n_embd, block_size, vocab_size = 24, 2048, 2048, 50304  # ~1.3B parameters
    batch_size = 8
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    ```

    ## References
    - https://arxiv.org/abs/2205.05198 (Korthikanti et al., activation memory)
    - https://arxiv.org/abs/1910.02054 (ZeRO, memory of mixed-precision Adam)
    - https://pytorch.org/docs/stable/torch_cuda_memory.html
    """

    id = "L0-16"
    name = "memory-estimate"
    severity = "warning"
    message = "estimated training memory exceeds the target GPU's memory"
    fix = "Shrink the micro-batch, checkpoint activations, shard (FSDP/ZeRO) or use a larger GPU"
    condition = "always (a model config is found)"
    runtime_note = "L1 measures peak memory"

    def applicability(self, facts: Facts) -> Applicability:
        arch = architecture(facts)
        if not arch.complete or not is_transformer(facts):
            return not_applicable("no model config found (layers and width)")
        text = estimate(facts, arch).text(facts.config.target_gpu_memory_gb)
        return Applicability(True, reason=f"{text}; {self.runtime_note}")

    def run(self, facts: Facts) -> Iterator[Finding]:
        arch = architecture(facts)
        found = estimate(facts, arch)
        target = facts.config.target_gpu_memory_gb
        if found.total <= target * GB or _sharded(facts):
            return
        setting = arch.anchor()
        yield self.finding(setting.source, setting.node, (
            f"training memory estimate ≈ {_gb(found.total)} exceeds the {target:g} GB GPU "
            f"({_gb(found.states)} weights+grads+optimizer)"))


def _gb(size: float) -> str:
    """``517 GB``, ``5.83 GB``, ``0.151 GB``: no exponent notation for big models."""
    value = size / GB
    return f"{value:.0f} GB" if value >= 100 else f"{value:.3g} GB"


def estimate(facts: Facts, arch: Architecture) -> Estimate:
    per_param, optimizer = _bytes_per_param(facts)
    batch = arch.get("batch_size")
    if _checkpointing(facts):
        activations, note = None, "activations not counted: activation checkpointing"
    elif batch is None or arch.get("seq_len") is None:
        activations, note = None, "activations not counted: no batch size or context length"
    else:
        activations = float(ACTIVATION_BYTES * arch.get("seq_len") * arch.get("d_model")
                            * arch.get("n_layer") * batch)
        note = f"34·T·d·L·B, B={batch}"
    return Estimate(arch.params(), per_param, optimizer, activations, note)


def _bytes_per_param(facts: Facts) -> tuple[int, str]:
    """The largest per-parameter footprint of the project's optimizers (AdamW if none)."""
    found: list[tuple[int, str]] = []
    for source, call in facts.optimizer_constructions:
        name = (facts.project.call_name(source, call) or "").rsplit(".", 1)[-1]
        lowered = name.lower()
        if "sgd" in lowered:
            momentum = next((k.value for k in call.keywords if k.arg == "momentum"), None)
            plain = momentum is None or int_value(facts, source, momentum) == 0
            found.append((PLAIN_BYTES if plain else MOMENTUM_BYTES, name))
        elif "lion" in lowered:
            found.append((MOMENTUM_BYTES, name))  # one moment
        else:
            found.append((ADAM_BYTES, name))
    return max(found, default=(ADAM_BYTES, "optimizer not found: AdamW assumed"))


def _called(facts: Facts, needles: tuple[str, ...]) -> bool:
    for source, call in facts.project.calls:
        name = facts.project.call_name(source, call) or ""
        attr = call.func.attr if isinstance(call.func, ast.Attribute) else ""
        if any(n in name or n == attr for n in needles):
            return True
    return False


def _checkpointing(facts: Facts) -> bool:
    return _called(facts, CHECKPOINTING)


def _sharded(facts: Facts) -> bool:
    return _called(facts, SHARDING)
