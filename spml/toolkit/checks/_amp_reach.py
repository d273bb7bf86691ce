"""Whether what an fp16 ``autocast`` region computes is backpropagated (L0-02).

A GradScaler only matters for a loss computed under fp16 autocast and then backpropagated:
autocast around ``pipeline(prompt)`` in a validation function, or around a forward whose
output is only logged, needs none. The region's outputs (the names bound or filled inside the
``with`` block) are followed forward through the function's assignments, into the project's
functions that call ``backward()``, and out through ``return`` to the callers (three levels).

The answer is the backward calls the region reaches (empty: it provably reaches none), or
None when that cannot be told (an autocast used as a decorator, a function nobody in the
project calls, such as a module's ``forward``): then the check keeps reporting.
"""

from __future__ import annotations

import ast
import re

from spml.toolkit.checks._amp_enabled import FP16_NAMES
from spml.toolkit.checks._devices import Autocast, keyword, origins
from spml.toolkit.checks.flow import SCOPES, _flows, dotted, mentions, scope_nodes, target_names
from spml.toolkit.checks.patterns import BACKWARD_OWNERS, Facts
from spml.toolkit.checks.project import SourceFile

Backward = tuple[SourceFile, ast.Call]
# Functions that only run the model (validation, sampling): when nobody in the project calls
# one, its autocast is taken for inference rather than reported on a guess.
INFERENCE_NAME = re.compile(r"valid|eval|infer|predict|generat|sampl|test|visuali|demo",
                            re.IGNORECASE)
ACCELERATORS = frozenset({"accelerate.Accelerator", "accelerate.accelerator.Accelerator"})
FABRICS = frozenset({"lightning.Fabric", "lightning.fabric.Fabric", "lightning_fabric.Fabric"})
DEPTH = 3


def reached_backwards(facts: Facts, cast: Autocast) -> list[Backward] | None:
    """The backward calls that the outputs of ``cast``'s regions reach; None when unknown."""
    blocks = _regions(facts, cast)
    if not blocks:
        return None
    found: list[Backward] = []
    for source, block in blocks:
        reached = _block_reaches(facts, source, block)
        if reached is None:
            return None
        found.extend(reached)
    return found


