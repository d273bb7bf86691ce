"""FLOPs per training step: counted on the real batch, or from the PaLM transformer formula.

Two numerators for MFU (toolkit-and-watchdog-notes §1.2, §1.5):

* `count_step_flops` runs ONE real step under ``torch.utils.flop_counter.FlopCounterMode``:
  the aten-level shape formulas count matmuls, convolutions and attention (a MAC = 2 FLOPs)
  in forward and backward; elementwise ops, norms, softmax, embedding lookups and the
  optimizer update count 0, which matches "model FLOPs". The legacy toolkit counted a mock
  input, so its FLOPs silently depended on the mock matching the real batch
  (spml-reference §11.8); here the caller passes the real batch and the result records its
  tensor shapes, so a later batch of another shape can be detected with `StepFlops.matches`.
* `transformer_flops_per_token` is the PaLM formula (Chowdhery et al. 2022, App. B; nanoGPT
  ``estimate_mfu``): ``6·N + 12·L·H·Q·T`` per token, N = non-embedding parameters.

Attention conventions differ (notes §1.4): the PaLM 12 does not halve for a causal mask, and
neither does FlopCounterMode ("We aren't accounting for causal attention here"). For SDPA the
counter's backward is 2.5x its forward (it includes the recompute of QK^T), so a counted SDPA
model comes out at ``6·N + 14·L·H·Q·T`` per token; explicit ``q @ k.T`` attention gives exactly
12. On CPU, SDPA dispatches to ``_scaled_dot_product_flash_attention_for_cpu``, which torch
does not register (pytorch#195460) and would count as 0: the same formulas are mapped onto it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spml.errors import SpmlError

if TYPE_CHECKING:  # torch is imported lazily: `spml toolkit mfu` must not pay seconds for it
    from torch import nn

log = logging.getLogger(__name__)

PALM_ATTENTION_FACTOR = 12  # 2 matmuls (QK^T, AV) x 2 FLOPs/MAC x 3 (fwd + 2x bwd)
_MAX_DEPTH = 4  # how deep `_tensor_shapes` looks into nested args (batch dicts, tuples)


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one counted step and the batch they were counted on.

    Attributes:
        flops: Total FLOPs (forward + backward, whatever the step function ran).
        input_shapes: Shapes of every tensor passed to the step function, in argument order.
        by_operator: FLOPs per aten operator (``"aten.mm"``: n), for the report.
    """

    flops: int
    input_shapes: tuple[tuple[int, ...], ...]
    by_operator: dict[str, int] = field(default_factory=dict)

    def __int__(self) -> int:
        return self.flops

    def matches(self, *args: Any, **kwargs: Any) -> bool:
        """Whether a batch has the tensor shapes this count was made on."""
        return _tensor_shapes((args, kwargs)) == self.input_shapes


def count_step_flops(step_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> StepFlops:
    """Count the FLOPs of one call ``step_fn(*args, **kwargs)`` on the real batch.

    The call really runs: gradients accumulate and an optimizer step inside ``step_fn``
    happens, exactly as in training, so count the first real step rather than an extra one.
    Count on the eager model: FlopCounterMode does not see into a ``torch.compile``d module
    (pytorch#128199), nor into custom kernels unless registered with
    ``torch.utils.flop_counter.register_flop_formula``.

    Args:
        step_fn: Runs forward and backward (and optionally the optimizer step).
        *args: The real batch (and anything else ``step_fn`` takes); its tensor shapes are kept.
        **kwargs: Passed through to ``step_fn``; tensors among them are recorded too.
    """
    from torch.utils.flop_counter import FlopCounterMode

    shapes = _tensor_shapes((args, kwargs))
    if not shapes:
        log.warning("count_step_flops: no tensor among the arguments, so the batch shape the "
                    "FLOPs belong to is not recorded; pass the real batch as an argument")
    with FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_formulas()) as counter:
        step_fn(*args, **kwargs)
    totals = counter.get_flop_counts().get("Global", {})
    by_operator = {str(op): int(n) for op, n in totals.items()}
    return StepFlops(int(counter.get_total_flops()), shapes, by_operator)


