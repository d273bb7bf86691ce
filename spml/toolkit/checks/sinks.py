"""Where a value ends up: the print, log, tracker and file-write calls it reaches.

Shared by the logging checks (L0-19 loss, L0-20 step time, L0-21 data time, L0-23 console).
A value is followed through assignments, into the project's own functions (as an argument,
through ``**kwargs``, or as the object a method runs on) and back out to the callers when a
function returns it, two calls deep. A call of the project's own function is judged by its
body, never by its name (a ``JsonlLogger.log`` that writes a file is a file sink).
"""

from __future__ import annotations

import ast
from collections.abc import Callable

from spml.toolkit.checks.flow import mentions, scope_nodes, target_names
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

Sink = tuple[SourceFile, ast.Call, str]
Accept = Callable[[SourceFile, ast.Call], str | None]
Seed = Callable[[ast.AST], bool]
# A receiver that carries a value is written by these methods (``df.to_csv(path)``).
RECEIVER_SINKS = frozenset({"to_csv", "to_json"})


def reached_calls(facts: Facts, source: SourceFile, scope: ast.AST, accept: Accept,
                  names: frozenset[str] = frozenset(), seed: Seed | None = None) -> list[Sink]:
    """Calls that ``accept`` gives a kind to and whose arguments carry a value derived from
    ``names`` (or from a node matching ``seed``) in ``scope``. The value is followed into
    the project's own functions (as an argument, or as the object a method runs on) and
    back out to the callers when ``scope`` returns it, two calls deep."""
    return _reached(facts, (source, scope), accept, names, seed, 2)


def _reached(facts: Facts, where: tuple[SourceFile, ast.AST], accept: Accept,
             names: frozenset[str], seed: Seed | None, depth: int) -> list[Sink]:
    source, scope = where
    is_seed = seed or _never
    tainted = facts.flow.tainted(scope, is_seed, names)

    def carries(expr: ast.AST) -> bool:
        return mentions(expr, tainted) or any(is_seed(n) for n in ast.walk(expr))

    found: list[Sink] = []
    for node in scope_nodes(scope):
        if not isinstance(node, ast.Call):
            continue
        by_args = any(carries(a) for a in [*node.args, *(k.value for k in node.keywords)])
        by_receiver = isinstance(node.func, ast.Attribute) and carries(node.func.value)
        if not (by_args or by_receiver):
            continue
        # The project's own ``logger.log(...)`` is judged by its body, not by its name.
        local = facts.flow.callee(source, node) if depth else None
        if local is not None:
            found += _through_callee(facts, local, node, carries, accept, depth - 1)
            continue
        kind = accept(source, node) if by_args or _receiver_sink(node) else None
        if kind:
            found.append((source, node, kind))
    found += _through_attributes(facts, tainted, accept, depth)
    returns = [n for n in scope_nodes(scope) if isinstance(n, ast.Return) and n.value]
    if depth and any(carries(n.value) for n in returns):
        found += _to_callers(facts, scope, accept, depth - 1)
    return found


def _never(node: ast.AST) -> bool:
    return False


def _receiver_sink(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Attribute) and call.func.attr in RECEIVER_SINKS


def _through_callee(facts: Facts, target: tuple[SourceFile, ast.FunctionDef], call: ast.Call,
                    carries: Callable[[ast.AST], bool], accept: Accept, depth: int) -> list[Sink]:
    """Into a local function the value is passed to; a method called on an object that
    carries the value sees it as ``self``."""
    callee_source, func = target
    params = [a.arg for a in [*func.args.posonlyargs, *func.args.args]]
    names: set[str] = set()
    if params[:1] in (["self"], ["cls"]) and isinstance(call.func, ast.Attribute):
        if carries(call.func.value):
            names.add(params[0])
        params = params[1:]
    names |= {params[i] for i, a in enumerate(call.args) if i < len(params) and carries(a)}
    named = {*params, *(a.arg for a in func.args.kwonlyargs)}
    for keyword in call.keywords:
        if not carries(keyword.value):
            continue
        if keyword.arg in named:
            names.add(keyword.arg)
        elif func.args.kwarg:  # lands in **kwargs (also for ``**metrics`` passed on)
            names.add(func.args.kwarg.arg)
    if not names:
        return []
    return _reached(facts, (callee_source, func), accept, frozenset(names), None, depth)


def _to_callers(facts: Facts, scope: ast.AST, accept: Accept, depth: int) -> list[Sink]:
    """Where the callers of ``scope`` put the value it returns."""
    found: list[Sink] = []
    for source, call in facts.project.calls:
        target = facts.flow.callee(source, call)
        if target is None or target[1] is not scope:
            continue
        received = _assigned_from(source, call)
        if received:
            found += _reached(facts, (source, source.scope_of(call)), accept, received, None,
                              depth)
        outer = _enclosing_call(source, call)
        kind = accept(source, outer) if outer is not None else None
        if kind:
            found.append((source, outer, kind))
    return found


def _assigned_from(source: SourceFile, call: ast.Call) -> frozenset[str]:
    parent = source.parents.get(call)
    if isinstance(parent, ast.Assign):
        return frozenset(n for t in parent.targets for n in target_names(t))
    if isinstance(parent, ast.AnnAssign | ast.AugAssign | ast.NamedExpr):
        return frozenset(target_names(parent.target))
    return frozenset()


def _enclosing_call(source: SourceFile, node: ast.AST) -> ast.Call | None:
    """The call whose arguments contain ``node`` (``print(f"{step_fn()}")``)."""
    for parent in source.ancestors(node):
        if isinstance(parent, ast.Call):
            return parent
        if isinstance(parent, ast.stmt):
            return None
    return None


def _through_attributes(facts: Facts, tainted: set[str], accept: Accept,
                        depth: int) -> list[Sink]:
    """A value stored on the object (``self.loss = ...``) is read elsewhere through another
    name for it: a callback's ``trainer.loss``, a hook's ``module.loss``. Sinks anywhere in
    the project that read ``<not self>.loss`` count (minGPT's ``on_batch_end`` callbacks)."""
    attrs = {n.split(".", 1)[1] for n in tainted if n.startswith("self.") and n.count(".") == 1}
    if not attrs or not depth:
        return []
    found: list[Sink] = []
    for source, call in facts.project.calls:
        args = [*call.args, *(k.value for k in call.keywords)]
        if any(isinstance(n, ast.Attribute) and n.attr in attrs and isinstance(n.value, ast.Name)
               and n.value.id != "self" for a in args for n in ast.walk(a)):
            kind = accept(source, call)
            if kind:
                found.append((source, call, kind))
    return found
