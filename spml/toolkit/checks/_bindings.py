"""Bindings within one scope: where each name is assigned, and what a binding stands for.

The per-scope half of `spml.toolkit.checks.flow` (which re-exports these names): assignment
targets, ``for``/``with``/comprehension bindings, and the element a ``for`` target takes
from its iterable.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from spml.toolkit.checks.project import dotted

SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


@dataclass(frozen=True)
class Binding:
    """``name`` gets a value at ``line``: ``value`` is the expression (the iterable for a
    ``for`` target, the context manager for ``with``, None for a parameter)."""

    name: str
    line: int
    kind: str  # assign | iter | with | param | aug
    value: ast.AST | None
    node: ast.AST


def scope_nodes(scope: ast.AST) -> tuple[ast.AST, ...]:
    """Every node in ``scope`` without descending into nested functions or classes."""
    # Checks ask for the same scopes again and again; the tree never changes during an
    # analysis, so the walk is kept on the node itself (about 3x faster on 2,000 lines).
    cached = getattr(scope, "_spml_scope_nodes", None)
    if cached is None:
        cached = tuple(_walk_scope(scope))
        scope._spml_scope_nodes = cached  # type: ignore[attr-defined]
    return cached


def _walk_scope(scope: ast.AST) -> Iterator[ast.AST]:
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (*SCOPES, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def target_names(target: ast.AST) -> list[str]:
    """Names (and dotted attributes like ``self.head``) bound by an assignment target."""
    if isinstance(target, ast.Tuple | ast.List):
        return [n for elt in target.elts for n in target_names(elt)]
    if isinstance(target, ast.Starred):
        return target_names(target.value)
    name = dotted(target)
    return [name] if name else []


def bindings(scope: ast.AST) -> dict[str, list[Binding]]:
    """All bindings in one scope, by name, in source order."""
    table: dict[str, list[Binding]] = {}
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        args = scope.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            table.setdefault(arg.arg, []).append(Binding(arg.arg, arg.lineno, "param", None, arg))
    for node in scope_nodes(scope):
        for target, kind, value, at in _binding_parts(node):
            for name in target_names(target):
                table.setdefault(name, []).append(Binding(name, at.lineno, kind, value, at))
    for values in table.values():
        values.sort(key=lambda b: b.line)
    return table


def _binding_parts(node: ast.AST) -> Iterator[tuple[ast.AST, str, ast.AST | None, ast.AST]]:
    """(target, kind, value, node carrying the line) for each name ``node`` binds."""
    if isinstance(node, ast.Assign):
        for target in node.targets:
            yield target, "assign", node.value, node
    elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and node.value is not None:
        yield node.target, "assign", node.value, node
    elif isinstance(node, ast.AugAssign):
        yield node.target, "aug", node.value, node
    elif isinstance(node, ast.For | ast.AsyncFor):
        yield node.target, "iter", node.iter, node
    elif isinstance(node, ast.comprehension):
        yield node.target, "iter", node.iter, node.iter
    elif isinstance(node, ast.withitem) and node.optional_vars is not None:
        yield node.optional_vars, "with", node.context_expr, node.context_expr


def prepared_element(binding: Binding) -> ast.AST | None:
    """``element_for``, and through ``accelerator.prepare(model, opt, sched)`` (and
    Fabric's ``setup``), which hands back its arguments wrapped, in order: the argument
    in the binding's position. For following optimizers and schedulers; a prepared model
    has moved to the device, so its device is not what it was before."""
    node, passed = binding.node, _passed_through(binding.value)
    if passed is not None and isinstance(node, ast.Assign):
        target = next((t for t in node.targets if binding.name in target_names(t)), None)
        if isinstance(target, ast.Tuple | ast.List) and len(target.elts) == len(passed):
            for elt, arg in zip(target.elts, passed, strict=True):
                if binding.name in target_names(elt):
                    return arg
        elif target is not None and len(passed) == 1 and dotted(target) is not None:
            return passed[0]
    return element_for(binding)


def element_for(binding: Binding) -> ast.AST | None:
    """The part of the assigned value that reaches ``binding.name``."""
    node, value = binding.node, binding.value
    if isinstance(node, ast.Assign) and isinstance(value, ast.Tuple | ast.List):
        for target in node.targets:
            if isinstance(target, ast.Tuple | ast.List) and len(target.elts) == len(value.elts):
                for elt, val in zip(target.elts, value.elts, strict=True):
                    if binding.name in target_names(elt):
                        return val
    return value


def _passed_through(value: ast.AST | None) -> list[ast.AST] | None:
    """The arguments of ``accelerator.prepare(...)`` / ``fabric.setup(...)``: calls that
    hand back what they are given (wrapped for the device), in order."""
    if not isinstance(value, ast.Call) or not isinstance(value.func, ast.Attribute) \
            or value.keywords or any(isinstance(a, ast.Starred) for a in value.args):
        return None
    owner = (dotted(value.func.value) or "").lower()
    if value.func.attr == "prepare" and "accel" in owner \
            or value.func.attr in ("setup", "setup_module") and "fabric" in owner:
        return list(value.args)
    return None
