"""L0-32: optimizer.step() runs before backward() in a training iteration."""

from __future__ import annotations

from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._optim import Event, exclusive, loop_events, step_loops
from spml.toolkit.checks.patterns import Facts


class StepBeforeBackward(Check):
    """Checks that ``optimizer.step()`` comes after ``backward()`` in each training step.

    ## What it does
    Reads one iteration of every step loop in execution order (following calls into the
    project's own step functions) and flags an ``optimizer.step()`` or
    ``scaler.step(optimizer)`` that runs unconditionally before any ``backward()`` of the
    same iteration. Gradient accumulation (several ``backward()`` calls in a micro-step
    loop, then one step) is the correct order and is not flagged; neither is a step under a
    condition, nor ``optimizer.step(closure)`` (the closure runs backward itself).

    ## Why is this bad?
    The step applies whatever gradients are in ``.grad`` at that moment: the previous
    iteration's (or none on the first step). Updates lag one batch behind, the last batch's
    gradients are never applied, and if gradients are cleared at the top of the iteration
    the optimizer only ever steps on zeros.

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
                if _before_backward(events, step):
                    yield self.finding(step.source, step.node)


def _before_backward(events: list[Event], step: Event) -> bool:
    """An unconditional step with no backward before it and one after it."""
    if step.guards or step.closure:
        return False
    at = events.index(step)
    if any(e.kind == "backward" and not exclusive(e, step) for e in events[:at]):
        return False
    return any(e.kind == "backward" for e in events[at + 1:])
