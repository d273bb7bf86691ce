"""L0-17: a mixture-of-experts layer without load balancing, or dispatching token by token."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import scope_nodes, target_names
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

MOE_WORDS = re.compile(r"expert|moe|rout|(?<!aggre)gat(e|ing)", re.IGNORECASE)
BALANCE_WORDS = re.compile(r"aux|balanc|z_loss|zloss|lb_loss|router_loss|load_loss",
                           re.IGNORECASE)
# top-k in these methods samples tokens at inference, it does not route.
SAMPLING_METHODS = re.compile(r"generat|sampl|decode|beam", re.IGNORECASE)
TOKEN_NAMES = re.compile(r"tok|seq|^n_?t$|^t$|^num_t", re.IGNORECASE)
NOT_TOKENS = re.compile(r"expert|unique|top_?k|\bk\b|head", re.IGNORECASE)

Method = ast.FunctionDef | ast.AsyncFunctionDef


class MoeWithoutBalancing(Check):
    """Checks that a mixture-of-experts layer has a load-balancing loss and dispatches
    tokens in batches.

    ## What it does
    Applies when the project has a mixture-of-experts layer: a class named or holding
    attributes like ``experts``/``router``/``gate``/``moe`` whose methods route with
    ``topk``. Flags the router when nothing named like an auxiliary loss (``aux_loss``,
    ``load_balancing_loss``, ``z_loss``, ``balance``...) is ever used: returned, added to the
    loss or read anywhere. Also flags a Python loop over tokens in an MoE layer
    (``for t in range(x.size(0))``, ``for token in x``) instead of batched dispatch. Looping
    over experts and computing ``topk`` under ``torch.no_grad()`` are fine.

    ## Why is this bad?
    Without an auxiliary loss the router collapses onto a few experts: the others get no
    tokens and no gradient, capacity limits drop tokens, and the model trains like a much
    smaller dense one. A per-token Python loop launches kernels for every token, so the
    layer runs orders of magnitude slower than gathering each expert's tokens and running
    the expert once on them.

    ## Example
    ```python
    def forward(self, x):
        weights, idx = self.gate(x).softmax(-1).topk(self.k, dim=-1)
        out = torch.zeros_like(x)
        for t in range(x.size(0)):
            for w, e in zip(weights[t], idx[t]):
                out[t] += w * self.experts[e](x[t])
        return out
    ```

    ## Use instead
    ```python
    def forward(self, x):
        probs = self.gate(x).softmax(-1)
        weights, idx = probs.topk(self.k, dim=-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = (idx == e).nonzero(as_tuple=True)
            out.index_add_(0, token, weights[token, slot, None] * expert(x[token]))
        share = F.one_hot(idx, len(self.experts)).float().mean((0, 1))
        aux_loss = len(self.experts) * (share * probs.mean(0)).sum()  # Switch Transformer
        return out, aux_loss
    ```

    ## References
    - https://arxiv.org/abs/2101.03961 (Switch Transformer, load-balancing loss)
    - https://arxiv.org/abs/2202.08906 (ST-MoE, router z-loss)
    """

    id = "L0-17"
    name = "moe-without-balancing"
    severity = "warning"
    message = "MoE router has no auxiliary load-balancing loss"
    fix = "Add a load-balancing auxiliary loss (Switch-style) to the training loss"
    condition = "mixture of experts"
    runtime_note = "expert load and step time are measured in L1"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if _routers(facts) else not_applicable(
            "no mixture of experts (no expert/router class routing with topk)")

    def run(self, facts: Facts) -> Iterator[Finding]:
        routers = _routers(facts)
        if not _balanced(facts):
            source, cls = routers[0]
            yield self.finding(source, cls, f"MoE router `{cls.name}` has no auxiliary "
                               "load-balancing loss")
        for source, cls in _moe_classes(facts):
            for method in _methods(cls):
                for loop in _token_loops(facts, source, method):
                    yield self.finding(
                        source, loop, f"MoE layer `{cls.name}` loops over tokens in Python "
                        f"(`{_loop_text(loop)}`)", "Dispatch in batches: gather each "
                        "expert's tokens (index/nonzero), run the expert once, scatter back")


def _moe_classes(facts: Facts) -> list[tuple[SourceFile, ast.ClassDef]]:
    """Classes named for, or holding attributes named for, experts/routers/gates."""
    out = []
    for name in sorted(facts.project.classes):
        source, cls = facts.project.classes[name]
        attributes = [n for node in ast.walk(cls) if isinstance(node, ast.Assign)
                      for t in node.targets for n in target_names(t) if n.startswith("self.")]
        if MOE_WORDS.search(cls.name) or any(MOE_WORDS.search(a[5:]) for a in attributes):
            out.append((source, cls))
    return out


def _routers(facts: Facts) -> list[tuple[SourceFile, ast.ClassDef]]:
    """MoE classes that route: a ``topk`` outside a sampling method."""
    return [(s, c) for s, c in _moe_classes(facts)
            if any(_has_topk(facts, s, m) for m in _methods(c))]


def _methods(cls: ast.ClassDef) -> list[Method]:
    return [n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            and n.name != "__init__" and not SAMPLING_METHODS.search(n.name)]


def _has_topk(facts: Facts, source: SourceFile, method: Method) -> bool:
    for node in scope_nodes(method):
        if isinstance(node, ast.Call) and (
                facts.project.call_name(source, node) == "torch.topk"
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "topk")):
            return True
    return False


def _balanced(facts: Facts) -> bool:
    """Something named like an auxiliary loss is read, returned or computed by a call."""
    for _, node in facts.project.walk():
        if isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if BALANCE_WORDS.search(name):
                return True
    return False


def _token_loops(facts: Facts, source: SourceFile, method: Method) -> Iterator[ast.AST]:
    params = [a.arg for a in [*method.args.posonlyargs, *method.args.args,
                              *method.args.kwonlyargs] if a.arg != "self"]
    inputs = facts.flow.tainted(method, lambda n: False, frozenset(params))
    unpacked = _shape_names(method, inputs)
    for node in scope_nodes(method):
        if isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
            if any(_over_tokens(e, inputs, unpacked) for e in _iterables(node.iter)):
                yield node if hasattr(node, "lineno") else node.iter


def _iterables(expr: ast.AST) -> Iterator[ast.AST]:
    """What a loop really walks: the arguments of ``enumerate``/``zip``, recursively."""
    if isinstance(expr, ast.Call) and dotted(expr.func) in ("enumerate", "zip"):
        for arg in expr.args:
            yield from _iterables(arg)
    else:
        yield expr


def _over_tokens(expr: ast.AST, inputs: set[str], sizes: set[str]) -> bool:
    """``range(<token count>)`` or direct iteration over a tensor derived from the input."""
    if NOT_TOKENS.search(ast.unparse(expr)):
        return False
    if isinstance(expr, ast.Call) and dotted(expr.func) == "range" and expr.args:
        stop = expr.args[1] if len(expr.args) > 1 else expr.args[0]
        return _token_count(stop, inputs, sizes)
    name = dotted(expr)
    return name is not None and not name.startswith("self.") and name in inputs


def _token_count(expr: ast.AST, inputs: set[str], sizes: set[str]) -> bool:
    """``x.size(0)``, ``x.shape[0]``, ``len(x)``, ``x.numel()`` of an input-derived tensor,
    or a name unpacked from its leading dimensions (``B, T, C = x.shape``)."""
    if isinstance(expr, ast.Name):
        return expr.id in sizes or bool(TOKEN_NAMES.search(expr.id))
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Attribute) \
            and expr.value.attr == "shape":
        return _leading(expr.slice) and dotted(expr.value.value) in inputs
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) \
            and dotted(expr.func.value) in inputs:
        if expr.func.attr == "numel":
            return True
        return expr.func.attr == "size" and bool(expr.args) and _leading(expr.args[0])
    if isinstance(expr, ast.Call) and dotted(expr.func) == "len" and expr.args:
        return dotted(expr.args[0]) in inputs
    return False


def _leading(index: ast.AST) -> bool:
    """The leading (token or batch) dimension; later ones may be features or experts."""
    return isinstance(index, ast.Constant) and index.value == 0


def _shape_names(method: Method, inputs: set[str]) -> set[str]:
    """Names bound to leading dimensions of an input: ``B, T`` in ``B, T, C = x.shape``,
    ``n`` in ``n = x.size(0)``."""
    names: set[str] = set()
    for node in scope_nodes(method):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Tuple) and _is_shape_of(value, inputs):
            names.update(n for elt in target.elts[:-1] for n in target_names(elt))
        elif isinstance(target, ast.Name) and _token_count(value, inputs, names):
            names.add(target.id)
    return names


def _is_shape_of(value: ast.AST, inputs: set[str]) -> bool:
    if isinstance(value, ast.Attribute) and value.attr == "shape":
        return dotted(value.value) in inputs
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
        and value.func.attr == "size" and not value.args and dotted(value.func.value) in inputs


def _loop_text(loop: ast.AST) -> str:
    if isinstance(loop, ast.For | ast.AsyncFor):
        text = f"for {ast.unparse(loop.target)} in {ast.unparse(loop.iter)}"
    else:
        text = ast.unparse(loop)
    return text if len(text) <= 40 else text[:37] + "..."
