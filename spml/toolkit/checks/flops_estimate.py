"""L0-14: the architecture's FLOPs per token, and hard-coded FLOPs figures that contradict it."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from spml.toolkit.checks._architecture import (
    Architecture,
    architecture,
    human,
    is_transformer,
    scientific,
)
from spml.toolkit.checks._base import Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import target_names
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

# A per-token FLOPs variable; a GPU's peak (``flops_promised = 312e12``) is not one.
PER_TOKEN = re.compile(r"flop.*tok|tok.*flop", re.IGNORECASE)
NOT_MODEL = re.compile(r"peak|promis|gpu|device|hardware|theor|max|sec|achiev|avail",
                       re.IGNORECASE)
FLOPS_CONTEXT = re.compile(r"flop|mfu", re.IGNORECASE)
TOLERANCE = 10.0  # an order of magnitude: the estimate itself is only that good


class FlopsEstimate(Check):
    """Checks the architecture's training FLOPs per token and any FLOPs figure hard-coded
    beside it.

    ## What it does
    Reads the model's size from the code (``n_layer``, ``n_embd``/``d_model``/
    ``hidden_size``, ``block_size``/``seq_len``, ``vocab_size``: module constants,
    ``argparse`` defaults, config-class fields, config calls) and estimates
    N ≈ 12·L·d² + V·d parameters and 6N + 12·L·d·T training FLOPs per token. The estimate is
    printed with the check's PASS line. It is a finding when the code hard-codes its own
    FLOPs figure (a ``flops_per_token``-style variable set to a number, or ``6 * <number>``
    in FLOPs/MFU code) that is more than 10x away from the estimate.

    ## Why is this bad?
    A FLOPs figure copied from another model makes every MFU and throughput number derived
    from it wrong by the same factor, so a slow run looks efficient (or the reverse) and
    nobody notices until a profiler disagrees. Deriving it from the configuration keeps it
    right when the model changes.

    ## Example
    ```python
    n_layer, n_head, n_embd, block_size, vocab_size = 12, 12, 768, 1024, 50304
    flops_per_token = 6 * 7e9  # copied from a 7B model
    ```

    ## Use instead
    ```python
    n_layer, n_head, n_embd, block_size, vocab_size = 12, 12, 768, 1024, 50304
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * n_params + 12 * n_layer * n_embd * block_size
    ```

    ## References
    - https://arxiv.org/abs/2001.08361 (Kaplan et al., section 2.1)
    - https://arxiv.org/abs/2204.02311 (PaLM, appendix B)
    - https://pytorch.org/docs/stable/generated/torch.utils.flop_counter.FlopCounterMode.html
    """

    id = "L0-14"
    name = "flops-estimate"
    severity = "warning"
    message = "hard-coded FLOPs figure is more than 10x off the architecture's estimate"
    fix = "Compute FLOPs from the config (6N + 12·L·d·T) or count them with FlopCounterMode"
    condition = "always (a transformer config is found)"
    runtime_note = "FLOPs are counted exactly in L1 (FlopCounterMode)"

    def applicability(self, facts: Facts) -> Applicability:
        arch = architecture(facts)
        if not arch.complete or not is_transformer(facts):
            return not_applicable("no transformer config found (layers and width)")
        return Applicability(True, reason=estimate_text(arch))

    def run(self, facts: Facts) -> Iterator[Finding]:
        arch = architecture(facts)
        estimate = arch.flops_per_token()
        for source, node, figure in hard_coded_figures(facts):
            ratio = max(figure / estimate, estimate / figure)
            if ratio > TOLERANCE:
                yield self.finding(source, node, (
                    f"hard-coded FLOPs figure {scientific(figure)} is {ratio:.0f}x off the "
                    f"architecture's estimate {scientific(estimate)}/token"))


def estimate_text(arch: Architecture) -> str:
    """``≈ 124M params, ≈ 0.86 GFLOP/token (6N+12·L·d·T; L=12, d=768, ...)``."""
    missing = [(k, term) for k, term in (("V", "embedding"), ("T", "attention"))
               if arch.get("vocab_size" if k == "V" else "seq_len") is None]
    note = (f"; {'/'.join(k for k, _ in missing)} not found, "
            f"{' and '.join(t for _, t in missing)} term omitted") if missing else ""
    return (f"≈ {human(arch.params())} params, ≈ {arch.flops_per_token() / 1e9:.3g} "
            f"GFLOP/token (6N+12·L·d·T; {arch.describe()}{note}); "
            f"{FlopsEstimate.runtime_note}")


def hard_coded_figures(facts: Facts) -> Iterator[tuple[SourceFile, ast.AST, float]]:
    """(file, node, FLOPs per token) for each number the code hard-codes as a model's
    FLOPs: a per-token FLOPs variable set to a literal, or ``6 * <literal>`` in FLOPs code."""
    covered: set[int] = set()
    for source, node in facts.project.walk():
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n for t in targets for n in target_names(t)]
            value = _literal(node.value)
            if value and any(PER_TOKEN.search(n) and not NOT_MODEL.search(n) for n in names):
                covered.update(id(n) for n in ast.walk(node.value))
                yield source, node, value
        elif isinstance(node, ast.BinOp) and id(node) not in covered:
            value = _six_n(source, node)
            if value and _in_flops_code(source, node):
                yield source, node, value


def _literal(expr: ast.AST) -> float | None:
    """A positive number written out (``1e9``, ``6 * 124e6``, ``2**30``); an expression
    that reads a name or calls something is computed, not hard-coded."""
    if isinstance(expr, ast.Constant):
        value = expr.value
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        return float(value) if ok else None
    if not isinstance(expr, ast.BinOp):
        return None
    left, right = _literal(expr.left), _literal(expr.right)
    if left is None or right is None:
        return None
    operations = {ast.Mult: lambda: left * right, ast.Add: lambda: left + right,
                  ast.Div: lambda: left / right, ast.Pow: lambda: left**right}
    compute = operations.get(type(expr.op))
    try:
        return compute() if compute and (not isinstance(expr.op, ast.Pow) or right < 64) \
            else None
    except OverflowError:
        return None


def _six_n(source: SourceFile, node: ast.BinOp) -> float | None:
    """``6 * 7e9`` -> 4.2e10: six FLOPs per parameter per token with a literal N."""
    if not isinstance(node.op, ast.Mult):
        return None
    left, right = _literal(node.left), _literal(node.right)
    if left is None or right is None or 6 not in (left, right):
        return None
    other = right if left == 6 else left
    return 6.0 * other if other >= 1e6 else None


def _in_flops_code(source: SourceFile, node: ast.AST) -> bool:
    """The product is assigned to, or computed in a function named for, FLOPs or MFU."""
    for parent in source.ancestors(node):
        if isinstance(parent, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
            if any(FLOPS_CONTEXT.search(n) and not NOT_MODEL.search(n)
                   for t in targets for n in target_names(t)):
                return True
        if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef):
            return bool(FLOPS_CONTEXT.search(parent.name))
    return False