def _cpu_sdpa_formulas() -> dict[Any, Callable[..., int]]:
    """The SDPA shape formulas, mapped onto the CPU flash kernel torch leaves unregistered."""
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    def forward(query: Any, key: Any, value: Any, *_: Any, **__: Any) -> int:
        return int(sdpa_flop_count(query, key, value))

    def backward(grad_out: Any, query: Any, key: Any, value: Any, *_: Any, **__: Any) -> int:
        return int(sdpa_backward_flop_count(grad_out, query, key, value))

    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):
        if hasattr(aten, name):  # absent in some torch builds
            mapping[getattr(aten, name)] = formula
    return mapping


def _tensor_shapes(value: Any, depth: int = 0) -> tuple[tuple[int, ...], ...]:
    """Shapes of the tensors in nested tuples/lists/dicts, in order."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return (tuple(int(d) for d in value.shape),)
    if depth >= _MAX_DEPTH:
        return ()
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return tuple(s for item in value for s in _tensor_shapes(item, depth + 1))
    return ()


def transformer_flops_per_token(n_params: int, n_layer: int, n_head: int, head_dim: int,
                                seq_len: int, *, causal: bool = False) -> float:
    """PaLM training FLOPs per token: ``6·N + 12·L·H·Q·T`` (forward + backward).

    Args:
        n_params: N, the non-embedding parameters (see `count_params`).
        n_layer: L, transformer blocks.
        n_head: H, attention heads (query heads; the formula assumes MHA).
        head_dim: Q, so that H·Q is d_model.
        seq_len: T, the attention context length of the batch.
        causal: Halve the attention term (Megatron's newer convention, notes §1.4); the default
            keeps the PaLM factor 12 so results compare with published MFU figures.
    """
    for label, value in (("n_params", n_params), ("n_layer", n_layer), ("n_head", n_head),
                         ("head_dim", head_dim), ("seq_len", seq_len)):
        if value <= 0:
            raise SpmlError(f"{label} must be > 0, got {value!r} (transformer_flops_per_token).")
    attention = PALM_ATTENTION_FACTOR * n_layer * n_head * head_dim * seq_len
    return 6 * n_params + (attention / 2 if causal else attention)


def flops_per_step(flops_per_token: float, tokens_per_step: int) -> float:
    """FLOPs of one optimizer step: per-token FLOPs x tokens in the step.

    ``tokens_per_step`` = global batch (sequences, all ranks and accumulation micro-steps) x
    sequence length; count real tokens when packing or padding (notes §1.9).
    """
    if flops_per_token <= 0 or tokens_per_step <= 0:
        raise SpmlError(f"flops_per_token and tokens_per_step must be > 0, got "
                        f"{flops_per_token!r} and {tokens_per_step!r} (flops_per_step).")
    return flops_per_token * tokens_per_step


def count_params(model: nn.Module, *, exclude_embeddings: bool = True) -> int:
    """Parameters of ``model`` (shared ones once), by default without embedding tables.

    Embedding lookups do no matmul, so torchtitan leaves them out of N; an embedding tied to
    the LM head IS used in a matmul and stays in (nanoGPT keeps ``wte`` for that reason).
    """
    from torch import nn

    params = {id(p): p for p in model.parameters()}
    if not exclude_embeddings:
        return sum(p.numel() for p in params.values())
    embedding_kinds = (nn.Embedding, nn.EmbeddingBag)
    in_embeddings: set[int] = set()
    elsewhere: set[int] = set()
    for module in model.modules():
        target = in_embeddings if isinstance(module, embedding_kinds) else elsewhere
        target.update(id(p) for p in module.parameters(recurse=False))
    excluded = in_embeddings - elsewhere
    return sum(p.numel() for key, p in params.items() if key not in excluded)
