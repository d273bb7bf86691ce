"""L0-26: a GPU value is read on the host on every training step (``loss.item()`` ...)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import SINK_METHODS, scope_nodes, target_names
from spml.toolkit.checks.loss_logging import loss_expressions
from spml.toolkit.checks.patterns import Facts, TrainingLoop, loop_guarded
from spml.toolkit.checks.project import SourceFile, dotted

SYNC_METHODS = frozenset({"item", "cpu", "numpy", "tolist"})
SYNC_BUILTINS = frozenset({"float", "int", "bool"})
# Attributes that describe a tensor without reading its values.
METADATA = frozenset({"shape", "dtype", "device", "ndim", "requires_grad", "is_cuda", "grad_fn",
                      "size", "dim", "numel", "element_size", "nelement"})
# Calls whose result is no longer a device tensor (methods; builtins).
HOST_METHODS = SYNC_METHODS | {"__len__", "__repr__", "__str__"}
HOST_BUILTINS = SYNC_BUILTINS | {"len", "str", "repr", "format", "isinstance", "round"}
GRAD_NORMS = frozenset({"clip_grad_norm_", "clip_grad_norm", "get_total_norm"})
MODEL_WORDS = ("model", "net", "criterion", "loss_fn", "loss_func", "encoder", "decoder")


class HostSyncInStep(Check):
    """Checks that the training step does not copy GPU values to the host on every step.

    ## What it does
    Inside a training step (the body of a step loop, or a function it calls every step),
    flags ``.item()``, ``.cpu()``, ``.numpy()``, ``.tolist()``, ``float(...)``/``int(...)``
    and ``print(...)`` of a tensor that comes from the model, the criterion or the loss,
    ``if``/``assert`` tests on such a tensor (``if torch.isnan(loss):``) and
    ``torch.cuda.synchronize()``, unless they sit under a logging cadence such as
    ``if step % log_interval == 0:``. Values from the DataLoader and plain Python numbers
    are not flagged.

    ## Why is this bad?
    CUDA runs asynchronously: the Python loop normally queues the next step's kernels while
    the GPU is still busy. Reading a value on the host waits until every queued kernel has
    finished, so the GPU idles while Python prepares the next step. One ``loss.item()`` per
    step can cost several percent of throughput on fast GPUs, more with small models.

    ## Example
    ```python
    for step, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    ```

    ## Use instead
    ```python
    for step, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        if step % log_interval == 0:
            losses.append(loss.item())
    ```

    ## References
    - https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html#avoid-unnecessary-cpu-gpu-synchronization
    """

    id = "L0-26"
    name = "host-sync-in-step"
    severity = "warning"
    message = "a GPU value is copied to the host on every step, stalling the GPU"
    fix = "Read GPU values only every N steps (if step % log_interval == 0) or after the loop"
    condition = "training loop"
    runtime_note = "the throughput cost shows in L1 as lower MFU and GPU activity"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.training_loops else not_applicable("no training loop")

    def run(self, facts: Facts) -> Iterator[Finding]:
        seen: set[int] = set()
        for source, scope, stop in _step_regions(facts):
            tensors = _tensor_names(facts, source, scope)
            for node in scope_nodes(scope):
                if id(node) in seen or not _every_step(facts, source, node, stop):
                    continue
                text = _sync_text(facts, source, node, tensors)
                if text:
                    seen.add(id(node))
                    yield self.finding(source, node, text)


def _step_regions(facts: Facts) -> Iterator[tuple[SourceFile, ast.AST, ast.AST | None]]:
    """(source, scope, stop): the scopes holding step loops, and the step functions called
    unguarded from a step loop (``stop`` is None there: the whole function runs per step)."""
    scopes: dict[int, tuple[SourceFile, ast.AST]] = {}
    called: dict[int, tuple[SourceFile, ast.AST]] = {}
    for lp in facts.training_loops:
        scopes[id(lp.scope)] = (lp.source, lp.scope)
        for node in lp.body_nodes():
            if isinstance(node, ast.Call) and not _guarded_in(lp, node):
                target = facts.flow.callee(lp.source, node)
                if target is not None:
                    called[id(target[1])] = target
    for source, scope in scopes.values():
        yield source, scope, scope
    for key, (source, func) in called.items():
        if key not in scopes:
            yield source, func, None


def _guarded_in(lp: TrainingLoop, node: ast.AST) -> bool:
    return loop_guarded(lp.source, node, lp.loop)


def _every_step(facts: Facts, source: SourceFile, node: ast.AST, stop: ast.AST | None) -> bool:
    """True when ``node`` runs on every step: in a step loop (its nearest loop) and not under
    a cadence guard, or anywhere unguarded in a step function."""
    if stop is None:
        return not loop_guarded(source, node, source.scope_of(node))
    lp = facts.step_loop_of(source, node)
    return lp is not None and not loop_guarded(source, node, lp.loop)


def _tensor_names(facts: Facts, source: SourceFile, scope: ast.AST) -> set[str]:
    """Names in ``scope`` that hold device tensors made by the model or the loss, followed
    through assignments but not through ``.item()``/``float()`` (those give numbers)."""
    tensors: set[str] = set()
    for src, call in facts.backward_calls:
        if src is source and src.scope_of(call) is scope:
            tensors.update(n for e in loss_expressions(src, call, facts)
                           if (n := dotted(e)))
    nodes = list(scope_nodes(scope))
    changed = True
    while changed:
        changed = False
        for node in nodes:
            for target, value in _flows(node):
                if not is_tensor(facts, source, value, tensors):
                    continue
                new = set(target_names(target)) - tensors
                if new:
                    tensors |= new
                    changed = True
    return tensors


def _flows(node: ast.AST) -> Iterator[tuple[ast.AST, ast.AST]]:
    if isinstance(node, ast.Assign):
        for target in node.targets:
            yield (target.value if isinstance(target, ast.Subscript) else target), node.value
    elif isinstance(node, ast.AugAssign | ast.AnnAssign) and node.value is not None:
        target = node.target
        yield (target.value if isinstance(target, ast.Subscript) else target), node.value
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr in SINK_METHODS and dotted(node.func.value):
        for arg in node.args:
            yield node.func.value, arg


def is_tensor(facts: Facts, source: SourceFile, expr: ast.AST, tensors: set[str]) -> bool:
    """True when ``expr`` evaluates to a device tensor derived from the model or the loss."""
    if isinstance(expr, ast.Name | ast.Attribute) and dotted(expr) in tensors:
        return True
    if isinstance(expr, ast.Attribute):
        return expr.attr not in METADATA and is_tensor(facts, source, expr.value, tensors)
    if isinstance(expr, ast.Subscript):
        return is_tensor(facts, source, expr.value, tensors)
    if isinstance(expr, ast.BinOp):
        return any(is_tensor(facts, source, s, tensors) for s in (expr.left, expr.right))
    if isinstance(expr, ast.UnaryOp):
        return is_tensor(facts, source, expr.operand, tensors)
    if isinstance(expr, ast.Compare):
        if all(isinstance(op, ast.Is | ast.IsNot | ast.In | ast.NotIn) for op in expr.ops):
            return False  # ``loss is None`` reads no tensor value
        return any(is_tensor(facts, source, s, tensors) for s in [expr.left, *expr.comparators])
    if isinstance(expr, ast.BoolOp):
        return any(is_tensor(facts, source, s, tensors) for s in expr.values)
    if isinstance(expr, ast.Call):
        return _tensor_call(facts, source, expr, tensors)
    return False


def _tensor_call(facts: Facts, source: SourceFile, call: ast.Call, tensors: set[str]) -> bool:
    func = call.func
    name = facts.project.call_name(source, call) or ""
    if name.rsplit(".", 1)[-1] in GRAD_NORMS:
        return True  # the total gradient norm is a device tensor
    if isinstance(func, ast.Attribute):
        if func.attr in HOST_METHODS or func.attr in METADATA:
            return False
        if is_tensor(facts, source, func.value, tensors):
            return True  # ``loss.detach()``, ``logits.argmax(-1)``
    if isinstance(func, ast.Name) and name in HOST_BUILTINS:
        return False
    if name.startswith("torch.") and not name.startswith("torch.cuda."):
        args = [*call.args, *(k.value for k in call.keywords)]
        return any(is_tensor(facts, source, a, tensors) for a in args) \
            or name.startswith("torch.nn.functional.")
    return _is_model_call(facts, source, call)


def _is_model_call(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    """``model(x)``, ``self.net(x)``, ``criterion(out, y)``: a call of an ``nn.Module``."""
    if not isinstance(call.func, ast.Name | ast.Attribute):
        return False
    made = [n for _, n in facts.flow.origin_calls(source, call.func)]
    if any(n.startswith("torch.nn.") or facts.project.is_module_class(n) for n in made):
        return True
    last = (dotted(call.func) or "").rsplit(".", 1)[-1].lower()
    return any(last == w or last.endswith("_" + w) for w in MODEL_WORDS)


def _sync_text(facts: Facts, source: SourceFile, node: ast.AST, tensors: set[str]) -> str | None:
    """The message for a host sync at ``node``, or None."""
    if isinstance(node, ast.If | ast.While | ast.Assert) \
            and is_tensor(facts, source, node.test, tensors):
        return f"`{_short(node.test)}` branches on a GPU value, forcing a sync on every step"
    if not isinstance(node, ast.Call):
        return None
    name = facts.project.call_name(source, node) or ""
    func = node.func
    if name == "torch.cuda.synchronize":
        return "`torch.cuda.synchronize()` stalls the host on every step"
    if isinstance(func, ast.Attribute) and func.attr in SYNC_METHODS \
            and is_tensor(facts, source, func.value, tensors):
        return f"`{_short(node)}` forces a GPU sync on every step"
    if name in SYNC_BUILTINS | {"print"} and any(
            is_tensor(facts, source, a, tensors) or _formats_tensor(facts, source, a, tensors)
            for a in node.args):
        return f"`{_short(node)}` forces a GPU sync on every step"
    return None


def _formats_tensor(facts: Facts, source: SourceFile, expr: ast.AST, tensors: set[str]) -> bool:
    return isinstance(expr, ast.JoinedStr) and any(
        isinstance(v, ast.FormattedValue) and is_tensor(facts, source, v.value, tensors)
        for v in expr.values)


def _short(node: ast.AST) -> str:
    """The node's source, cut to 40 characters; a method call keeps its end (``....cpu()``)."""
    text = ast.unparse(node)
    if len(text) <= 40:
        return text
    method = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    return "..." + text[-37:] if method else text[:37] + "..."
