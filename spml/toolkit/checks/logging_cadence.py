"""L0-22: console or file logging that runs on every training step.

Also home of ``every_step_calls`` (calls that run once per training step, with no interval
or time gate), which L0-24 and L0-25 share.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.console_metrics import console_sink
from spml.toolkit.checks.flow import scope_nodes
from spml.toolkit.checks.patterns import CONSOLE_SINK_METHODS, Facts, TrainingLoop, is_cadence_test
from spml.toolkit.checks.project import SourceFile
from spml.toolkit.checks.sinks import helper_note

LOOPS = (ast.For, ast.While, ast.AsyncFor)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
# An ``if`` on one of these only picks the process or switches a tool on; it does not
# make the body run less often (``if master_process:``, ``if args.wandb:``).
FLAG_PARTS = frozenset({"rank", "master", "main", "chief", "leader", "primary", "world",
                        "wandb", "tensorboard", "tb", "writer", "mlflow", "swanlab", "aim",
                        "tracker", "tracking", "use", "enable", "enabled"})
# Tracker calls (L0-24's business, also accelerator.log) and writes that are not log lines
# (torch.save is L0-25's).
NOT_LOG_LINES = frozenset({"wandb.log", "swanlab.log", "mlflow.log_metric", "mlflow.log_metrics",
                           "torch.save", "numpy.save", "numpy.savez", "pickle.dump"})
TRACKER_METHODS = frozenset({"add_scalar", "add_scalars", "track", "log_metric", "log_metrics"})
Predicate = Callable[[SourceFile, ast.Call], bool]
Site = tuple[SourceFile, ast.Call, SourceFile, ast.Call]


class LoggingEveryStep(Check):
    """Checks that console and file logging inside the training loop is rate-limited.

    ## What it does
    Flags a ``print``, ``logging`` call or file write that runs on every training step:
    directly in the step loop, or unconditionally in one of the project's functions the
    loop calls every step. A call under ``if step % N == 0`` or a time gate
    (``if time.time() - last_log > 60``) is fine, and so are tqdm's ``set_postfix`` /
    ``set_description`` (tqdm redraws at most every ``mininterval``). A guard that only
    picks the process (``if master_process:``) is not a rate limit. Tracker calls
    (``wandb.log``, ``add_scalar``) are L0-24's, and a loop over epochs (full-batch
    training) is left alone.

    ## Why is this bad?
    A step takes milliseconds; a line per step floods the terminal and the job log (GBs
    over a long run), hides the lines that matter, and each ``.item()`` or write it needs
    can stall the GPU pipeline. A few lines a minute show the same trend.

    ## Example
    ```python
    for step, batch in enumerate(loader):
        loss = train_step(batch)
        print(f"step {step} loss {loss.item():.4f}")
    ```

    ## Use instead
    ```python
    for step, batch in enumerate(loader):
        loss = train_step(batch)
        if step % log_every == 0:
            print(f"step {step} loss {loss.item():.4f}")
    ```

    ## References
    - https://tqdm.github.io/docs/tqdm/#__init__
    """

    id = "L0-22"
    name = "logging-every-step"
    severity = "warning"
    message = "logging runs on every training step (no step % N or time gate)"
    fix = "Log every N steps (if step % log_every == 0) or at most about once a minute"
    condition = "file logging or console output"

    def applicability(self, facts: Facts) -> Applicability:
        if not facts.training_loops:
            return not_applicable("no training loop")
        if not any(_has_sink(facts, lp) for lp in facts.training_loops):
            return not_applicable("no logging or printing in the training loop")
        return APPLIES

    def run(self, facts: Facts) -> Iterator[Finding]:
        for site_source, site, target_source, target in every_step_calls(
                facts, _is_log_line(facts)):
            verb = "runs" if site is target else "logs"
            why = "gated only by a rank/flag check" if switched(site_source, site) \
                else "no step % N or time gate"
            note = "" if site is target else helper_note(target_source, target)
            yield self.finding(site_source, site,
                               f"{_label(site)} {verb} on every training step ({why})",
                               note=note)


def every_step_loop(facts: Facts, source: SourceFile, node: ast.AST) -> TrainingLoop | None:
    """The step loop that runs ``node`` on every iteration: no ``if`` between them other
    than a process or tool switch, no ``except``, not the loop's ``else``."""
    loops = {id(lp.loop): lp for lp in facts.training_loops if lp.source is source}
    child = node
    for parent in source.ancestors(node):
        if isinstance(parent, FUNCTIONS):
            return None
        if id(parent) in loops and child in parent.body:
            return loops[id(parent)]
        if isinstance(parent, LOOPS) and child in parent.orelse:
            return None
        if isinstance(parent, ast.If | ast.IfExp) and child is not parent.test \
                and not _is_switch(facts, source, parent.test):
            return None
        if isinstance(parent, ast.ExceptHandler | ast.match_case):
            return None
        child = parent
    return None


def _is_switch(facts: Facts, source: SourceFile, test: ast.AST) -> bool:
    """True for a test that picks a process or turns a tool on, and is no cadence."""
    if is_cadence_test(test) or _names_cadence(facts, source, test):
        return False
    if isinstance(test, ast.BoolOp):
        return all(_is_switch(facts, source, v) for v in test.values)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return _is_switch(facts, source, test.operand)
    if isinstance(test, ast.Compare) and all(isinstance(op, ast.Is | ast.IsNot)
                                             for op in test.ops):
        return True
    return any(part in FLAG_PARTS for part in _identifier_parts(test))


