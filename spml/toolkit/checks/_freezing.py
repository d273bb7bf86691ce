"""Where the project sets ``requires_grad``: freezing and unfreezing of parameters.

Shared by L0-04 (frozen parameters may stay out of the optimizer) and L0-13 (freezing that
cannot have the effect the code implies).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from spml.toolkit.checks._optim import PARAM_METHODS
from spml.toolkit.checks.flow import SCOPES
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted


@dataclass(frozen=True)
class Freeze:
    """A place that sets ``requires_grad``: ``receiver`` is the module (or tensor) whose
    parameters it sets (None: unknown); ``requires_grad`` the value it sets (False:
    frozen, True: unfrozen, None: unknown);
    ``conditional`` when it sits under an ``if`` inside the parameter loop."""

    source: SourceFile
    node: ast.AST
    receiver: ast.AST | None
    requires_grad: bool | None
    conditional: bool = False


def freezes(facts: Facts) -> list[Freeze]:
    """Every ``requires_grad`` assignment, ``requires_grad_()`` and ``freeze()`` call."""
    out = []
    for source, node in facts.project.walk():
        if isinstance(node, ast.Assign):
            out += [_freeze(source, node, t.value, _bool(node.value)) for t in node.targets
                    if isinstance(t, ast.Attribute) and t.attr == "requires_grad"]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr == "requires_grad_":
                arg = node.args[0] if node.args else next(
                    (k.value for k in node.keywords if k.arg == "requires_grad"), None)
                out.append(_freeze(source, node, node.func.value,
                                   True if arg is None else _bool(arg)))
            elif attr in ("freeze", "unfreeze") and not _is_config(node.func.value) \
                    and not _is_module(source, node.func.value):
                # Lightning's `model.freeze()` sets requires_grad False; `unfreeze()` True
                holder = node.args[0] if node.args else node.func.value
                out.append(_freeze(source, node, holder, attr == "unfreeze"))
    return out


def _is_config(expr: ast.AST) -> bool:
    """``cfg.freeze()`` (yacs, detectron2) makes a config read-only; it freezes no weights."""
    return any(w in (dotted(expr) or "").lower() for w in ("cfg", "conf"))


def _is_module(source: SourceFile, expr: ast.AST) -> bool:
    """``gc.freeze()``: a call on an imported module (or object) freezes no local model."""
    name = dotted(expr)
    return name is not None and name.split(".")[0] in source.aliases


def _bool(expr: ast.AST) -> bool | None:
    return expr.value if isinstance(expr, ast.Constant) and isinstance(expr.value, bool) else None


def _freeze(source: SourceFile, node: ast.AST, holder: ast.AST,
            requires_grad: bool | None) -> Freeze:
    """Finds the module behind ``p`` in ``for p in model.x.parameters(): p.requires_grad``."""
    if not isinstance(holder, ast.Name):
        return Freeze(source, node, holder if dotted(holder) else None, requires_grad)
    conditional = False
    for parent in source.ancestors(node):
        if isinstance(parent, SCOPES):
            break
        conditional |= isinstance(parent, ast.If)
        if isinstance(parent, ast.For | ast.comprehension) and holder.id in {
                n.id for n in ast.walk(parent.target) if isinstance(n, ast.Name)}:
            it = parent.iter
            if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) \
                    and it.func.attr in PARAM_METHODS and dotted(it.func.value):
                return Freeze(source, node, it.func.value, requires_grad, conditional)
            return Freeze(source, node, None, requires_grad, conditional)
    return Freeze(source, node, holder, requires_grad)
