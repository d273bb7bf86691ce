"""Gradient accumulation (shared by L0-10 and L0-11): where backward runs several times per
optimizer step, how many micro-steps that is, and the integer settings around it.

Accumulation is recognised three ways: ``backward()`` inside a micro-step loop
(``for micro_step in range(grad_accum_steps)``), an optimizer step gated by a modulo test
(``if (i + 1) % accum_steps == 0: optimizer.step()``) or a name containing ``accum``, and
Accelerate's ``with accelerator.accumulate(model):``. Constants are resolved by ``Constants``:
literals through assignments, argparse defaults, dataclass/config fields and keyword
arguments; anything it cannot pin to one number is ``None``.
"""

from __future__ import annotations

import ast
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from spml.toolkit.checks.flow import element_for, scope_nodes, target_names
from spml.toolkit.checks.patterns import Facts, is_accumulation_loop, is_optimizer_name
from spml.toolkit.checks.project import SourceFile, dotted

LOOPS = (ast.For, ast.While, ast.AsyncFor)
FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
Number = int | float


@dataclass(frozen=True)
class Accumulation:
    """One ``backward()`` that runs several times per optimizer step.

    ``steps`` is the expression counting the micro-steps (the ``range`` argument, the right
    operand of ``%``) in ``steps_source``, or None; ``kind`` is loop | gate | accelerate."""

    source: SourceFile
    backward: ast.Call
    kind: str
    steps: ast.AST | None = None
    steps_source: SourceFile | None = None


_CACHE: weakref.WeakKeyDictionary[Facts, dict[str, object]] = weakref.WeakKeyDictionary()


def cached(facts: Facts, key: str, make):
    """``make(facts)`` once per analysis (several checks and their applicability ask)."""
    table = _CACHE.setdefault(facts, {})
    if key not in table:
        table[key] = make(facts)
    return table[key]


def accumulations(facts: Facts) -> list[Accumulation]:
    """Every backward call that runs under gradient accumulation."""
    return cached(facts, "accumulations", _find_accumulations)


def constants(facts: Facts) -> Constants:
    """The project's ``Constants`` (its settings table is built once)."""
    return cached(facts, "constants", Constants)


def _find_accumulations(facts: Facts) -> list[Accumulation]:
    found = []
    for source, call in facts.backward_calls:
        hit = _accumulation_at(facts, source, call, call)
        if hit is None:
            hit = _accumulation_in_callers(facts, source, call)
        if hit is not None:
            found.append(hit)
    return found


def _accumulation_in_callers(facts: Facts, source: SourceFile,
                             call: ast.Call) -> Accumulation | None:
    # A step function (``def train_step(...): loss.backward()``) called from a micro-loop.
    scope = source.scope_of(call)
    if scope is source.tree:
        return None
    for caller_source, site in facts.project.calls:
        target = facts.flow.callee(caller_source, site)
        if target is not None and target[1] is scope:
            hit = _accumulation_at(facts, caller_source, site, call)
            if hit is not None:
                return Accumulation(source, call, hit.kind, hit.steps, hit.steps_source)
    return None


def _accumulation_at(facts: Facts, source: SourceFile, node: ast.AST,
                     backward: ast.Call) -> Accumulation | None:
    nearest: ast.AST | None = None
    for parent in source.ancestors(node):
        if isinstance(parent, FUNCS):
            break
        if isinstance(parent, ast.With | ast.AsyncWith) and any(
                _is_accelerate_accumulate(item.context_expr) for item in parent.items):
            return Accumulation(source, backward, "accelerate")
        if isinstance(parent, LOOPS):
            if is_accumulation_loop(parent):
                return Accumulation(source, backward, "loop", _range_count(parent), source)
            nearest = nearest or parent
    if nearest is None:
        return None
    gates = [g for g in scope_nodes(nearest) if isinstance(g, ast.If)
             and _gates_step(facts, source, g) and node not in set(ast.walk(g))]
    if not gates or _steps_every_iteration(facts, source, nearest):
        return None  # a GAN's ``if i % n_critic == 0: opt_g.step()`` is no accumulation
    return Accumulation(source, backward, "gate", _modulus(gates[0].test), source)


def _steps_every_iteration(facts: Facts, source: SourceFile, loop: ast.AST) -> bool:
    """An optimizer step in ``loop`` that no ``if`` guards."""
    for node in scope_nodes(loop):
        if is_optimizer_step(facts, source, node) and not any(
                isinstance(p, ast.If) for p in _until(source, node, loop)):
            return True
    return False


def _until(source: SourceFile, node: ast.AST, stop: ast.AST) -> Iterator[ast.AST]:
    for parent in source.ancestors(node):
        if parent is stop:
            return
        yield parent


def _is_accelerate_accumulate(expr: ast.AST) -> bool:
    return isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) \
        and expr.func.attr == "accumulate"


def _range_count(loop: ast.For) -> ast.AST | None:
    it = loop.iter
    if isinstance(it, ast.Call) and dotted(it.func) == "range" and it.args:
        return it.args[-1] if len(it.args) == 1 else None
    return None


