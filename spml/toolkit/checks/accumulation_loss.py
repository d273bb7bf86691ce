"""L0-11: under gradient accumulation the loss is not divided by the number of micro-steps."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._accumulation import (
    Accumulation,
    Constants,
    accumulations,
    constants,
)
from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import element_for
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

# Methods that keep a loss a loss (``loss.mean()``, ``loss.float()``): look through them.
KEEPS = frozenset({"mean", "sum", "float", "to", "squeeze", "contiguous", "half", "bfloat16"})
DIVIDES = frozenset({"div", "div_", "true_divide", "divide"})
SCALES = frozenset({"mul", "mul_", "multiply"})


class AccumulationLossUnscaled(Check):
    """Checks that each micro-step's loss is divided by the accumulation steps.

    ## What it does
    For every ``backward()`` that runs several times per optimizer step (a micro-step loop,
    an optimizer step gated by ``(i + 1) % accum_steps == 0``), follows the loss back to the
    model or criterion call and looks for a division on the way (``loss / accum_steps``,
    ``loss * (1 / accum_steps)``, ``loss.div(...)``, a sum-reduced loss divided by its token
    count). A loss that reaches ``backward()`` undivided is a finding, and so is a criterion
    with ``reduction="sum"`` that is never normalised. Accelerate's
    ``accelerator.accumulate(model)`` / ``accelerator.backward`` and DeepSpeed's engine
    scale the loss themselves and are trusted.

    ## Why is this bad?
    Gradients add up over the micro-steps, so an undivided mean loss gives gradients
    ``accum_steps`` times larger than one batch of the intended size: the effective learning
    rate is multiplied, gradient clipping clips at the wrong scale and results change when
    the accumulation count changes.

    ## Example
    ```python
    for micro_step in range(accum_steps):
        logits, loss = model(x, y)
        loss.backward()
    optimizer.step()
    ```

    ## Use instead
    ```python
    for micro_step in range(accum_steps):
        logits, loss = model(x, y)
        (loss / accum_steps).backward()
    optimizer.step()
    ```

    ## References
    - https://pytorch.org/docs/stable/notes/amp_examples.html#gradient-accumulation
    """

    id = "L0-11"
    name = "accumulation-loss-unscaled"
    severity = "warning"
    message = "loss is not divided by the accumulation steps; gradients grow with each micro-step"
    fix = "Divide the loss by the accumulation steps before backward(): (loss / accum).backward()"
    condition = "gradient accumulation"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if accumulations(facts) else not_applicable("no gradient accumulation")

    def run(self, facts: Facts) -> Iterator[Finding]:
        consts = constants(facts)
        for acc in accumulations(facts):
            if acc.kind == "accelerate" or _grads_divided(acc):
                continue
            if not _is_tensor_backward(acc.backward):
                continue
            tracer = _Tracer(facts)
            if tracer.trace(acc.source, _loss_operand(acc.backward), acc.backward) != "unscaled":
                continue
            yield self.finding(acc.source, acc.backward, _message(consts, acc, tracer.summed))


def _loss_operand(call: ast.Call) -> ast.AST:
    """``loss`` in ``loss.backward()``, ``(loss / k).backward()`` and
    ``scaler.scale(loss).backward()``."""
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else call
    if isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute) \
            and receiver.func.attr == "scale" and receiver.args:
        return receiver.args[0]
    return receiver


def _is_tensor_backward(call: ast.Call) -> bool:
    # ``accelerator.backward(loss)`` / ``engine.backward(loss)`` divide by the accumulation
    # steps the library was configured with.
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
    name = (dotted(receiver) or "").lower() if receiver is not None else ""
    return not any(w in name for w in ("accelerator", "engine", "fabric", "deepspeed"))


def _grads_divided(acc: Accumulation) -> bool:
    """``p.grad /= accum`` or ``p.grad.div_(accum)`` before the step also averages."""
    for node in ast.walk(acc.source.tree):
        if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Div) \
                and (dotted(node.target) or "").endswith(".grad"):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in DIVIDES \
                and (dotted(node.func.value) or "").endswith(".grad"):
            return True
    return False


def _message(consts: Constants, acc: Accumulation, summed: bool) -> str:
    steps = consts.value(acc.steps_source, acc.steps) if acc.steps_source else None
    if summed:
        return 'loss uses reduction="sum" and is never normalised; gradients scale with the batch'
    if isinstance(steps, int) and steps > 1:
        return (f"loss is not divided by the {steps} accumulation steps; "
                f"gradients are {steps}x too large")
    return AccumulationLossUnscaled.message


class _Tracer:
    """Follows a loss expression back to the calls that made it, through assignments,
    arithmetic and the project's own functions, and says whether a division lies on the
    way: scaled | unscaled | unknown."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.summed = False
        self._visiting: set[int] = set()

    def trace(self, source: SourceFile, expr: ast.AST, at: ast.AST, depth: int = 8) -> str:
        if depth == 0:
            return "unknown"
        if isinstance(expr, ast.BinOp):
            return self._binop(source, expr, at, depth)
        if isinstance(expr, ast.UnaryOp):
            return self.trace(source, expr.operand, at, depth - 1)
        if isinstance(expr, ast.Call):
            return self._call(source, expr, depth)
        if isinstance(expr, ast.Subscript):  # ``outputs["loss"]``
            return self.trace(source, expr.value, at, depth - 1)
        if isinstance(expr, ast.Name | ast.Attribute):
            return self._name(source, expr, at, depth)
        return "unknown"

    def _binop(self, source: SourceFile, expr: ast.BinOp, at: ast.AST, depth: int) -> str:
        if isinstance(expr.op, ast.Div | ast.FloorDiv):
            return "scaled"
        if isinstance(expr.op, ast.Mult):
            for side in (expr.left, expr.right):
                if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
                       for n in ast.walk(side)):
                    return "scaled"  # ``loss * (1 / accum)``
                text = (dotted(side) or "").lower()
                if any(w in text for w in ("scale", "accum", "weight", "norm", "factor")):
                    return "unknown"  # a factor we cannot read
        return _combine({self.trace(source, s, at, depth - 1) for s in (expr.left, expr.right)
                         if not isinstance(s, ast.Constant)})

    def _call(self, source: SourceFile, call: ast.Call, depth: int) -> str:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in DIVIDES:
            return "scaled"
        if isinstance(func, ast.Attribute) and func.attr in SCALES:
            return "unknown"
        if isinstance(func, ast.Attribute) and func.attr in KEEPS:
            return self.trace(source, func.value, call, depth - 1)
        returned = self.facts.flow.returns_of(source, call)
        if returned:
            return _combine({self.trace(src, v, v, depth - 1) for src, v in returned})
        if self._sum_reduced(source, call):
            self.summed = True
        return "unscaled" if self._is_loss_producer(source, call) else "unknown"

    def _name(self, source: SourceFile, expr: ast.AST, at: ast.AST, depth: int) -> str:
        name = dotted(expr) or ""
        found = self.facts.flow.bindings(source.scope_of(at)).get(name, [])
        if not found and isinstance(expr, ast.Attribute):
            return self.trace(source, expr.value, at, depth - 1)  # ``outputs.loss``
        verdicts = set()
        for binding in found:
            if id(binding.node) in self._visiting:
                continue  # ``loss = loss + aux`` refers back to the earlier loss
            self._visiting.add(id(binding.node))
            value = element_for(binding)
            if binding.kind == "aug":
                verdicts.add("scaled" if isinstance(binding.node.op, ast.Div) else "unknown")
            elif binding.kind == "assign" and value is not None:
                verdicts.add(self.trace(source, value, binding.node, depth - 1))
            else:
                verdicts.add("unknown")  # a parameter, a loop target: made elsewhere
            self._visiting.discard(id(binding.node))
        return _combine(verdicts)

    def _is_loss_producer(self, source: SourceFile, call: ast.Call) -> bool:
        """A model or criterion call, or a ``torch.nn.functional`` loss."""
        name = self.facts.project.call_name(source, call) or ""
        if name.startswith("torch.nn.functional."):
            return True
        if name.startswith("torch.") or not isinstance(call.func, ast.Name | ast.Attribute):
            return False
        made = [n for _, n in self.facts.flow.origin_calls(source, call.func)]
        if any(n.startswith("torch.nn.") or self.facts.project.is_module_class(n) for n in made):
            return True
        last = name.rsplit(".", 1)[-1].lower()
        return any(w in last for w in ("model", "criterion", "loss", "net"))

    def _sum_reduced(self, source: SourceFile, call: ast.Call) -> bool:
        """``F.cross_entropy(..., reduction="sum")`` or a criterion built with it."""
        if _reduction_sum(call):
            return True
        return any(isinstance(o.node, ast.Call) and _reduction_sum(o.node)
                   for o in self.facts.flow.origins(source, call.func))


def _reduction_sum(call: ast.Call) -> bool:
    return any(k.arg == "reduction" and isinstance(k.value, ast.Constant)
               and k.value.value == "sum" for k in call.keywords)


def _combine(verdicts: set[str]) -> str:
    if "scaled" in verdicts:
        return "scaled"
    if not verdicts or "unknown" in verdicts:
        return "unknown"
    return "unscaled"

