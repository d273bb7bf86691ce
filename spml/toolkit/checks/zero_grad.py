"""L0-27: gradients cleared between backward() and step(), or never cleared at all."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._optim import (
    Event,
    Ref,
    exclusive,
    loop_events,
    same_object,
    step_loops,
)
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

DIST_BACKWARD = "torch.distributed.autograd.backward"


class ZeroGradMisplaced(Check):
    """Checks that each training step clears the gradients once, outside backward-to-step.

    ## What it does
    Reads one iteration of every step loop in execution order (following calls into the
    project's own step functions) and flags:

    - ``zero_grad()`` (or ``p.grad = None``) that runs after ``backward()`` and before the
      ``optimizer.step()`` that should use those gradients;
    - a step loop that calls ``optimizer.step()`` but never clears gradients, neither in the
      loop nor in a function it calls;
    - with several optimizers (a GAN), an optimizer whose gradients nothing clears: neither
      its own ``zero_grad()`` nor that of the module it was built from (``netD.zero_grad()``
      does not clear ``netG``).

    Clearing at the top of the iteration, or right after the step (also under a
    gradient-accumulation condition, as nanoGPT does), is correct and not flagged. RPC
    training with ``dist_autograd.backward(context_id, [loss])`` needs no clearing: the
    gradients live in the iteration's ``dist_autograd.context()``, not in ``.grad``.

    ## Why is this bad?
    ``backward()`` adds into ``.grad``. Cleared before the step, the optimizer sees zeros
    (or ``None``, and skips the parameter): the model does not train, silently. Never
    cleared, every step applies the sum of all gradients since the start, so the effective
    learning rate grows with the step count and training diverges.

    ## Example
    ```python
    for x, y in loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    ```

    ## References
    - https://pytorch.org/docs/stable/generated/torch.optim.Optimizer.zero_grad.html
    - https://pytorch.org/tutorials/recipes/recipes/zeroing_out_gradients.html
    """

    id = "L0-27"
    name = "zero-grad-misplaced"
    severity = "critical"
    message = "gradients are never cleared in the training loop; they accumulate across steps"
    fix = "Call optimizer.zero_grad(set_to_none=True) once per step, before backward or after step"
    condition = "training loop"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.training_loops else not_applicable("no training loop")

    def run(self, facts: Facts) -> Iterator[Finding]:
        for source, loop in step_loops(facts):
            events = loop_events(facts, source, loop)
            zeros = [e for e in events if e.kind == "zero"]
            for zero in zeros:
                if _wipes_before_step(events, zero) and not _leaves_iteration(zero, loop):
                    yield self.finding(zero.source, zero.node,
                                       "gradients are cleared after backward() and before "
                                       "optimizer.step(); the step never sees them")
            if not zeros and not _clears_elsewhere(facts, source, loop, events) \
                    and not _context_gradients(events):
                yield self.finding(source, loop)
            for step in _uncleared_steps(facts, events) if zeros else []:
                yield self.finding(step.source, step.node, (
                    f"{step.ref.label}'s gradients are never cleared in the loop (another "
                    "optimizer's or model's zero_grad() does not clear them); they accumulate"))


def _leaves_iteration(zero: Event, loop: ast.AST) -> bool:
    """The clearing sits in a branch that leaves the iteration (``if not
    torch.isfinite(loss): opt.zero_grad(); continue``): that iteration never steps."""
    exits = (ast.Continue, ast.Break, ast.Return, ast.Raise)
    child: ast.AST = zero.node
    for parent in zero.source.ancestors(zero.node):
        if parent is loop:
            return False
        if isinstance(parent, ast.If):
            branch = parent.body if child in parent.body else parent.orelse
            if any(isinstance(stmt, exits) for stmt in branch):
                return True
        child = parent
    return False


def _wipes_before_step(events: list[Event], zero: Event) -> bool:
    """backward ... zero ... step (of the same optimizer), with no step in between."""
    at = events.index(zero)
    before = [e for e in events[:at] if not exclusive(e, zero)]
    last_backward = max((i for i, e in enumerate(before) if e.kind == "backward"), default=None)
    if last_backward is None or any(e.kind == "step" for e in before[last_backward:]):
        return False
    after = []
    for event in events[at + 1:]:
        if event.kind == "backward":
            break
        if event.kind == "step" and not exclusive(event, zero):
            after.append(event)
    steps = [e for e in events if e.kind == "step"]
    if zero.ref is not None and zero.ref.kind == "opt":
        return any(same_object(zero.ref, s.ref) for s in after)
    # model.zero_grad(): wipes the grads of whichever optimizer; judge only one-optimizer loops
    return bool(after) and all(same_object(steps[0].ref, s.ref) for s in steps)


def _context_gradients(events: list[Event]) -> bool:
    """Every backward is ``dist_autograd.backward(context_id, [loss])``: RPC training keeps
    the gradients in the per-iteration autograd context (``with dist_autograd.context()``),
    not in ``.grad``, and ``DistributedOptimizer.step(context_id)`` reads them from there;
    the context, and its gradients, end with the iteration."""
    backwards = [e for e in events if e.kind == "backward"]
    return bool(backwards) and all(
        isinstance(e.node, ast.Call) and isinstance(e.node.func, ast.Attribute)
        and e.source.canonical(e.node.func) == DIST_BACKWARD for e in backwards)


def _clears_elsewhere(facts: Facts, source: SourceFile, loop: ast.AST,
                      events: list[Event]) -> bool:
    """A clearing we cannot place: in a closure defined in the loop but not called there
    (``optimizer.step(closure)``; a closure the loop calls is read where it is called), in a
    helper whose name says so but whose body we cannot follow, or in an enclosing loop when
    every step is conditional (one step per outer iteration)."""
    for node in ast.walk(loop):
        name = (dotted(node.func) or "").rsplit(".", 1)[-1].lower() \
            if isinstance(node, ast.Call) else ""
        if "zero" in name or "clear_grad" in name or "reset_grad" in name:
            return True  # zero_grad in a closure, or a helper we cannot follow
    steps = [e for e in events if e.kind == "step"]
    if steps and all(e.guards for e in steps):
        for parent in source.ancestors(loop):
            if isinstance(parent, ast.For | ast.While | ast.AsyncFor) and any(
                    e.kind == "zero" for e in loop_events(facts, source, parent)):
                return True
    return False


def _uncleared_steps(facts: Facts, events: list[Event]) -> list[Event]:
    """With several optimizers (a GAN), each one's gradients must be cleared: by its own
    ``zero_grad()`` or the ``zero_grad()`` of the module whose parameters it was built from."""
    steps: list[Event] = []
    for event in events:
        if event.kind == "step" and event.ref is not None and event.ref.kind == "opt" and \
                not any(same_object(event.ref, s.ref) for s in steps):
            steps.append(event)
    zeros = [e for e in events if e.kind == "zero"]
    if len(steps) < 2 or any(z.ref is None for z in zeros):  # p.grad.zero_(): clears all
        return []
    out = []
    for step in steps:
        owners = _parameter_owners(facts, step.ref)
        cleared = any(same_object(z.ref, step.ref) or (z.ref.kind != "opt" and z.ref.label in
                                                        owners) for z in zeros if z.ref)
        if owners and not cleared:  # an optimizer built we cannot tell from what: no claim
            out.append(step)
    return out


def _parameter_owners(facts: Facts, ref: Ref | None) -> set[str]:
    """The modules an optimizer was built from: ``Adam(netG.parameters())`` -> {"netG"}."""
    if ref is None or not ref.concrete:
        return set()
    wanted = {key[1] for key in ref.keys if key[0] == "call"}
    owners = set()
    for _source, call in facts.project.calls:
        if id(call) not in wanted:
            continue
        first = call.args[0] if call.args else next(
            (k.value for k in call.keywords if k.arg == "params"), None)
        while isinstance(first, ast.Call) and isinstance(first.func, ast.Name) \
                and first.func.id in ("list", "tuple") and len(first.args) == 1:
            first = first.args[0]  # list(actor.parameters()): cleanrl's SAC/TD3/DDPG
        if isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute) and \
                first.func.attr == "parameters" and (name := dotted(first.func.value)):
            owners.add(name)
    return owners
