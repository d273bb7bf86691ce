"""L0-03: attention computed by hand (softmax(q @ kᵀ) @ v) or with the fused SDPA kernels
switched off."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._devices import is_constant, keyword
from spml.toolkit.checks.flow import dotted, mentions, scope_nodes
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

SOFTMAX = frozenset({"torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax"})
MATMUL = frozenset({"torch.matmul", "torch.bmm", "torch.einsum", "torch.baddbmm"})
SDPA = "scaled_dot_product_attention"
ATTENTION_MODULES = frozenset({"torch.nn.MultiheadAttention", "torch.nn.Transformer",
                               "torch.nn.TransformerEncoderLayer",
                               "torch.nn.TransformerDecoderLayer"})
FAST_BACKENDS = frozenset({"FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"})
DISABLERS = {"torch.backends.cuda.enable_flash_sdp": "flash",
             "torch.backends.cuda.enable_mem_efficient_sdp": "memory-efficient"}
TRANSPOSES = frozenset({"transpose", "permute", "mT", "T", "mH", "swapaxes", "t"})


class AttentionWithoutSdpa(Check):
    """Checks that attention runs through ``scaled_dot_product_attention`` with the fused
    kernels enabled.

    ## What it does
    Flags a hand-written attention: a ``softmax`` over a matmul with a transposed operand
    (``q @ k.transpose(-2, -1)``, also through ``att = att * scale``,
    ``att.masked_fill(...)``) whose result is multiplied with the values, in a function that
    never calls ``F.scaled_dot_product_attention`` (a guarded fallback next to an SDPA call,
    like nanoGPT's ``if self.flash: ... else: ...``, is fine). Also flags the flash or
    memory-efficient SDPA backends switched off (``enable_flash_sdp(False)``,
    ``sdp_kernel(enable_flash=False)``, ``sdpa_kernel(SDPBackend.MATH)``) and
    ``need_weights=True`` passed to ``nn.MultiheadAttention``, which forces the slow path.

    ## Why is this bad?
    The manual form materialises the full (T × T) attention matrix per head: memory grows
    quadratically with sequence length and each step makes several round trips to GPU
    memory. FlashAttention and the memory-efficient kernel behind
    ``scaled_dot_product_attention`` fuse the whole computation, typically 2-4× faster with
    far less memory, and allow longer contexts or larger batches.

    ## Example
    ```python
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
    att = F.softmax(att, dim=-1)
    y = att @ v
    ```

    ## Use instead
    ```python
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                       dropout_p=self.dropout if self.training else 0.0)
    ```

    ## References
    - https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html
    - https://pytorch.org/docs/stable/backends.html#torch.backends.cuda.enable_flash_sdp
    """

    id = "L0-03"
    name = "attention-without-sdpa"
    severity = "critical"
    policy = True
    message = "attention is computed by hand (softmax(q @ kᵀ) @ v) instead of fused SDPA"
    fix = "Call F.scaled_dot_product_attention(q, k, v, is_causal=...) and keep flash enabled"
    condition = "has attention layers"
    runtime_note = ("whether the flash kernel is really selected depends on dtype, shape and "
                    "GPU and is measured in L1")

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if _has_attention(facts) else not_applicable("no attention layers")

    def run(self, facts: Facts) -> Iterator[Finding]:
        for source, call in _softmax_calls(facts):
            if _manual_attention(facts, source, call):
                yield self.finding(source, call)
        yield from self._disabled_kernels(facts)
        for source, call in facts.project.calls:
            if is_constant(keyword(call, "need_weights"), True):
                yield self.finding(source, call, "need_weights=True forces "
                                   "nn.MultiheadAttention off the fused kernels")

    def _disabled_kernels(self, facts: Facts) -> Iterator[Finding]:
        for source, call in facts.project.calls:
            name = facts.project.call_name(source, call) or ""
            if name in DISABLERS and call.args and is_constant(call.args[0], False):
                yield self.finding(source, call, f"the {DISABLERS[name]} SDPA kernel is "
                                   "switched off")
            elif name.endswith(".sdp_kernel") and (
                    is_constant(keyword(call, "enable_flash"), False)
                    or is_constant(keyword(call, "enable_mem_efficient"), False)):
                yield self.finding(source, call, "sdp_kernel() switches fused SDPA "
                                   "kernels off")
            elif name.endswith(".sdpa_kernel") and _math_only(call):
                yield self.finding(source, call, "sdpa_kernel() restricts attention to the "
                                   "slow MATH backend")


def _has_attention(facts: Facts) -> bool:
    names = [facts.project.call_name(s, c) or "" for s, c in facts.project.calls]
    if any(n in ATTENTION_MODULES or n.endswith(SDPA) for n in names):
        return True
    if any("attention" in name.lower() for name in facts.project.classes):
        return True
    return any(_manual_attention(facts, s, c) for s, c in _softmax_calls(facts))


def _softmax_calls(facts: Facts) -> Iterator[tuple[SourceFile, ast.Call]]:
    for source, call in facts.project.calls:
        name = facts.project.call_name(source, call) or ""
        if name in SOFTMAX or (isinstance(call.func, ast.Attribute)
                               and call.func.attr == "softmax" and name not in SOFTMAX
                               and not name.startswith("torch.")):
            yield source, call


def _softmax_input(facts: Facts, source: SourceFile, call: ast.Call) -> ast.AST | None:
    if (facts.project.call_name(source, call) or "") in SOFTMAX:
        return call.args[0] if call.args else keyword(call, "input")
    return call.func.value  # att.softmax(dim=-1)


def _manual_attention(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    scope = source.scope_of(call)
    if _calls_sdpa(source, scope):
        return False  # a fallback next to the fused path
    scores = _softmax_input(facts, source, call)
    if scores is None or not _from_scores(facts, source, scores, depth=6):
        return False
    probs = facts.flow.tainted(scope, lambda n: n is call)
    return any(_is_matmul(source, n) and any(n2 is call or mentions(n2, probs)
                                              for n2 in _operands(n))
               for n in scope_nodes(scope))


def _calls_sdpa(source: SourceFile, scope: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and (source.canonical(n.func) or "").endswith(SDPA)
               for n in scope_nodes(scope))


def _from_scores(facts: Facts, source: SourceFile, expr: ast.AST, depth: int) -> bool:
    """``expr`` is (or is built from) a matmul with a transposed operand, following the
    assignments of the names it reads in the same function."""
    for node in ast.walk(expr):
        if _is_matmul(source, node) and any(_transposed(facts, source, o, 3)
                                            for o in _operands(node)):
            return True
    if depth == 0:
        return False
    for node in ast.walk(expr):
        if isinstance(node, ast.Name | ast.Attribute) and dotted(node):
            for origin in facts.flow.origins(source, node):
                if origin.kind == "value" and origin.node is not None \
                        and origin.node is not expr \
                        and _from_scores(facts, source, origin.node, depth - 1):
                    return True
    return False


def _is_matmul(source: SourceFile, node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        return True
    if not isinstance(node, ast.Call):
        return False
    if isinstance(node.func, ast.Attribute) and node.func.attr in ("matmul", "bmm"):
        return True
    return (source.canonical(node.func) or "") in MATMUL


def _operands(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.BinOp):
        return [node.left, node.right]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr in ("matmul", "bmm"):
        return [node.func.value, *node.args]
    return list(node.args) if isinstance(node, ast.Call) else []


def _transposed(facts: Facts, source: SourceFile, expr: ast.AST, depth: int) -> bool:
    """A transposed key: ``k.transpose(-2, -1)``, ``k.mT``, ``kT`` bound to one, or any
    einsum (it transposes through its subscripts)."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Attribute) and node.attr in TRANSPOSES:
            return True
        if isinstance(node, ast.Call) and (source.canonical(node.func) or "") in (
                "torch.transpose", "torch.permute"):
            return True
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str) and "->" in expr.value:
        return True  # the subscripts of torch.einsum("bhqd,bhkd->bhqk", q, k)
    if depth and dotted(expr):
        return any(o.kind == "value" and o.node is not None
                   and _transposed(facts, source, o.node, depth - 1)
                   for o in facts.flow.origins(source, expr))
    return False


def _math_only(call: ast.Call) -> bool:
    """``sdpa_kernel(SDPBackend.MATH)`` or a list of backends without a fused one."""
    arg = call.args[0] if call.args else keyword(call, "backends")
    if arg is None:
        return False
    items = arg.elts if isinstance(arg, ast.List | ast.Tuple) else [arg]
    names = {dotted(i).rsplit(".", 1)[-1] for i in items if dotted(i)}
    return len(names) == len(items) and "MATH" in names and not names & FAST_BACKENDS
