"""What one training-loop iteration does, in order: backward, optimizer and scheduler steps,
gradient clearing; and which optimizer/scheduler object each call acts on.

Shared by the optimizer-order checks (L0-05, L0-27, L0-32). Calls to the project's own
functions are followed (a ``train_step(model, opt, batch)`` is read as if inlined, with its
parameters bound to the caller's arguments), so a loop is judged by what one of its
iterations runs, not by which file the statements happen to live in.
"""

from __future__ import annotations

import ast
import weakref
from dataclasses import dataclass, field

from spml.toolkit.checks._local_optim import local_optimizer_class
from spml.toolkit.checks.flow import SCOPES, Binding, Origin, prepared_element, scope_nodes
from spml.toolkit.checks.patterns import (
    STEP_DEPTH,
    Facts,
    is_optimizer_name,
    is_scheduler_name,
)
from spml.toolkit.checks.project import SourceFile, dotted

LOOPS = (ast.For, ast.While, ast.AsyncFor)
PARAM_METHODS = ("parameters", "named_parameters")
BRANCHES = (ast.If, ast.For, ast.While, ast.AsyncFor, ast.ExceptHandler, ast.match_case,
            ast.IfExp, *SCOPES, ast.ClassDef)
SCALERS = ("GradScaler", "ShardedGradScaler")
_EVENTS: weakref.WeakKeyDictionary[Facts, dict[int, list[Event]]] = weakref.WeakKeyDictionary()
_CALLERS: weakref.WeakKeyDictionary[Facts, dict[int, list]] = weakref.WeakKeyDictionary()
_STEPS: weakref.WeakKeyDictionary[Facts, dict[int, bool]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Ref:
    """The object a name stands for: ``kind`` is opt / sched / scaler / other; ``keys``
    identify it (the construction call when ``concrete``, else the name in its scope)."""

    kind: str
    keys: frozenset[tuple]
    concrete: bool
    label: str
    made_at: tuple[str, ...] = ()  # "file.py:LINE" of the constructions


@dataclass(frozen=True)
class Event:
    """One call of interest in an iteration: backward / step / zero / sched."""

    kind: str
    source: SourceFile
    node: ast.AST
    ref: Ref | None
    guards: tuple[tuple[int, object], ...] = field(default=())  # (if/case id, branch)
    closure: bool = False  # optimizer.step(closure): the closure runs backward itself


def exclusive(a: Event, b: Event) -> bool:
    """True when ``a`` and ``b`` sit in different branches of the same ``if``."""
    mine = dict(a.guards)
    return any(k in mine and mine[k] != v for k, v in b.guards)


def same_object(a: Ref | None, b: Ref | None) -> bool:
    return a is not None and b is not None and (bool(a.keys & b.keys) or a.label == b.label)


# ---- which object a name is ----------------------------------------------------------------
def kind_of_call(name: str | None) -> str | None:
    if is_scheduler_name(name):
        return "sched"
    if is_optimizer_name(name):
        return "opt"
    if name and name.rsplit(".", 1)[-1] in SCALERS:
        return "scaler"
    return None


def kind_of(facts: Facts, source: SourceFile, call: ast.Call) -> str | None:
    """``kind_of_call`` for a construction, counting the project's own optimizer classes."""
    kind = kind_of_call(facts.project.call_name(source, call))
    if kind is None and local_optimizer_class(facts, source, call) is not None:
        return "opt"
    return kind


def _kind_by_name(name: str) -> str:
    last = name.rsplit(".", 1)[-1].lower()
    if "sched" in last or last.startswith("lr_"):
        return "sched"
    if "scaler" in last:
        return "scaler"
    return "opt" if "opt" in last else "other"


def visible_bindings(facts: Facts, source: SourceFile, name: str, at: ast.AST) -> list[Binding]:
    """The bindings of ``name`` that can reach ``at``: those after the last one that always
    runs before it (``if``/``else`` branches both count), plus, inside a loop, those in the
    loop (a rebinding after the loop cannot reach it)."""
    scope = source.scope_of(at)
    same_scope = True
    while True:
        found = [b for b in facts.flow.bindings(scope).get(name, []) if b.kind != "aug"]
        if found:
            break
        if scope is source.tree:
            return []
        scope, same_scope = source.scope_of(scope), False
    if not same_scope:
        return _since_dominating(source, found, scope, None)
    loop = outer_loop(source, at, scope)
    start = loop.lineno if loop is not None else getattr(at, "lineno", 0) + 1
    before = _since_dominating(source, [b for b in found if b.line < start], scope, at)
    if loop is not None:
        return before + [b for b in found if loop.lineno <= b.line <= (loop.end_lineno or 0)]
    return before or found


def _since_dominating(source: SourceFile, found: list[Binding], scope: ast.AST,
                      at: ast.AST | None) -> list[Binding]:
    """The trailing bindings back to (and including) the last unconditional one."""
    context = set(source.ancestors(at)) if at is not None else set()
    out: list[Binding] = []
    for binding in reversed(found):
        out.insert(0, binding)
        if not _conditional(source, binding.node, scope, context):
            break
    return out


def _conditional(source: SourceFile, node: ast.AST, scope: ast.AST,
                 context: set[ast.AST]) -> bool:
    """True when ``node`` sits in a branch or loop (of ``scope``) that ``at`` is not in."""
    for parent in source.ancestors(node):
        if parent is scope:
            return False
        if parent not in context and isinstance(parent, BRANCHES):
            return True
    return False


def outer_loop(source: SourceFile, node: ast.AST, scope: ast.AST) -> ast.AST | None:
    found = None
    for parent in source.ancestors(node):
        if parent is scope or isinstance(parent, SCOPES):
            break
        if isinstance(parent, LOOPS):
            found = parent
    return found


def constructions(facts: Facts, source: SourceFile, value: ast.AST) -> list[tuple[SourceFile,
                                                                                 ast.Call]]:
    """The optimizer/scheduler/scaler constructions behind an expression's value."""
    calls = facts.flow.producing_calls(Origin(source, value, "value"))
    return [(s, c) for s, c in calls if kind_of(facts, s, c)]


def ref_of(facts: Facts, source: SourceFile, expr: ast.AST,
           env: dict[str, Ref] | None = None, depth: int = 2) -> Ref | None:
    """What object ``expr`` is, as precisely as the dataflow can tell (None: not a name).
    A function parameter is followed to what the function's call sites pass."""
    name = dotted(expr)
    if name is None:
        made = constructions(facts, source, expr) if isinstance(expr, ast.Call) else []
        return _concrete(facts, made, ast.unparse(expr)[:30]) if made else None
    if env and name in env:
        return env[name]
    if name.startswith("self.") and name.count(".") == 1:
        values = _self_assignments(source, expr, name)
    else:
        values = [(source, b) for b in visible_bindings(facts, source, name, expr)]
    made, passed, unresolved = [], [], not values
    for src, binding in values:
        if binding.kind == "param":
            sites = call_site_args(facts, src, binding.node) if depth else None
            refs = [ref_of(facts, s, a, None, depth - 1) for s, a in sites or []]
            passed += refs
            unresolved |= not refs or not all(r is not None and r.concrete for r in refs)
            continue
        found = constructions(facts, src, prepared_element(binding)) if binding.value else []
        made += found
        unresolved |= not found
    if (made or passed) and not unresolved:
        return _merge([_concrete(facts, made, name)] if made else [], passed, name)
    scope = source.class_of(expr) if name.startswith("self.") else source.scope_of(expr)
    return Ref(_kind_by_name(name), frozenset({("name", id(scope), name)}), False, name)


def _concrete(facts: Facts, made: list[tuple[SourceFile, ast.Call]], label: str) -> Ref:
    kinds = {kind_of(facts, s, c) for s, c in made}
    kind = kinds.pop() if len(kinds) == 1 else "other"
    return Ref(kind or "other", frozenset(("call", id(c)) for _, c in made), True, label,
               tuple(sorted({f"{s.path.name}:{c.lineno}" for s, c in made})))


def _merge(own: list[Ref], passed: list[Ref | None], label: str) -> Ref:
    refs = [r for r in [*own, *passed] if r is not None]
    kinds = {r.kind for r in refs}
    return Ref(kinds.pop() if len(kinds) == 1 else "other",
               frozenset().union(*(r.keys for r in refs)), True, label,
               tuple(sorted(set().union(*(r.made_at for r in refs)))))


def _self_assignments(source: SourceFile, expr: ast.AST, name: str
                      ) -> list[tuple[SourceFile, Binding]]:
    """``self.opt = ...`` anywhere in the class of ``expr``, as bindings."""
    cls = source.class_of(expr)
    if cls is None:
        return []
    out = []
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign) and any(dotted(t) == name for t in node.targets):
            out.append((source, Binding(name, node.lineno, "assign", node.value, node)))
    return out