def framework_scales(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    """``accelerator.backward(loss)`` (Fabric, a DeepSpeed engine): the framework scales an
    fp16 loss itself, unless it is built with a literal precision that is not fp16."""
    if not isinstance(call.func, ast.Attribute) or not call.args \
            or dotted(call.func.value) is None:
        return False
    receiver = call.func.value
    name = (dotted(receiver) or "").rsplit(".", 1)[-1].lower()
    made = {n for _, n in facts.flow.origin_calls(source, receiver)}
    if not (made & BACKWARD_OWNERS
            or any(w in name for w in ("accelerator", "fabric", "engine"))):
        return False
    return not _literal_non_fp16(facts)


def _literal_non_fp16(facts: Facts) -> bool:
    """An ``Accelerator(mixed_precision="no")`` / ``Fabric(precision="bf16-mixed")``."""
    for names, arg in ((ACCELERATORS, "mixed_precision"), (FABRICS, "precision")):
        for _, call in facts.project.calls_to(*names):
            value = keyword(call, arg)
            if isinstance(value, ast.Constant) and value.value is not None \
                    and str(value.value).lower() not in FP16_NAMES:
                return True
    return False


# ---- the regions of one autocast call -------------------------------------------------------
def _regions(facts: Facts, cast: Autocast) -> list[tuple[SourceFile, ast.With | ast.AsyncWith]]:
    """``with torch.autocast(...)`` itself, or every ``with ctx`` whose ``ctx`` it made
    (nanoGPT's ``ctx = torch.amp.autocast(...)``)."""
    parent = cast.source.parents.get(cast.call)
    if isinstance(parent, ast.withitem):
        block = cast.source.parents.get(parent)
        return [(cast.source, block)] if isinstance(block, ast.With | ast.AsyncWith) else []
    found = []
    for source, node in facts.project.walk():
        if not isinstance(node, ast.With | ast.AsyncWith):
            continue
        for item in node.items:
            if dotted(item.context_expr) is None:
                continue
            made = [o.node for o in origins(facts, source, item.context_expr) if o.node]
            if any(n is cast.call for m in made for n in ast.walk(m)):
                found.append((source, node))
                break
    return found


def _block_reaches(facts: Facts, source: SourceFile, block: ast.With | ast.AsyncWith
                   ) -> list[Backward] | None:
    inner = [n for stmt in block.body for n in (stmt, *scope_nodes(stmt))]
    direct = _backwards_in(facts, source, inner)
    seeds = {name for node in inner for target, _ in _flows(node)
             for name in target_names(target)}
    returned = any(isinstance(n, ast.Return | ast.Yield) for n in inner)
    rest = _names_reach(facts, source, source.scope_of(block), seeds, returned, DEPTH)
    return None if rest is None else direct + rest


def _backwards_in(facts: Facts, source: SourceFile, nodes: list[ast.AST],
                  depth: int = 2) -> list[Backward]:
    """Backward calls among ``nodes``, and in the project functions they call."""
    own = {c for s, c in facts.backward_calls if s is source}
    found = [(source, n) for n in nodes if n in own]
    if depth:
        for node in nodes:
            if isinstance(node, ast.Call) and node not in own:
                callee = facts.flow.callee(source, node)
                if callee is not None:
                    found += _backwards_in(facts, callee[0], list(scope_nodes(callee[1])),
                                           depth - 1)
    return found


def _names_reach(facts: Facts, source: SourceFile, scope: ast.AST, seeds: set[str],
                 returned: bool, depth: int) -> list[Backward] | None:
    """The backward calls that values derived from ``seeds`` in ``scope`` reach."""
    tainted = facts.flow.tainted(scope, None, frozenset(seeds)) if seeds else set()
    found: list[Backward] = []
    if tainted:
        found = _tainted_backwards(facts, source, scope, tainted)
        returned = returned or any(isinstance(n, ast.Return | ast.Yield) and n.value is not None
                                   and mentions(n.value, tainted) for n in scope_nodes(scope))
    if not returned or not isinstance(scope, SCOPES) or isinstance(scope, ast.Lambda):
        return found
    if not depth:
        return None
    callers = facts.flow.callers(scope)
    if not callers:
        return found if INFERENCE_NAME.search(scope.name) else None
    for src, call in callers:
        reached = _result_reaches(facts, src, call, depth - 1)
        if reached is None:
            return None
        found += reached
    return found


def _tainted_backwards(facts: Facts, source: SourceFile, scope: ast.AST,
                       tainted: set[str]) -> list[Backward]:
    """Backward calls of ``scope`` that read a tainted name, or that the project functions
    it hands a tainted value to run."""
    own = {c for s, c in facts.backward_calls if s is source}
    found: list[Backward] = []
    for node in scope_nodes(scope):
        if not isinstance(node, ast.Call):
            continue
        if node in own and mentions(node, tainted):
            found.append((source, node))
        elif any(mentions(a, tainted) for a in [*node.args, *node.keywords]):
            found += _backwards_in(facts, source, [node])
    return found + _attribute_backwards(facts, source, scope, tainted)


def _attribute_backwards(facts: Facts, source: SourceFile, scope: ast.AST,
                         tainted: set[str]) -> list[Backward]:
    """``self.loss`` set in one method and backpropagated in another of the same class."""
    attrs = {n for n in tainted if n.startswith("self.")}
    cls = source.class_of(scope)
    if not attrs or cls is None:
        return []
    return [(s, c) for s, c in facts.backward_calls
            if s is source and s.class_of(c) is cls and s.scope_of(c) is not scope
            and mentions(c, attrs)]


def _result_reaches(facts: Facts, source: SourceFile, call: ast.Call, depth: int
                    ) -> list[Backward] | None:
    """Where the value a call returns goes, in the caller."""
    stmt: ast.AST = call
    for parent in source.ancestors(call):
        if isinstance(parent, ast.Call):
            reached = _backwards_in(facts, source, [parent])  # backward(f(x)), step(f(x))
            if reached:
                return reached
        if isinstance(parent, ast.stmt):
            stmt = parent
            break
    seeds = {name for node in ast.walk(stmt) for target, value in _flows(node)
             if any(n is call for n in ast.walk(value)) for name in target_names(target)}
    returned = isinstance(stmt, ast.Return)
    return _names_reach(facts, source, source.scope_of(call), seeds, returned, depth)