def _gates_step(facts: Facts, source: SourceFile, gate: ast.If) -> bool:
    """``if (i + 1) % accum == 0: optimizer.step()`` or a test naming ``accum``."""
    names = [dotted(n) or "" for n in ast.walk(gate.test)
             if isinstance(n, ast.Name | ast.Attribute)]
    if _modulus(gate.test) is None and not any("accum" in n.lower() for n in names):
        return False
    return any(is_optimizer_step(facts, source, n) for stmt in gate.body for n in ast.walk(stmt))


def _modulus(test: ast.AST) -> ast.AST | None:
    for node in ast.walk(test):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            return node.right
    return None


def is_optimizer_step(facts: Facts, source: SourceFile, node: ast.AST) -> bool:
    """``optimizer.step()``, ``scaler.step(optimizer)``, ``opt.step()`` for an optimizer."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "step"):
        return False
    owner = (dotted(node.func.value) or "").lower()
    if "sched" in owner:
        return False
    if "optim" in owner or ("scaler" in owner and node.args):
        return True
    return facts.makes(source, node.func.value, is_optimizer_name)


# ---- constants ---------------------------------------------------------------------------
ARGPARSE = ("add_argument",)
FORWARDERS = ("int", "float", "round")


@dataclass(frozen=True)
class Candidate:
    """A place that may set the setting ``name``: ``value`` None means "set by something we
    cannot read" (a loop target, ``+=``, a required field), which makes the setting unknown."""

    source: SourceFile
    value: ast.AST | None
    anchor: ast.AST


