"""Whether a GradScaler's ``enabled=`` condition holds when autocast runs in fp16 (L0-02).

nanoGPT writes ``GradScaler(enabled=(dtype == 'float16'))``: the scaler is on exactly when
it is needed. The same line with ``'bfloat16'`` turns it off exactly then. The condition is
read as a comparison of a precision setting with literal precision names (or torch dtypes);
anything else (``enabled=use_amp``, ``enabled=args.fp16``) is unknown and trusted.
"""

from __future__ import annotations

import ast

from spml.toolkit.checks._devices import BF16, FP16, Autocast, keyword, local_origins
from spml.toolkit.checks.flow import dotted
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

# Literal names of a precision setting, as training scripts and frameworks spell them.
FP16_NAMES = frozenset({"float16", "fp16", "half", "16", "16-mixed", "fp16-mixed"})
OTHER_NAMES = frozenset({"bfloat16", "bf16", "bf16-mixed", "float32", "fp32", "float", "32",
                         "32-true", "tf32", "float64", "fp64", "64"})
OTHER_DTYPES = BF16 | frozenset({"torch.float32", "torch.float", "torch.float64",
                                 "torch.double"})


def enabled_at_fp16(facts: Facts, source: SourceFile, expr: ast.AST,
                    depth: int = 2) -> bool | None:
    """True/False when ``expr`` is true/false for an fp16 precision setting, None when
    that cannot be told from the expression."""
    if isinstance(expr, ast.Compare) and len(expr.ops) == 1:
        return _compare(source, expr)
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
        inner = enabled_at_fp16(facts, source, expr.operand, depth)
        return None if inner is None else not inner
    if isinstance(expr, ast.BoolOp):
        parts = [enabled_at_fp16(facts, source, v, depth) for v in expr.values]
        decisive = isinstance(expr.op, ast.Or)  # one True decides an `or`, one False an `and`
        if decisive in parts:
            return decisive
        return None if None in parts else not decisive
    if dotted(expr) is not None and depth:
        # `enabled=use_scaler` where `use_scaler = dtype == "float16"` above
        found = {enabled_at_fp16(facts, o.source, o.node, depth - 1)
                 for o in local_origins(facts, source, expr)
                 if o.kind == "value" and o.node is not None and o.node is not expr}
        return found.pop() if len(found) == 1 else None
    return None


def _compare(source: SourceFile, expr: ast.Compare) -> bool | None:
    """``dtype == 'bfloat16'``, ``'fp16' != precision``, ``dtype in ('bf16', 'fp32')``."""
    op, left, right = expr.ops[0], expr.left, expr.comparators[0]
    if _precision(source, left) is not None and dotted(right) is not None:
        left, right = right, left  # the literal on the left: `'float16' == dtype`
    if dotted(left) is None:
        return None
    if isinstance(op, ast.Eq | ast.NotEq):
        kind = _precision(source, right)
        if kind is None:
            return None
        return kind == isinstance(op, ast.Eq)
    if isinstance(op, ast.In | ast.NotIn) and isinstance(right, ast.Tuple | ast.List | ast.Set):
        kinds = [_precision(source, e) for e in right.elts]
        if not kinds or None in kinds:
            return None
        return any(kinds) == isinstance(op, ast.In)
    return None


def _precision(source: SourceFile, node: ast.AST) -> bool | None:
    """True for an fp16 name or dtype, False for another precision, None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int):
        text = str(node.value).lower()
        return True if text in FP16_NAMES else False if text in OTHER_NAMES else None
    name = source.canonical(node) if dotted(node) else None
    return True if name in FP16 else False if name in OTHER_DTYPES else None


def may_run_fp16(facts: Facts, cast: Autocast) -> bool:
    """The autocast region can run in fp16: its dtype is fp16, or a value chosen at run time
    among which fp16 is (``ptdtype = {..., 'float16': torch.float16}[dtype]``), or it has no
    dtype and may run on CUDA, where autocast defaults to fp16."""
    if cast.dtype is not None:
        return cast.dtype == "float16"
    dtype = keyword(cast.call, "dtype") or (cast.call.args[1] if len(cast.call.args) > 1
                                            else None)
    if dtype is None:
        return True
    nodes = [(o.source, o.node) for o in local_origins(facts, cast.source, dtype)
             if o.node is not None]
    return any(isinstance(n, ast.Attribute) and src.canonical(n) in FP16
               for src, node in nodes for n in ast.walk(node))
