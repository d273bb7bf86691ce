"""L0-32: optimizer.step() runs before backward() in a training iteration."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._optim import (
    Event,
    exclusive,
    loop_events,
    ref_of,
    same_object,
    step_loops,
)
from spml.toolkit.checks.flow import SCOPES, dotted, scope_nodes
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

JUMPS = (ast.Continue, ast.Break, ast.Return, ast.Raise)
GUARDED = ("conditional optimizer.step() runs before this iteration's backward(): the first "
           "step has no gradients and the last accumulated gradients are never applied")


class StepBeforeBackward(Check):
    """Checks that ``optimizer.step()`` comes after ``backward()`` in each training step.

    ## What it does
    Reads one iteration of every step loop in execution order (following calls into the
    project's own step functions) and flags an ``optimizer.step()`` or
    ``scaler.step(optimizer)`` that runs unconditionally before any ``backward()`` of the
    same iteration. A step under a condition (``if step % accum == 0:``) is flagged too
    when it runs before the iteration's backward and no step follows that backward. Gradient
    accumulation (several ``backward()`` calls in a micro-step loop, then one step) is the
    correct order and is not flagged; neither is ``optimizer.step(closure)`` (the closure
    runs backward itself), a conditional step whose block leaves the iteration
    (``continue``), nor a deferred step at the top of the iteration that waits for gradients
    (``if i > 0 and i % accum == 0:``: it applies the last ``accum`` batches at the current
    weights, and only the epoch's last window spills over) or after which the same
    optimizer steps again after the loop (the last accumulated window is flushed there).

    ## Why is this bad?
    The step applies whatever gradients are in ``.grad`` at that moment: the previous
    iteration's (or none on the first step). Updates lag one batch behind, the last batch's
    gradients are never applied, and if gradients are cleared at the top of the iteration
    the optimizer only ever steps on zeros. A conditional step before the backward
    (``if step % accum == 0:``) steps once on no gradients and never applies the last
    accumulated ones.

    ## Example
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        optimizer.step()
        loss = loss_fn(model(x), y)
        loss.backward()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    ```

    ## References
    - https://pytorch.org/docs/stable/optim.html#taking-an-optimization-step
    """

    id = "L0-32"
    name = "step-before-backward"
    severity = "critical"
    message = "optimizer.step() runs before backward(); it applies the previous batch's gradients"
    fix = "Call optimizer.step() after loss.backward() in the same iteration"
    condition = "training loop"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.training_loops else not_applicable("no training loop")

    def run(self, facts: Facts) -> Iterator[Finding]:
        for source, loop in step_loops(facts):
            events = loop_events(facts, source, loop)
            for step in (e for e in events if e.kind == "step"):
                if not step.guards:
                    if _before_backward(events, step):
                        yield self.finding(step.source, step.node)
                elif _guarded_before_backward(facts, source, loop, events, step):
                    yield self.finding(step.source, step.node, GUARDED)


def _before_backward(events: list[Event], step: Event) -> bool:
    """An unconditional step with no backward before it and one after it."""
    if step.closure:
        return False
    at = events.index(step)
    if any(e.kind == "backward" and not exclusive(e, step) for e in events[:at]):
        return False
    return any(e.kind == "backward" for e in events[at + 1:])


def _guarded_before_backward(facts: Facts, source: SourceFile, loop: ast.AST,
                             events: list[Event], step: Event) -> bool:
    """A conditional step (``if i % accum == 0: opt.step()``) that runs before the
    iteration's backward with no step after it: when the condition holds, the step applies
    the gradients of earlier iterations and this iteration's go to the next window."""
    if not _before_backward(events, step) or _leaves_iteration(step, loop):
        return False
    at = events.index(step)
    # the first backward that can follow the step (one in the step's `else:` cannot)
    backward = next((i for i, e in enumerate(events) if i > at and e.kind == "backward"
                     and not exclusive(e, step)), None)
    if backward is None or any(e.kind == "step" and same_object(e.ref, step.ref)
                               for e in events[backward:]):
        return False
    return not _steps_after(facts, source, loop, step) and not _skips_first(step)


def _skips_first(step: Event) -> bool:
    """A deferred accumulation step, ``if i > 0 and i % accum == 0: opt.step()`` at the top
    of the iteration: it waits until gradients exist and then applies the last ``accum``
    batches' gradients, computed at the current weights. Only the epoch's last window is
    left to the next epoch (or never applied): that is not worth a critical finding."""
    ids = {k for k, v in step.guards if v is True}
    return any(isinstance(p, ast.If) and id(p) in ids and any(
        _after_first(t) for t in _conjuncts(p.test)) for p in step.source.ancestors(step.node))


def _conjuncts(test: ast.AST) -> list[ast.AST]:
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return [c for v in test.values for c in _conjuncts(v)]
    return [test]


def _after_first(test: ast.AST) -> bool:
    """``i > 0``, ``i >= 1``, ``i != 0``, ``0 < i``: false on the first iteration."""
    if not isinstance(test, ast.Compare) or len(test.ops) != 1:
        return False
    op, left, right = test.ops[0], test.left, test.comparators[0]
    if isinstance(left, ast.Constant):  # `0 < i` reads as `i > 0`
        flipped = {ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.NotEq: ast.NotEq}.get(type(op))
        if flipped is None:
            return False
        op, left, right = flipped(), right, left
    if dotted(left) is None or not isinstance(right, ast.Constant) \
            or isinstance(right.value, bool) or not isinstance(right.value, int):
        return False
    return (isinstance(op, ast.Gt | ast.NotEq) and right.value == 0
            or isinstance(op, ast.GtE) and right.value == 1)


def _leaves_iteration(step: Event, loop: ast.AST) -> bool:
    """The step's block ends the iteration (``continue``/``break``/``raise``, or ``return``
    in the loop's own function) before the backward can run."""
    parents = step.source.parents
    jumps: list[ast.stmt] = []
    child, node = step.node, parents.get(step.node)
    while node is not None and node is not loop and not isinstance(node, SCOPES):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and child in block:
                jumps += [s for s in block[block.index(child) + 1:] if isinstance(s, JUMPS)]
        child, node = node, parents.get(node)
    return any(node is loop or not isinstance(j, ast.Return) for j in jumps)


def _steps_after(facts: Facts, source: SourceFile, loop: ast.AST, step: Event) -> bool:
    """The same optimizer steps after the loop: a deferred step that flushes the last
    accumulated window there."""
    end = loop.end_lineno or loop.lineno
    for node in scope_nodes(source.scope_of(loop)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "step" and node.lineno > end:
            receiver = node.args[0] if node.args else node.func.value
            if same_object(ref_of(facts, source, receiver), step.ref):
                return True
    return False