class Constants:
    """Integer settings of a project, resolved statically and conservatively."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts

    @cached_property
    def table(self) -> dict[str, list[Candidate]]:
        """Setting name (last part of a dotted name) -> every place that may set it."""
        table: dict[str, list[Candidate]] = {}
        for source, node in self.facts.project.walk():
            for name, value in _settings(self.facts, source, node):
                table.setdefault(name, []).append(Candidate(source, value, node))
        return table

    def named(self, name: str) -> Number | None:
        """The one value every place that sets ``name`` agrees on, else None."""
        return self._named(name, frozenset())

    def _named(self, name: str, seen: frozenset[str]) -> Number | None:
        if name in seen or name not in self.table:
            return None
        values = set()
        for cand in self.table[name]:
            if cand.value is None:
                return None
            if _forwarded_name(cand.value) == name or _constructs(cand.value):
                continue  # ``batch_size = args.batch_size`` passes the setting on; and
                # ``self.dropout = nn.Dropout(p)`` is an object that shares the name
            value = self._value(cand.source, cand.value, seen | {name})
            if value is None:
                return None
            values.add(value)
        return values.pop() if len(values) == 1 else None

    def anchor(self, name: str) -> Candidate | None:
        """The first place that states ``name`` with a value of its own."""
        return next((c for c in self.table.get(name, []) if c.value is not None
                     and _forwarded_name(c.value) != name), None)

    def value(self, source: SourceFile, expr: ast.AST | None) -> Number | None:
        return None if expr is None else self._value(source, expr, frozenset())

    def _value(self, source: SourceFile, expr: ast.AST, seen: frozenset[str]) -> Number | None:
        if len(seen) > 8:
            return None
        if isinstance(expr, ast.Constant):
            ok = isinstance(expr.value, int | float) and not isinstance(expr.value, bool)
            return expr.value if ok else None
        if isinstance(expr, ast.Name):
            return self._local(source, expr, seen)
        name = _forwarded_name(expr)
        if name is not None:
            return self._named(name, seen)
        if isinstance(expr, ast.BinOp):
            return _arith(expr.op, self._value(source, expr.left, seen),
                          self._value(source, expr.right, seen))
        if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
            inner = self._value(source, expr.operand, seen)
            return None if inner is None else -inner
        if isinstance(expr, ast.Call):
            return self._call(source, expr, seen)
        return None

    def _local(self, source: SourceFile, expr: ast.Name, seen: frozenset[str]) -> Number | None:
        # A plain name: its own scope's binding first (``B = 16`` in this script), else the
        # project-wide setting of that name (an import, a global set elsewhere).
        scope = source.scope_of(expr)
        while True:
            found = self.facts.flow.bindings(scope).get(expr.id, [])
            if found:
                break
            if scope is source.tree:
                return self._named(expr.id, seen)
            scope = source.scope_of(scope)
        line = expr.lineno
        if any(b.kind != "assign" and b.line <= line for b in found):
            return None  # ``x //= w``, a loop target, a parameter: not a constant here
        before = [b for b in found if b.line <= line] or found
        values = {self._value(source, v, seen | {expr.id}) if _forwarded_name(v) != expr.id
                  else self._named(expr.id, seen | {expr.id})
                  for v in (element_for(b) for b in before[-1:]) if v is not None}
        return values.pop() if len(values) == 1 else None

    def _call(self, source: SourceFile, call: ast.Call, seen: frozenset[str]) -> Number | None:
        name = dotted(call.func) or ""
        args = [self._value(source, a, seen) for a in call.args]
        if name in FORWARDERS and len(args) == 1 and args[0] is not None:
            return int(args[0]) if name == "int" else args[0]
        if name in ("max", "min") and args and None not in args:
            return max(args) if name == "max" else min(args)
        if name.endswith("field"):
            default = next((k.value for k in call.keywords if k.arg == "default"), None)
            return None if default is None else self._value(source, default, seen)
        return None


def _arith(op: ast.operator, left: Number | None, right: Number | None) -> Number | None:
    if left is None or right is None:
        return None
    try:
        match op:
            case ast.Add():
                return left + right
            case ast.Sub():
                return left - right
            case ast.Mult():
                return left * right
            case ast.FloorDiv():
                return left // right
            case ast.Div():
                return left / right
            case ast.Mod():
                return left % right
            case ast.Pow() if abs(right) < 64:
                return left**right
    except ZeroDivisionError:
        return None
    return None


def _constructs(expr: ast.AST) -> bool:
    """``nn.Dropout(p)``, ``GPTConfig(...)``: a class call, which makes no number."""
    name = dotted(expr.func) if isinstance(expr, ast.Call) else None
    return bool(name) and name.rsplit(".", 1)[-1][:1].isupper()


def _forwarded_name(expr: ast.AST) -> str | None:
    """The setting an expression just reads: ``args.batch_size``, ``cfg["batch_size"]``,
    ``int(args.batch_size)`` -> ``batch_size`` (a plain name is not forwarded)."""
    if isinstance(expr, ast.Call) and dotted(expr.func) in FORWARDERS and len(expr.args) == 1:
        expr = expr.args[0]
    if isinstance(expr, ast.Attribute) and dotted(expr):
        return expr.attr
    if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Constant) \
            and isinstance(expr.slice.value, str) and dotted(expr.value):
        return expr.slice.value
    if isinstance(expr, ast.Name):
        return expr.id if expr.id != "self" else None
    return None


def _settings(facts: Facts, source: SourceFile, node: ast.AST
              ) -> Iterator[tuple[str, ast.AST | None]]:
    """(setting name, value expression or None) pairs that ``node`` contributes."""
    if isinstance(node, ast.Assign):
        for target in node.targets:
            yield from _target_settings(target, node)
    elif isinstance(node, ast.AnnAssign):
        yield from ((n, node.value) for n in _last_names(node.target))
    elif isinstance(node, ast.AugAssign | ast.For | ast.AsyncFor | ast.comprehension):
        yield from ((n, None) for n in _last_names(node.target))
    elif isinstance(node, ast.withitem) and node.optional_vars is not None:
        yield from ((n, None) for n in _last_names(node.optional_vars))
    elif isinstance(node, ast.arguments):
        yield from _parameter_settings(node)
    elif isinstance(node, ast.Dict):
        yield from ((k.value, v) for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant) and isinstance(k.value, str))
    elif isinstance(node, ast.Call):
        yield from _call_settings(facts, source, node)


def _target_settings(target: ast.AST, node: ast.Assign) -> Iterator[tuple[str, ast.AST | None]]:
    if isinstance(target, ast.Tuple | ast.List):
        value = node.value
        same = isinstance(value, ast.Tuple | ast.List) and len(value.elts) == len(target.elts)
        for i, elt in enumerate(target.elts):
            for name in _last_names(elt):
                yield name, value.elts[i] if same else None
        return
    for name in _last_names(target):
        yield name, node.value


def _last_names(target: ast.AST) -> list[str]:
    if isinstance(target, ast.Subscript):
        name = _forwarded_name(target)
        return [name] if name else []
    return [n.rsplit(".", 1)[-1] for n in target_names(target)]


def _parameter_settings(args: ast.arguments) -> Iterator[tuple[str, ast.AST | None]]:
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for arg, default in [*zip(positional, defaults, strict=True),
                         *zip(args.kwonlyargs, args.kw_defaults, strict=True)]:
        if arg.arg not in ("self", "cls"):
            yield arg.arg, default


def _call_settings(facts: Facts, source: SourceFile, call: ast.Call
                   ) -> Iterator[tuple[str, ast.AST | None]]:
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr in ARGPARSE:
        dest = _argparse_dest(call)
        if dest:
            default = next((k.value for k in call.keywords if k.arg == "default"), None)
            yield dest, default
        return
    name = facts.project.call_name(source, call) or ""
    local = facts.project.local_class(name) is not None or facts.flow.callee(source, call)
    if local or name in ("dict", "types.SimpleNamespace", "argparse.Namespace") \
            or name.endswith(("set_defaults", "TrainingArguments")):
        yield from ((k.arg, k.value) for k in call.keywords if k.arg)


def _argparse_dest(call: ast.Call) -> str | None:
    dest = next((k.value for k in call.keywords if k.arg == "dest"), None)
    if isinstance(dest, ast.Constant) and isinstance(dest.value, str):
        return dest.value
    flags = [a.value for a in call.args
             if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    long = [f for f in flags if f.startswith("--")] or flags
    return long[0].lstrip("-").replace("-", "_") if long else None
