"""L0-05: an LR scheduler bound to an optimizer that is not the one being stepped."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._optim import Event, Ref, exclusive, loop_events, ref_of, stepping_loops
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted


class SchedulerWrongOptimizer(Check):
    """Checks that every LR scheduler drives the optimizer the training loop steps.

    ## What it does
    Follows the optimizer argument of each scheduler (``LambdaLR(optimizer, ...)``,
    ``get_cosine_schedule_with_warmup(optimizer, ...)``) to the optimizer construction it
    names, and compares it with the optimizers whose ``step()`` (or
    ``scaler.step(optimizer)``) the training loops call, following the project's own step
    functions and ``accelerator.prepare(model, optimizer, scheduler)`` (which hands its
    arguments back wrapped, in order). Flags:

    - a scheduler bound to an optimizer that is never stepped: the other one of two
      (``opt_d`` instead of ``opt_g``), or a stale object when the optimizer was rebuilt
      after the scheduler was created;
    - a scheduler whose ``step()`` is never called;
    - ``scheduler.step()`` running before ``optimizer.step()`` in the same iteration.

    A learning rate set by hand (``param_group["lr"] = lr``, as nanoGPT does) has no
    scheduler object and is not judged.

    ## Why is this bad?
    A scheduler changes the ``lr`` of the optimizer it was given. Bound to another object,
    the optimizer that trains keeps its initial learning rate: no warmup, no decay, and
    often a run that diverges or plateaus for reasons nobody looks for in the scheduler.
    Stepping the scheduler first skips the first value of the schedule (PyTorch warns).

    ## Example
    ```python
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)  # rebuilt
    for x, y in loader:
        loss_fn(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    ```

    ## Use instead
    ```python
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for x, y in loader:
        loss_fn(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    ```

    ## References
    - https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate
    """

    id = "L0-05"
    name = "scheduler-wrong-optimizer"
    severity = "critical"
    message = "LR scheduler is bound to an optimizer the training loop never steps"
    fix = "Build the scheduler on the optimizer the loop steps, after that optimizer is final"
    condition = "has an LR scheduler"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.scheduler_constructions else not_applicable("no LR scheduler")

    def run(self, facts: Facts) -> Iterator[Finding]:
        stepped = _stepped_optimizers(facts)
        for source, call in facts.scheduler_constructions:
            bound = _bound_optimizer(facts, source, call)
            if stepped and bound is not None and not bound.keys & stepped:
                where = f" (made at {bound.made_at[0]})" if len(bound.made_at) == 1 else ""
                text = f"scheduler is bound to `{bound.label[:24]}`{{}}, which the training " \
                    "loop never steps"
                yield self.finding(source, call, text.format(where) if len(
                    text.format(where)) <= 100 else text.format(""))
            name = _never_stepped(facts, source, call)
            if name:
                yield self.finding(source, call, f"scheduler `{name[:40]}` is never stepped; "
                                   "the learning rate never changes",
                                   "Call scheduler.step() after optimizer.step() each step "
                                   "(or epoch)")
        seen: set[int] = set()
        for loop_source, loop in stepping_loops(facts):
            for event in _early_scheduler_steps(loop_events(facts, loop_source, loop)):
                if id(event.node) not in seen:
                    seen.add(id(event.node))
                    yield self.finding(event.source, event.node,
                                       "scheduler.step() runs before optimizer.step(); the "
                                       "first learning-rate value is skipped",
                                       "Call scheduler.step() after optimizer.step()")


def _bound_optimizer(facts: Facts, source: SourceFile, call: ast.Call) -> Ref | None:
    """The optimizer a scheduler was built on, when it resolves to one construction."""
    arg = next((k.value for k in call.keywords if k.arg == "optimizer"), None)
    if arg is None:
        arg = next((a for a in call.args if not isinstance(a, ast.Constant)), None)
    if arg is None or isinstance(arg, ast.Starred):
        return None
    ref = ref_of(facts, source, arg)
    return ref if ref is not None and ref.concrete and ref.kind == "opt" else None


def _stepped_optimizers(facts: Facts) -> frozenset[tuple]:
    """Identities of every optimizer stepped anywhere; empty when one of them is unknown."""
    keys: set[tuple] = set()
    covered: set[int] = set()
    for source, loop in stepping_loops(facts):
        for event in loop_events(facts, source, loop):
            if event.kind != "step":
                continue
            covered.add(id(event.node))
            if event.ref is None or not event.ref.concrete:
                return frozenset()
            keys |= event.ref.keys
    for source, call in facts.project.method_calls("step"):
        if id(call) in covered:
            continue
        ref = ref_of(facts, source, call.func.value)
        if ref is not None and ref.kind == "scaler" and call.args:
            ref = ref_of(facts, source, call.args[0])
        if ref is not None and ref.kind == "opt":
            if not ref.concrete:
                return frozenset()
            keys |= ref.keys
    return frozenset(keys)


def _never_stepped(facts: Facts, source: SourceFile, call: ast.Call) -> str | None:
    """The name a scheduler is stored under, when nothing ever calls its ``step()`` and it
    never leaves that name (passed on, returned or stored elsewhere: then we cannot tell)."""
    parent = source.parents.get(call)
    if not isinstance(parent, ast.Assign) or len(parent.targets) != 1:
        return None
    name = dotted(parent.targets[0])
    if name is None or name.count(".") > 1 or (name.count(".") == 1
                                               and not name.startswith("self.")):
        return None
    last = name.rsplit(".", 1)[-1]
    for src, node in facts.project.walk():
        if not isinstance(node, ast.Name | ast.Attribute) or node is parent.targets[0]:
            continue
        if (node.id if isinstance(node, ast.Name) else node.attr) != last:
            continue
        if not isinstance(node.ctx, ast.Load):
            return None  # rebound somewhere: another object under the same name
        use = src.parents.get(node)
        if not (isinstance(use, ast.Attribute) and isinstance(src.parents.get(use), ast.Call)):
            return None
        if use.attr == "step":
            return None
    return name


def _early_scheduler_steps(events: list[Event]) -> list[Event]:
    """Unconditional ``scheduler.step()`` calls that run before the iteration's first
    optimizer step (and an optimizer step does follow)."""
    out = []
    for at, event in enumerate(events):
        if event.kind != "sched" or event.guards:
            continue
        if any(e.kind == "step" and not exclusive(e, event) for e in events[:at]):
            continue
        if any(e.kind == "step" for e in events[at + 1:]):
            out.append(event)
    return out