# ---- one iteration, in order -----------------------------------------------------------
class _Walker:
    """Lists the events of a statement list in execution order, inlining local calls."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.backward = {id(c) for _, c in facts.backward_calls}
        self.out: list[Event] = []

    def stmts(self, source: SourceFile, body: list[ast.stmt], ctx: tuple) -> None:
        for stmt in body:
            self.stmt(source, stmt, ctx)

    def stmt(self, source: SourceFile, stmt: ast.stmt, ctx: tuple) -> None:
        env, guards, stack = ctx
        if isinstance(stmt, (*SCOPES, ast.ClassDef)):
            return
        if isinstance(stmt, ast.If):
            self.expr(source, stmt.test, ctx)
            self.stmts(source, stmt.body, (env, (*guards, (id(stmt), True)), stack))
            self.stmts(source, stmt.orelse, (env, (*guards, (id(stmt), False)), stack))
        elif isinstance(stmt, ast.Try | ast.TryStar):
            self.stmts(source, stmt.body, ctx)
            for handler in stmt.handlers:
                self.stmts(source, handler.body, (env, (*guards, (id(handler), True)), stack))
            self.stmts(source, stmt.orelse + stmt.finalbody, ctx)
        elif isinstance(stmt, ast.Match):
            for case in stmt.cases:
                self.stmts(source, case.body, (env, (*guards, (id(stmt), id(case))), stack))
        elif hasattr(stmt, "body"):
            for part in ("iter", "test", "items"):
                for node in _as_list(getattr(stmt, part, None)):
                    self.expr(source, node, ctx)
            self.stmts(source, stmt.body, ctx)
            self.stmts(source, getattr(stmt, "orelse", []), ctx)
        else:
            self.expr(source, stmt, ctx)

    def expr(self, source: SourceFile, node: ast.AST, ctx: tuple) -> None:
        """Post-order: arguments run before the call that takes them."""
        if isinstance(node, (*SCOPES, ast.ClassDef)):
            return
        if isinstance(node, ast.Assign) and _clears_grad(node):
            self.out.append(Event("zero", source, node, None, ctx[1]))
            return
        for child in ast.iter_child_nodes(node):
            self.expr(source, child, ctx)
        if isinstance(node, ast.Call):
            self.call(source, node, ctx)

    def call(self, source: SourceFile, call: ast.Call, ctx: tuple) -> None:
        env, guards, stack = ctx
        if id(call) in self.backward:
            self.out.append(Event("backward", source, call, None, guards))
            return
        func = call.func
        if isinstance(func, ast.Attribute):
            event = self._method_event(source, call, func, env)
            if event is not None:
                self.out.append(Event(event[0], source, call, event[1], guards, event[2]))
                if event[0] == "step":
                    self._step_clears(source, call, guards)
                return
        target = self.facts.flow.callee(source, call)
        if target is None or id(target[1]) in stack or len(stack) > STEP_DEPTH:
            return
        callee_source, func_def = target
        inner_env = self._bind(source, call, func_def, env)
        self.stmts(callee_source, func_def.body, (inner_env, guards, (*stack, id(func_def))))

    def _step_clears(self, source: SourceFile, call: ast.Call, guards: tuple) -> None:
        """A project's own optimizer whose ``step()`` clears the gradients it applied
        (modded-nanogpt's ``NorMuonAndAdam.step`` ends with ``param.grad = None``): the
        clearing runs right after the step."""
        flow = self.facts.flow
        target = flow.callee(source, call)
        name = dotted(call.func.value) if isinstance(call.func, ast.Attribute) else None
        if target is None and name and name.startswith("self.") and name.count(".") == 1:
            for src, binding in _self_assignments(source, call, name):  # self.opt = Opt(...)
                for made_in, made in flow.producing_calls(Origin(src, binding.value, "value"), 1):
                    target = target or flow.method_of(
                        made_in, self.facts.project.call_name(made_in, made), call.func.attr)
        if target is None:
            return
        for node in scope_nodes(target[1]):
            if isinstance(node, ast.Assign) and _clears_grad(node) or (
                    isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and (node.func.attr == "zero_grad" or node.func.attr == "zero_"
                         and (dotted(node.func.value) or "").endswith(".grad"))):
                self.out.append(Event("zero", target[0], node, None, guards))
                return

    def _method_event(self, source: SourceFile, call: ast.Call, func: ast.Attribute,
                      env: dict[str, Ref]) -> tuple[str, Ref | None, bool] | None:
        """(kind, object, closure) for ``x.zero_grad()``, ``p.grad.zero_()``,
        ``optimizer.step()``, ``scaler.step(optimizer)``, ``scheduler.step()``."""
        if func.attr == "zero_grad":
            return "zero", ref_of(self.facts, source, func.value, env), False
        if func.attr in ("zero_", "detach_") and (dotted(func.value) or "").endswith(
                (".grad", ".grad.data")):
            return "zero", None, False
        if func.attr != "step":
            return None
        ref = ref_of(self.facts, source, func.value, env)
        if ref is None:
            return None
        if ref.kind == "scaler" and call.args:
            return "step", ref_of(self.facts, source, call.args[0], env), False
        if ref.kind == "opt":
            return "step", ref, bool(call.args or call.keywords)
        return ("sched", ref, False) if ref.kind == "sched" else None

    def _bind(self, source: SourceFile, call: ast.Call, func_def: ast.FunctionDef,
              env: dict[str, Ref]) -> dict[str, Ref]:
        params = [a.arg for a in func_def.args.args]
        if params and params[0] in ("self", "cls") and isinstance(call.func, ast.Attribute):
            params = params[1:]
        pairs = list(zip(params, call.args, strict=False))
        pairs += [(k.arg, k.value) for k in call.keywords if k.arg]
        bound = {}
        for param, arg in pairs:
            if isinstance(arg, ast.Starred):
                break
            ref = ref_of(self.facts, source, arg, env)
            if ref is not None:
                bound[param] = ref
        return bound


def _as_list(value: object) -> list[ast.AST]:
    if value is None:
        return []
    if isinstance(value, list):
        return [v.context_expr if isinstance(v, ast.withitem) else v for v in value]
    return [value] if isinstance(value, ast.AST) else []


def _clears_grad(node: ast.Assign) -> bool:
    """``p.grad = None``: the manual form of ``zero_grad(set_to_none=True)``."""
    return isinstance(node.value, ast.Constant) and node.value.value is None and any(
        isinstance(t, ast.Attribute) and t.attr == "grad" for t in node.targets)


def loop_events(facts: Facts, source: SourceFile, loop: ast.AST) -> list[Event]:
    """The events of one iteration of ``loop`` in execution order (guards relative to it)."""
    cache = _EVENTS.setdefault(facts, {})
    if id(loop) not in cache:
        walker = _Walker(facts)
        walker.stmts(source, loop.body, ({}, (), (id(source.scope_of(loop)),)))
        cache[id(loop)] = walker.out
    return cache[id(loop)]


def function_steps(facts: Facts, source: SourceFile, func: ast.AST) -> bool:
    """True when one call of ``func`` steps an optimizer (its calls inlined)."""
    cache = _STEPS.setdefault(facts, {})
    if id(func) not in cache:
        body = getattr(func, "body", None)
        walker = _Walker(facts)
        own = [n for n in scope_nodes(func) if isinstance(n, ast.Call)
               and isinstance(n.func, ast.Attribute) and n.func.attr == "step"]
        if any((walker._method_event(source, n, n.func, {}) or ("",))[0] == "step"
               for n in own):
            cache[id(func)] = True  # the common case, without walking its calls
        else:
            if isinstance(body, list):
                walker.stmts(source, body, ({}, (), (id(func),)))
            cache[id(func)] = any(e.kind == "step" for e in walker.out)
    return cache[id(func)]


def step_loops(facts: Facts) -> list[tuple[SourceFile, ast.AST]]:
    """The loops that run one optimizer step per iteration: each training loop, or, when
    its body never steps (an accumulation micro-loop), the nearest enclosing loop that does."""
    found: dict[int, tuple[SourceFile, ast.AST]] = {}
    for loop in facts.training_loops:
        source = loop.source
        scope = source.scope_of(loop.loop)
        candidates = [loop.loop] + [p for p in _until(source, loop.loop, scope)
                                    if isinstance(p, LOOPS)]
        for candidate in candidates:
            if any(e.kind == "step" for e in loop_events(facts, source, candidate)):
                found.setdefault(id(candidate), (source, candidate))
                break
    return sorted(found.values(), key=lambda sl: (sl[0].display, sl[1].lineno))


def stepping_loops(facts: Facts) -> list[tuple[SourceFile, ast.AST]]:
    """Every loop of the project whose iteration (inlined) runs an optimizer step."""
    out = []
    for source, node in facts.project.walk():
        if isinstance(node, LOOPS) and any(e.kind == "step"
                                           for e in loop_events(facts, source, node)):
            out.append((source, node))
    return out


def _until(source: SourceFile, node: ast.AST, stop: ast.AST):
    for parent in source.ancestors(node):
        if parent is stop or isinstance(parent, SCOPES):
            return
        yield parent


# ---- parameters bound at call sites -------------------------------------------------------
def call_site_args(facts: Facts, source: SourceFile,
                   param: ast.AST) -> list[tuple[SourceFile, ast.AST]] | None:
    """What every call of the parameter's function passes for it; None if one is unknown."""
    func = source.parents.get(source.parents.get(param))
    if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef) \
            or param not in func.args.args:
        return None
    index = func.args.args.index(param)
    out = []
    for site_source, call in callers_of(facts, func):
        shift = 1 if func.args.args[0].arg == "self" and isinstance(call.func, ast.Attribute) \
            else 0
        given = next((k.value for k in call.keywords if k.arg == param.arg), None)
        if given is None and 0 <= index - shift < len(call.args):
            given = call.args[index - shift]
        if given is None or any(isinstance(a, ast.Starred) for a in call.args):
            return None
        out.append((site_source, given))
    return out


def callers_of(facts: Facts, func: ast.AST) -> list[tuple[SourceFile, ast.Call]]:
    """The project's call sites of one of its functions (the table is built once)."""
    if facts not in _CALLERS:
        table: dict[int, list] = {}
        for source, call in facts.project.calls:
            target = facts.flow.callee(source, call)
            if target is not None:
                table.setdefault(id(target[1]), []).append((source, call))
        _CALLERS[facts] = table
    return _CALLERS[facts].get(id(func), [])
