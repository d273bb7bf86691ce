"""Dataflow within and across files: where a name's value comes from, and where it goes.

Deliberately simple and conservative: assignments are followed inside one function (then
its module), through tuple unpacking, ``for`` targets, ``with ... as`` and calls to the
project's own functions and methods. When a value's origin is unknown the answer is
"unknown", and checks stay silent rather than guess.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

from spml.toolkit.checks._bindings import (  # re-exported: checks import them from here
    SCOPES,
    Binding,
    bindings,
    element_for,
    prepared_element,
    scope_nodes,
    target_names,
)
from spml.toolkit.checks.project import Project, SourceFile, dotted

__all__ = ["SCOPES", "Binding", "Flow", "Origin", "bindings", "element_for", "in_loop",
           "innermost_loop", "maximal_names", "mentions", "names_read", "prepared_element",
           "scope_nodes", "target_names"]


@dataclass(frozen=True)
class Origin:
    """Where a value was made: an expression in a file (kind ``value``/``iter``/``with``),
    a function parameter (``param``) or nothing known (``unknown``)."""

    source: SourceFile
    node: ast.AST | None
    kind: str


class Flow:
    """Answers "where does this value come from" for one project; caches per scope."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._bindings: dict[int, dict[str, list[Binding]]] = {}
        self._resolving: set[int] = set()
        self._callees: dict[int, tuple[SourceFile, ast.FunctionDef] | None] = {}
        self._defs: dict[int, dict[str, list[ast.FunctionDef]]] = {}
        self._callers: dict[int, list[tuple[SourceFile, ast.Call]]] | None = None
        self._tainted: dict[tuple[int, frozenset[str]], frozenset[str]] = {}

    def bindings(self, scope: ast.AST) -> dict[str, list[Binding]]:
        key = id(scope)
        if key not in self._bindings:
            self._bindings[key] = bindings(scope)
        return self._bindings[key]

    def reaching(self, source: SourceFile, name: str, at: ast.AST) -> list[Binding]:
        """Bindings of ``name`` visible at ``at``: the enclosing function's (the last one
        before ``at`` when there is one), else the module's."""
        scope = source.scope_of(at)
        line = getattr(at, "lineno", 10**9)
        enclosing = set(source.ancestors(at))
        while True:
            # `x = x.to(dev)`: the use on the right reads the binding before, not this one.
            found = [b for b in self.bindings(scope).get(name, [])
                     if b.value is None or (b.value not in enclosing and b.value is not at)]
            if found:
                before = [b for b in found if b.line <= line]
                straight = before and (not in_loop(source, at)
                                       or _same_iteration(source, before[-1], at))
                if straight:
                    return _reaching_branches(source, before, enclosing)
                # In a loop: what reached the loop, plus rebindings later in the same loop
                # (carried to the next iteration); never bindings after the loop.
                loop = innermost_loop(source, at)
                carried = [b for b in found if b.line > line and loop is not None
                           and loop in set(source.ancestors(b.node))]
                reached = _reaching_branches(source, before, enclosing) if before else []
                return reached + carried or found
            if scope is source.tree:
                return []
            scope = source.scope_of(scope)

    def origins(self, source: SourceFile, expr: ast.AST, depth: int = 6) -> list[Origin]:
        """The expressions that produce ``expr``'s value, following plain names."""
        name = dotted(expr)
        if name is None or depth == 0:
            return [Origin(source, expr, "value")]
        found = self.reaching(source, name, expr)
        if not found:
            return [Origin(source, expr, "unknown")]
        out: list[Origin] = []
        for binding in found:
            if binding.kind == "param":
                out.append(Origin(source, binding.node, "param"))
            elif binding.kind == "aug":  # `x //= 8`: the value is computed, not assigned
                out.append(Origin(source, binding.node, "aug"))
            elif binding.kind in ("iter", "with"):
                out.append(Origin(source, binding.value, binding.kind))
            else:
                value = element_for(binding)
                if value is not None and dotted(value) is not None and value is not expr:
                    out.extend(self.origins(source, value, depth - 1))
                elif value is not None:
                    out.append(Origin(source, value, "value"))
        return out

    def origin_calls(self, source: SourceFile, expr: ast.AST) -> list[tuple[SourceFile, str]]:
        """Canonical names of the calls that made ``expr`` (``torch.optim.AdamW`` ...),
        looking through method chains like ``.to(device)`` and into local functions."""
        names: list[tuple[SourceFile, str]] = []
        for origin in self.origins(source, expr):
            for src, call in self.producing_calls(origin):
                name = self.project.call_name(src, call)
                if name:
                    names.append((src, name))
        return names

    def producing_calls(self, origin: Origin, depth: int = 3) -> list[tuple[SourceFile, ast.Call]]:
        """The constructor-like call behind an origin: ``GPT(cfg).to(dev)`` -> ``GPT(cfg)``;
        a call of a local function -> the calls its ``return`` statements make."""
        node = origin.node
        while isinstance(node, ast.Call) and node.args and (
                (isinstance(node.func, ast.Attribute) and node.func.attr in CHAINABLE)
                or (origin.source.canonical(node.func) or "") in WRAPPERS):
            # `GPT(cfg).to(dev)` -> `GPT(cfg)`; `torch.compile(model)` / `DDP(model)` -> model
            node = node.args[0] if (origin.source.canonical(node.func) or "") in WRAPPERS \
                else node.func.value
        while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in CHAINABLE:
            node = node.func.value
        if isinstance(node, ast.Await):
            node = node.value
        if not isinstance(node, ast.Call):
            if node is not None and dotted(node) is not None and depth:
                return [c for o in self.origins(origin.source, node)
                        for c in self.producing_calls(o, depth - 1)]
            return []
        returned = self.returns_of(origin.source, node) if depth else []
        if returned:
            return [c for src, value in returned
                    for c in self.producing_calls(Origin(src, value, "value"), depth - 1)
                    ] or [(origin.source, node)]
        return [(origin.source, node)]

    def callee(self, source: SourceFile, call: ast.Call
               ) -> tuple[SourceFile, ast.FunctionDef] | None:
        """The project's own function or method a call runs, when it can be known."""
        if id(call) in self._callees:
            return self._callees[id(call)]
        if id(call) in self._resolving:  # a value defined through itself: give up, stay silent
            return None
        self._resolving.add(id(call))
        try:
            found = self._callee(source, call)
        finally:
            self._resolving.discard(id(call))
        if not self._resolving:  # an answer cut short by the guard above is not cached
            self._callees[id(call)] = found
        return found

    def _callee(self, source: SourceFile, call: ast.Call
                ) -> tuple[SourceFile, ast.FunctionDef] | None:
        func = call.func
        if isinstance(func, ast.Name):
            return self._nested(source, call, func.id) or self._function(source, func.id) \
                or (self._instance_method(source, func, "__call__") if self._callable_classes
                    else None)
        if isinstance(func, ast.Attribute):
            owner = dotted(func.value)
            if owner and self.class_named(source, source.canonical(func.value)):
                # `GPT.from_pretrained(...)`: a classmethod/staticmethod of a local class
                return self._method(source, source.canonical(func.value), func.attr)
            if owner == "self":
                cls = source.class_of(call)
                return self._class_method(source, cls, func.attr) if cls else None
            if owner:
                return self._instance_method(source, func.value, func.attr, made_only=False)
        return None

    @cached_property
    def _callable_classes(self) -> bool:
        """Whether any class of the project defines ``__call__`` (most define none)."""
        return any(isinstance(n, ast.FunctionDef) and n.name == "__call__"
                   for _, cls in self.project.walk() if isinstance(cls, ast.ClassDef)
                   for n in cls.body)

    def _instance_method(self, source: SourceFile, expr: ast.AST, method: str,
                         made_only: bool = True) -> tuple[SourceFile, ast.FunctionDef] | None:
        """``method`` of the local class that made ``expr`` (``loss_scaler(loss, opt)``
        runs the ``__call__`` of the class ``loss_scaler`` was built from)."""
        for origin in self.origins(source, expr):
            if made_only and (origin.kind != "value" or not isinstance(origin.node, ast.Call)):
                continue
            for src, made in self.producing_calls(origin, depth=1):
                found = self._method(src, self.project.call_name(src, made), method)
                if found:
                    return found
        return None

    def function_named(self, source: SourceFile, at: ast.AST, name: str
                       ) -> tuple[SourceFile, ast.FunctionDef] | None:
        """The project's function a bare ``name`` stands for at ``at`` (a closure passed
        as ``optimizer.step(closure)``)."""
        return self._nested(source, at, name) or self._function(source, name)

    def _nested(self, source: SourceFile, call: ast.Call, name: str
                ) -> tuple[SourceFile, ast.FunctionDef] | None:
        """A function defined inside an enclosing function of the call (timm's ``def
        _backward(loss)`` in the loop body): it shadows any module-level one, as in Python.
        Of several defs in one scope, the last one above the call (else the first)."""
        scope = source.scope_of(call)
        while scope is not source.tree:
            defs = self._local_defs(scope).get(name)
            if defs:
                above = [f for f in defs if f.lineno < call.lineno]
                return source, (above or defs)[-1 if above else 0]
            scope = source.scope_of(scope)
        return None

    def _local_defs(self, scope: ast.AST) -> dict[str, list[ast.FunctionDef]]:
        key = id(scope)
        if key not in self._defs:
            table: dict[str, list[ast.FunctionDef]] = {}
            for node in scope_nodes(scope):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    table.setdefault(node.name, []).append(node)
            self._defs[key] = table
        return self._defs[key]

    def _function(self, source: SourceFile, name: str
                  ) -> tuple[SourceFile, ast.FunctionDef] | None:
        """A module-level function: a top-level ``def``, or one in a module-level block
        (``if``/``for``/``with``: a script defining its step closure in the loop)."""
        canonical = source.aliases.get(name, name)
        candidates = self.project.functions.get(canonical.rsplit(".", 1)[-1], [])
        top = [(s, f) for s, f in candidates if isinstance(s.parents.get(f), ast.Module)]
        same = [(s, f) for s, f in top if s is source] or [
            (s, f) for s, f in candidates if s is source and canonical == name
            and s.scope_of(f) is s.tree and s.class_of(f) is None]
        return (same or top or [None])[0]

    def class_named(self, source: SourceFile, name: str | None
                    ) -> tuple[SourceFile, ast.ClassDef] | None:
        """The project's class ``name`` as seen from ``source``: the file's own top-level
        class of that name first (two scripts may each define a ``Trainer``)."""
        if name and "." not in name:
            own = next((n for n in source.tree.body
                        if isinstance(n, ast.ClassDef) and n.name == name), None)
            if own is not None:
                return source, own
        return self.project.local_class(name)

    def method_of(self, source: SourceFile, cls_name: str | None, method: str
                  ) -> tuple[SourceFile, ast.FunctionDef] | None:
        """``method`` of the project's class ``cls_name`` (or of a local base), from
        ``source``."""
        return self._method(source, cls_name, method)

    def _method(self, source: SourceFile, cls_name: str | None, method: str
                ) -> tuple[SourceFile, ast.FunctionDef] | None:
        found = self.class_named(source, cls_name)
        return self._class_method(found[0], found[1], method) if found else None

    def _class_method(self, source: SourceFile, cls: ast.ClassDef, method: str
                      ) -> tuple[SourceFile, ast.FunctionDef] | None:
        found: tuple[SourceFile, ast.ClassDef] | None = (source, cls)
        seen: set[int] = set()
        while found is not None and id(found[1]) not in seen:  # `class A(lib.A)`: no cycle
            source, cls = found
            seen.add(id(cls))
            for node in cls.body:
                if isinstance(node, ast.FunctionDef) and node.name == method:
                    return source, node
            bases = [self.class_named(source, source.canonical(b)) for b in cls.bases]
            found = next((b for b in bases if b), None)
        return None

    def callers(self, func: ast.AST) -> list[tuple[SourceFile, ast.Call]]:
        """The project's calls that run ``func`` (the table is built once per analysis)."""
        if self._callers is None:
            table: dict[int, list[tuple[SourceFile, ast.Call]]] = {}
            for source, call in self.project.calls:
                target = self.callee(source, call)
                if target is not None:
                    table.setdefault(id(target[1]), []).append((source, call))
            self._callers = table
        return self._callers.get(id(func), [])

    def returns_of(self, source: SourceFile, call: ast.Call) -> list[tuple[SourceFile, ast.AST]]:
        """The expressions a local function/method returns (resolved in its own file)."""
        found = self.callee(source, call)
        if found is None:
            return []
        src, func = found
        return [(src, n.value) for n in scope_nodes(func)
                if isinstance(n, ast.Return) and n.value is not None]

    # ---- forward taint ---------------------------------------------------------------
    def tainted(self, scope: ast.AST, seed: Callable[[ast.AST], bool] | None,
                names: frozenset[str] = frozenset()) -> set[str]:
        """Names in ``scope`` whose value derives from a node matching ``seed`` (or from
        ``names``): assignments, ``x.append(v)``, ``d[k] = v``, ``meter.update(v)``.
        Without a seed the answer depends on ``names`` only and is kept: the loss checks
        follow the same loss through the same scopes."""
        if seed is None:
            key = (id(scope), names)
            if key not in self._tainted:
                self._tainted[key] = frozenset(self._taint(scope, None, names))
            return set(self._tainted[key])
        return self._taint(scope, seed, names)

    def _taint(self, scope: ast.AST, seed: Callable[[ast.AST], bool] | None,
               names: frozenset[str]) -> set[str]:
        tainted = set(names)
        moves: list[tuple[list[str], frozenset[str]]] = []
        for targets, value in _scope_flows(scope):
            if seed is not None and any(seed(n) for n in ast.walk(value)):
                tainted.update(targets)
            else:
                moves.append((targets, names_read(value)))
        changed = True
        while changed:  # to a fixpoint: values flow through any number of assignments
            changed = False
            for targets, read in moves:
                if read & tainted and not tainted.issuperset(targets):
                    tainted.update(targets)
                    changed = True
        return tainted


