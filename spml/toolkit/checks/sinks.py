"""Where a value ends up: the print, log, tracker and file-write calls it reaches.

Shared by the logging checks (L0-19 loss, L0-20 step time, L0-21 data time, L0-23 console).
A value is followed through assignments, into the project's own functions (as an argument,
through ``**kwargs``, or as the object a method runs on) and back out to the callers when a
function returns it, two calls deep; a value that arrives as a parameter is also followed
from what the callers pass. A call of the project's own function is judged by its body,
never by its name (a ``JsonlLogger.log`` that writes a file is a file sink); a sink found
inside one remembers the call that led there, so a finding can point at that call.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import NamedTuple

from spml.toolkit.checks.flow import SCOPES, maximal_names, mentions, scope_nodes, target_names
from spml.toolkit.checks.patterns import METER_PRINT_METHODS, Facts
from spml.toolkit.checks.project import SourceFile, dotted

Accept = Callable[[SourceFile, ast.Call], str | None]
Seed = Callable[[ast.AST], bool]
# A receiver that carries a value is written by these methods (``df.to_csv(path)``), or
# printed (a MetricLogger's ``log_every`` prints every meter it holds).
RECEIVER_SINKS = frozenset({"to_csv", "to_json"}) | METER_PRINT_METHODS


class Sink(NamedTuple):
    """A call that prints or writes the value (``kind``: console / file). ``via`` is the
    call in the scope the search started from that leads into the project's function
    holding ``call`` (``progress.display(i)`` for the print in ``ProgressMeter.display``):
    the place to report, since that is where the training code decides what is logged."""

    source: SourceFile
    call: ast.Call
    kind: str
    via: tuple[SourceFile, ast.Call] | None = None


def reached_calls(facts: Facts, source: SourceFile, scope: ast.AST, accept: Accept,
                  names: frozenset[str] = frozenset(), seed: Seed | None = None) -> list[Sink]:
    """Calls that ``accept`` gives a kind to and whose arguments carry a value derived from
    ``names`` (or from a node matching ``seed``) in ``scope``. The value is followed into
    the project's own functions (as an argument, or as the object a method runs on) and
    back out to the callers when ``scope`` returns it, two calls deep. When some of
    ``names`` are parameters of ``scope`` (timm's ``def _backward(_loss)``), the value is
    also followed from what the callers pass for them."""
    found = _reached(facts, (source, scope), accept, names, seed, 2)
    return found + _from_arguments(facts, scope, accept, names)


def site_of(sink: Sink) -> tuple[SourceFile, ast.Call, str]:
    """Where to report a sink, and a note: the call site in the code that was searched when
    the sink sits in a helper it calls (``print0(...)``, ``progress.display(i)``), with the
    helper's own print or write named in the note; else the sink itself, no note."""
    if sink.via is None:
        return sink.source, sink.call, ""
    return (*sink.via, helper_note(sink.source, sink.call))


def helper_note(source: SourceFile, call: ast.Call) -> str:
    """``reaches print() in ProgressMeter.display (main.py:500)``: what a finding at a
    helper's call site says about the helper's own print or write."""
    what = ast.unparse(call.func)
    what = what if len(what) <= 30 else "..." + what[-27:]
    return f"reaches {what}() in {_qualified_name(source, call)} ({source.display}:" \
           f"{call.lineno})"


def _qualified_name(source: SourceFile, node: ast.AST) -> str:
    """``ProgressMeter.display`` for a node in that method; ``print0`` in a function."""
    parts = [p.name for p in source.ancestors(node)
             if isinstance(p, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    return ".".join(reversed(parts)) or "<module>"


def _reached(facts: Facts, where: tuple[SourceFile, ast.AST], accept: Accept,
             names: frozenset[str], seed: Seed | None, depth: int) -> list[Sink]:
    source, scope = where
    tainted = facts.flow.tainted(scope, seed, names)

    def carries(expr: ast.AST) -> bool:
        return mentions(expr, tainted) or (seed is not None
                                           and any(seed(n) for n in ast.walk(expr)))

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
            found += [_entered(sink, local, (source, node)) for sink in
                      _through_callee(facts, local, node, carries, accept, depth - 1)]
            continue
        kind = accept(source, node) if by_args or _receiver_sink(node) else None
        if kind:
            found.append(Sink(source, node, kind))
    found += _through_attributes(facts, tainted, accept, depth)
    returns = [n for n in scope_nodes(scope) if isinstance(n, ast.Return) and n.value]
    if depth and any(carries(n.value) for n in returns):
        found += _to_callers(facts, scope, accept, depth - 1)
    return found


def _entered(sink: Sink, target: tuple[SourceFile, ast.AST], call: tuple[SourceFile, ast.Call]
             ) -> Sink:
    """The sink, reached through ``call`` when it sits inside the called function (or
    inside a function that one calls); one found back in a caller keeps its own place."""
    src, node = sink.via or (sink.source, sink.call)
    inside = src is target[0] and target[1] in set(src.ancestors(node))
    return sink._replace(via=call) if inside else sink


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
    for source, call in facts.flow.callers(scope):
        received = _assigned_from(source, call)
        if received:
            found += _reached(facts, (source, source.scope_of(call)), accept, received, None,
                              depth)
        outer = _enclosing_call(source, call)
        kind = accept(source, outer) if outer is not None else None
        if kind:
            found.append(Sink(source, outer, kind))
    return found


def _from_arguments(facts: Facts, scope: ast.AST, accept: Accept,
                    names: frozenset[str]) -> list[Sink]:
    """Where the callers of ``scope`` put what they pass for the parameters in ``names``:
    a loss handed to a ``_backward(loss)`` closure is logged by the loop that made it."""
    if not isinstance(scope, SCOPES) or not names:
        return []
    found: list[Sink] = []
    for source, call in facts.flow.callers(scope):
        passed = [arg for name in names if (arg := _argument(scope, call, name)) is not None]
        received = frozenset(n for arg in passed for x in maximal_names(arg)
                             if (n := dotted(x)))
        if received:
            found += _reached(facts, (source, source.scope_of(call)), accept, received, None,
                              2)
    return found


def _argument(func: ast.AST, call: ast.Call, name: str) -> ast.AST | None:
    """The expression ``call`` passes for ``func``'s parameter ``name``, if it can be told."""
    args = func.args  # type: ignore[attr-defined]
    given = next((k.value for k in call.keywords if k.arg == name), None)
    params = [a.arg for a in [*args.posonlyargs, *args.args]]
    if given is not None or name not in params:
        return given
    if params[:1] in (["self"], ["cls"]) and isinstance(call.func, ast.Attribute):
        params = params[1:]
    index = params.index(name) if name in params else -1
    if 0 <= index < len(call.args) and not any(isinstance(a, ast.Starred)
                                               for a in call.args[:index + 1]):
        return call.args[index]
    return None


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
                found.append(Sink(source, call, kind))
    return found