def _identifier_parts(node: ast.AST) -> list[str]:
    """``args.local_rank`` -> ``args``, ``local``, ``rank`` (camelCase split too)."""
    names = [n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
             if isinstance(n, ast.Name | ast.Attribute)]
    return [p.lower() for name in names for p in re.split(r"_|(?<=[a-z])(?=[A-Z])", name) if p]


def _names_cadence(facts: Facts, source: SourceFile, test: ast.AST) -> bool:
    """``do_log = step % 10 == 0`` ... ``if do_log:``."""
    for node in ast.walk(test):
        if isinstance(node, ast.Name):
            for binding in facts.flow.reaching(source, node.id, test):
                if binding.value is not None and is_cadence_test(binding.value):
                    return True
    return False


def every_step_calls(facts: Facts, predicate: Predicate, depth: int = 2) -> Iterator[Site]:
    """(site file, site, target file, target) for calls matching ``predicate`` that run on
    every training step: the target is the site itself when it sits in a step loop, or a
    call the project's own function (called every step at ``site``) always makes. A loop
    over epochs (full-batch training) is left alone: once per epoch is a fine cadence."""
    for loop in facts.training_loops:
        if is_epoch_loop(loop):
            continue
        for node in loop.body_nodes():
            if isinstance(node, ast.Call) and every_step_loop(facts, loop.source, node) is loop:
                for target_source, target in _always_made(facts, loop.source, node, predicate,
                                                          depth):
                    yield loop.source, node, target_source, target


def is_epoch_loop(loop: TrainingLoop) -> bool:
    """``for epoch in range(...)``: a step loop that runs once per pass over the data."""
    target = loop.loop.target if isinstance(loop.loop, ast.For | ast.AsyncFor) else None
    return target is not None and "epoch" in ast.unparse(target).lower()


def _always_made(facts: Facts, source: SourceFile, call: ast.Call, predicate: Predicate,
                 depth: int) -> list[tuple[SourceFile, ast.Call]]:
    """``call`` when it matches; for a call of the project's own function, the matching
    calls its body makes unconditionally (its own gates decide how often they run)."""
    target = facts.flow.callee(source, call)
    if target is None:
        return [(source, call)] if predicate(source, call) else []
    if not depth:
        return []  # too deep to tell what the project's function does: stay silent
    callee_source, func = target
    found: list[tuple[SourceFile, ast.Call]] = []
    for node in scope_nodes(func):
        if isinstance(node, ast.Call) and _unconditional(facts, callee_source, node, func):
            found += _always_made(facts, callee_source, node, predicate, depth - 1)
    return found


def _unconditional(facts: Facts, source: SourceFile, node: ast.AST, func: ast.AST) -> bool:
    """``node`` runs on every call of ``func``: no gate between them but a process or tool
    switch (nanochat's ``print0`` prints under ``if ddp_rank == 0:``, as the loop would)."""
    child = node
    for parent in source.ancestors(node):
        if parent is func:
            return True
        if isinstance(parent, ast.If | ast.IfExp) and child is not parent.test \
                and _is_switch(facts, source, parent.test):
            child = parent
            continue
        if isinstance(parent, ast.If | ast.IfExp | ast.ExceptHandler | ast.match_case
                      | ast.BoolOp | ast.comprehension):
            return False
        child = parent
    return False


def _is_log_line(facts: Facts) -> Predicate:
    console = console_sink(facts)

    def predicate(source: SourceFile, call: ast.Call) -> bool:
        kind = facts.sink_kind(source, call) or console(source, call)
        name = facts.project.call_name(source, call) or ""
        if kind is None or name in NOT_LOG_LINES or name.endswith("accelerator.log"):
            return False
        attr = call.func.attr if isinstance(call.func, ast.Attribute) else ""
        # tqdm redraws postfix/description at most every mininterval; debug is usually off.
        return attr not in CONSOLE_SINK_METHODS | TRACKER_METHODS and attr != "debug"

    return predicate


def _has_sink(facts: Facts, loop: TrainingLoop) -> bool:
    """The loop body (or a function it calls) prints or writes something."""
    console = console_sink(facts)

    def sink(source: SourceFile, call: ast.Call) -> bool:
        return bool(facts.sink_kind(source, call) or console(source, call))

    calls = [n for n in loop.body_nodes() if isinstance(n, ast.Call)]
    if any(sink(loop.source, c) for c in calls):
        return True
    targets = [facts.flow.callee(loop.source, c) for c in calls]
    return any(sink(t[0], n) for t in targets if t is not None
               for n in scope_nodes(t[1]) if isinstance(n, ast.Call))


def switched(source: SourceFile, node: ast.AST) -> bool:
    """Under an ``if`` (a process or tool switch, as ``every_step_loop`` allowed)."""
    for parent in source.ancestors(node):
        if isinstance(parent, LOOPS):
            return False
        if isinstance(parent, ast.If):
            return True
    return False


def _label(call: ast.Call) -> str:
    text = ast.unparse(call.func)
    text = text if len(text) <= 40 else "..." + text[-37:]
    return "print" if text == "print" else f"`{text}()`"