CHAINABLE = frozenset({"to", "cuda", "cpu", "half", "float", "bfloat16", "double", "train",
                       "eval", "requires_grad_", "share_memory", "pin_memory", "contiguous",
                       "detach", "clone", "type"})
# Calls that wrap a module and behave like it (their first argument is what they make).
WRAPPERS = frozenset({"torch.compile", "torch.nn.parallel.DistributedDataParallel",
                      "torch.nn.parallel.DataParallel", "torch.nn.DataParallel",
                      "torch.distributed.fsdp.FullyShardedDataParallel",
                      "torch.nn.parallel.distributed.DistributedDataParallel"})
SINK_METHODS = frozenset({"append", "extend", "update", "add", "put", "insert"})


def _scope_flows(scope: ast.AST) -> tuple[tuple[list[str], ast.AST], ...]:
    """(names bound, value) for every flow in ``scope``, kept on the node like its walk."""
    cached = getattr(scope, "_spml_flows", None)
    if cached is None:
        cached = tuple((target_names(target), value) for node in scope_nodes(scope)
                       for target, value in _flows(node))
        scope._spml_flows = cached  # type: ignore[attr-defined]
    return cached


def _flows(node: ast.AST) -> Iterator[tuple[ast.AST, ast.AST]]:
    """(target, value) pairs through which a value moves at ``node``."""
    if isinstance(node, ast.Assign):
        for target in node.targets:
            yield (target.value if isinstance(target, ast.Subscript) else target), node.value
    elif isinstance(node, ast.AugAssign | ast.AnnAssign | ast.NamedExpr) and node.value:
        target = node.target
        yield (target.value if isinstance(target, ast.Subscript) else target), node.value
    elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
        yield node.target, node.iter
    elif isinstance(node, ast.withitem) and node.optional_vars is not None:
        yield node.optional_vars, node.context_expr
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr in SINK_METHODS and dotted(node.func.value):
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            yield node.func.value, arg


