"""Which parameters an optimizer holds: its ``params`` argument traced to module parts.

Shared by L0-04 (does the optimizer cover the model?) and L0-13 (does freezing agree with
the optimizer's ``requires_grad`` filter?).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from spml.toolkit.checks._local_optim import params_keyword
from spml.toolkit.checks._optim import PARAM_METHODS, visible_bindings
from spml.toolkit.checks.flow import element_for, scope_nodes
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

MUTATORS = frozenset({"append", "extend", "insert", "add", "update", "add_param_group"})


@dataclass(frozen=True)
class Part:
    """Parameters of one module object: all of ``base`` (``attr`` None), of its submodule
    ``base.attr``, or of the children an index or slice of ``base`` picks (``attr`` is
    then ``"[1]"``, ``"[1:]"``, ``"[:-1:2]"``), or of a submodule's (``"net[:-1]"``), or
    the classifier timm's ``get_classifier()`` returns (``"get_classifier()"``);
    ``filtered`` when they went through a ``requires_grad`` filter."""

    source: SourceFile
    base: ast.AST
    attr: str | None
    filtered: bool = False


def optimizer_params(call: ast.Call, keyword: str = "params") -> ast.AST | None:
    """The params argument of an optimizer construction (first positional or ``params=``;
    a project's own optimizer class may name it otherwise, see ``params_keyword``)."""
    if call.args:
        return None if isinstance(call.args[0], ast.Starred) else call.args[0]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def traced_builds(facts: Facts, builds: list[tuple[SourceFile, ast.Call]]
                  ) -> list[tuple[SourceFile, ast.Call, list[Part] | None]]:
    """Each optimizer construction with the parts its params cover (None: not traced)."""
    resolver = ParamResolver(facts)
    out: list[tuple[SourceFile, ast.Call, list[Part] | None]] = []
    for source, call in builds:
        params = optimizer_params(call, params_keyword(facts, source, call))
        out.append((source, call, resolver.parts(source, params) if params is not None
                    else None))
    return out


def index_key(node: ast.AST) -> str | None:
    """``"[1]"``, ``"[-1]"``, ``"[1:]"``, ``"[::2]"`` for a constant index or slice."""
    if isinstance(node, ast.Slice):
        bounds = [_int(b) if b is not None else "" for b in (node.lower, node.upper, node.step)]
        if None in bounds:
            return None
        shown = bounds if bounds[2] != "" else bounds[:2]
        return "[" + ":".join(str(b) for b in shown) + "]"
    found = _int(node)
    return None if found is None else f"[{found}]"


def _int(node: ast.AST) -> int | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


class ParamResolver:
    """Resolves a params expression to the module parts it covers; None when unknown."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts

    def parts(self, source: SourceFile, expr: ast.AST, filtered: bool = False,
              depth: int = 8) -> list[Part] | None:
        if depth == 0:
            return None
        if isinstance(expr, ast.Call):
            return self._call(source, expr, filtered, depth)
        if isinstance(expr, ast.ListComp | ast.GeneratorExp | ast.SetComp):
            return self._comprehension(source, expr, filtered, depth)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return self._union(source, [expr.left, expr.right], filtered, depth)
        if isinstance(expr, ast.List | ast.Tuple):
            return self._union(source, expr.elts, filtered, depth)
        if isinstance(expr, ast.Dict):
            values = [v for k, v in zip(expr.keys, expr.values, strict=True)
                      if isinstance(k, ast.Constant) and k.value == "params"]
            return self._union(source, values, filtered, depth) if values else None
        if isinstance(expr, ast.Starred):
            return self.parts(source, expr.value, filtered, depth - 1)
        if dotted(expr) is not None:
            return self._name(source, expr, filtered, depth)
        return None

    def _union(self, source: SourceFile, exprs: list[ast.AST], filtered: bool,
               depth: int) -> list[Part] | None:
        out: list[Part] = []
        for expr in exprs:
            found = self.parts(source, expr, filtered, depth - 1)
            if found is None:
                return None
            out += found
        return out

    def _call(self, source: SourceFile, call: ast.Call, filtered: bool,
              depth: int) -> list[Part] | None:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in PARAM_METHODS:
            return _method_part(source, func.value, filtered)
        called = self.facts.project.call_name(source, call)
        if called in ("list", "tuple", "set", "itertools.chain") and not call.keywords:
            return self._union(source, call.args, filtered, depth)
        if called == "filter" and len(call.args) == 2 and _mentions_requires_grad(call.args[0]):
            return self.parts(source, call.args[1], True, depth - 1)
        return None

    def _comprehension(self, source: SourceFile, comp: ast.AST, filtered: bool,
                       depth: int) -> list[Part] | None:
        if len(comp.generators) != 1 or not isinstance(comp.elt, ast.Name):
            return None
        gen = comp.generators[0]
        names = [n.id for n in ast.walk(gen.target) if isinstance(n, ast.Name)]
        if not names or comp.elt.id != names[-1]:
            return None
        if gen.ifs and not all(_mentions_requires_grad(t) for t in gen.ifs):
            return None  # a selection by name or shape: deliberate, not ours to judge
        return self.parts(source, gen.iter, filtered or bool(gen.ifs), depth - 1)

    def _name(self, source: SourceFile, expr: ast.AST, filtered: bool,
              depth: int) -> list[Part] | None:
        name = dotted(expr)
        found = visible_bindings(self.facts, source, name, expr)
        if not found and name.count(".") == 1 and isinstance(expr, ast.Attribute):
            return [Part(source, expr.value, expr.attr, filtered)]  # model.cls_token
        if not found or any(b.kind != "assign" for b in found):
            return None
        if _mutated(source, source.scope_of(found[0].node), name):
            return None
        return self._union(source, [element_for(b) for b in found], filtered, depth)


def _method_part(source: SourceFile, owner: ast.AST, filtered: bool) -> list[Part] | None:
    """``model.parameters()``, ``model.head.parameters()``, ``model[1:].parameters()``,
    ``model.net[:-1].parameters()`` (attr ``"net[:-1]"``), timm's
    ``model.get_classifier().parameters()`` (attr ``"get_classifier()"``)."""
    if isinstance(owner, ast.Subscript) and isinstance(owner.value, ast.Name):
        key = index_key(owner.slice)  # an nn.Sequential's children, by position
        return None if key is None else [Part(source, owner.value, key, filtered)]
    if isinstance(owner, ast.Subscript) and isinstance(owner.value, ast.Attribute) \
            and isinstance(owner.value.value, ast.Name):
        key = index_key(owner.slice)  # children of an nn.Sequential attribute
        return None if key is None else [Part(source, owner.value.value,
                                              owner.value.attr + key, filtered)]
    if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Attribute) \
            and owner.func.attr == "get_classifier" and not owner.args \
            and not owner.keywords and isinstance(owner.func.value, ast.Name):
        return [Part(source, owner.func.value, "get_classifier()", filtered)]
    name = dotted(owner)
    if name is None or name.count(".") > 1:
        return None
    if "." not in name:
        return [Part(source, owner, None, filtered)]
    return [Part(source, owner.value, name.split(".")[1], filtered)]


def _mentions_requires_grad(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "requires_grad" for n in ast.walk(node))


def _mutated(source: SourceFile, scope: ast.AST, name: str) -> bool:
    """True when a list/dict of parameters grows after it was bound (append, +=, [k]=)."""
    for node in scope_nodes(scope):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in MUTATORS and dotted(node.func.value) == name:
            return True
        if isinstance(node, ast.AugAssign) and dotted(node.target) == name:
            return True
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Subscript) and dotted(t.value) == name for t in node.targets):
            return True
    return False