def names_read(expr: ast.AST) -> frozenset[str]:
    """Every plain and dotted name ``expr`` reads (``self.loss`` gives ``self``, ``self.loss``)."""
    cached = getattr(expr, "_spml_names_read", None)
    if cached is None:
        cached = frozenset(name for node in ast.walk(expr)
                           if isinstance(node, ast.Name | ast.Attribute)
                           for name in [dotted(node)] if name)
        expr._spml_names_read = cached  # type: ignore[attr-defined]
    return cached


def maximal_names(expr: ast.AST) -> list[ast.AST]:
    """The longest dotted names read in ``expr`` (``self.loss``, not also ``self``)."""
    if dotted(expr):
        return [expr]
    inner = {id(n.value) for n in ast.walk(expr) if isinstance(n, ast.Attribute)}
    return [n for n in ast.walk(expr) if isinstance(n, ast.Name | ast.Attribute)
            and dotted(n) and id(n) not in inner]


def mentions(expr: ast.AST, names: set[str] | frozenset[str]) -> bool:
    """True when ``expr`` reads one of ``names`` (plain or dotted like ``self.loss``)."""
    return bool(names) and not names_read(expr).isdisjoint(names)


def in_loop(source: SourceFile, node: ast.AST) -> bool:
    """``node`` runs inside a loop of its own function (or module)."""
    return innermost_loop(source, node) is not None


def innermost_loop(source: SourceFile, node: ast.AST) -> ast.AST | None:
    """The nearest loop around ``node`` within its function (None past a def/lambda)."""
    for parent in source.ancestors(node):
        if isinstance(parent, ast.For | ast.While | ast.AsyncFor):
            return parent
        if isinstance(parent, SCOPES):
            return None
    return None


def _same_iteration(source: SourceFile, binding: Binding, at: ast.AST) -> bool:
    """True when ``binding`` is (re)made in the iteration that reaches ``at`` first: it is
    the loop header of ``at``'s loop, or sits in the same innermost loop before it."""
    loop = innermost_loop(source, at)
    return binding.node is loop or innermost_loop(source, binding.node) is loop


def _reaching_branches(source: SourceFile, before: list[Binding],
                       enclosing: set[ast.AST]) -> list[Binding]:
    """The bindings that may reach a use: walking back from the last one, every binding in
    a branch (``if``/``try``) the use is not inside, up to the first unconditional one."""
    reaching: list[Binding] = []
    for binding in reversed(before):
        reaching.append(binding)
        branches = [p for p in source.ancestors(binding.node)
                    if isinstance(p, ast.If | ast.Try | ast.IfExp | ast.Match)
                    and p not in enclosing]
        if not branches and binding.kind != "aug":  # `x //= 8` also needs what x was
            break
    return reaching
