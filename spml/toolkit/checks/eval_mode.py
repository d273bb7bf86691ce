"""L0-28: evaluation runs the model in training mode, or leaves it in eval mode for training."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._accumulation import constants
from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._evaluation import (
    FUNCS,
    Evaluation,
    call_sites,
    eval_context,
    evaluations,
    holds_before,
    is_eval_mode_call,
    is_train_mode_call,
    mode_dependent_layers,
)
from spml.toolkit.checks.flow import scope_nodes
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

LOOPS = (ast.For, ast.While, ast.AsyncFor)


class EvalWithoutEvalMode(Check):
    """Checks that evaluation puts the model in eval mode, and training switches back.

    ## What it does
    Finds evaluation code (functions named ``evaluate``/``eval_*``/``validate``/``test``/
    ``estimate_loss``/``val_*`` that run the model and never call ``backward()``, and loops
    over a validation or test loader) and flags it when neither it nor its callers call
    ``model.eval()`` (or ``model.train(False)``) before the forward pass, directly or through
    a context manager of the project (``with eval_mode(model):``). A function is not
    evaluation when its result feeds a ``backward()`` (PPO's ``evaluate_actions``), when it
    only runs a model it builds itself without loading weights (a shape check such as
    ``def test(): net = Net(); net(torch.randn(1, 3, 32, 32))``), or when it only calls a
    tokenizer. When evaluation switches to eval mode and is called from inside the training
    loop, it also flags a training loop that never calls ``model.train()`` again. Projects
    whose models have no dropout or batch-norm layers are passed: there ``eval()`` changes
    nothing.

    ## Why is this bad?
    In training mode dropout zeroes random activations and batch norm normalises with the
    current batch's statistics (and updates its running averages with evaluation data), so
    validation metrics are noisy, pessimistic and not reproducible. The opposite mistake,
    leaving the model in eval mode after evaluation, silently trains the rest of the run
    without dropout and with frozen batch-norm statistics.

    ## Example
    ```python
    def evaluate(model, loader):
        with torch.no_grad():
            return sum(criterion(model(x), y).item() for x, y in loader) / len(loader)
    ```

    ## Use instead
    ```python
    def evaluate(model, loader):
        model.eval()
        with torch.no_grad():
            loss = sum(criterion(model(x), y).item() for x, y in loader) / len(loader)
        model.train()
        return loss
    ```

    ## References
    - https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.eval
    - https://pytorch.org/docs/stable/notes/autograd.html#locally-disable-grad-doc
    """

    id = "L0-28"
    name = "eval-without-eval-mode"
    severity = "critical"
    message = "evaluation runs the model in training mode (dropout and batch norm still active)"
    fix = "Call model.eval() before evaluating and model.train() before training resumes"
    condition = "has an evaluation function"

    def applicability(self, facts: Facts) -> Applicability:
        if not evaluations(facts):
            return not_applicable("no evaluation code")
        if not _has_mode_layers(facts):
            return Applicability(True, "the model has no active dropout or batch-norm layers; "
                                       "eval() would change nothing")
        return APPLIES

    def run(self, facts: Facts) -> Iterator[Finding]:
        if not _has_mode_layers(facts):
            return
        for ev in evaluations(facts):
            if not _sets_eval_mode(facts, ev):
                yield self.finding(ev.source, ev.node, f"{ev.label[:40]} runs the model "
                                   "without model.eval(); dropout and batch norm stay active")
            else:
                yield from self._stays_in_eval(facts, ev)

    def _stays_in_eval(self, facts: Facts, ev: Evaluation) -> Iterator[Finding]:
        """Evaluation switches to eval mode inside a training loop that never switches back."""
        anchor = ev.forwards[0] if ev.kind == "function" else ev.node
        if eval_context(facts, ev.source, anchor):
            return  # ``with eval_mode(model):`` switches back on exit
        if ev.kind == "function":
            if any(is_train_mode_call(ev.source, n) for n in ast.walk(ev.node)):
                return  # it restores training mode itself
            places = [(s, c, c) for s, c in call_sites(facts, ev.source, ev.node)]
        else:
            switch = _eval_switch_before(ev)
            places = [(ev.source, ev.node, switch)] if switch is not None else []
        text = (f"model stays in eval mode after {ev.label[:40]}; "
                "training continues without dropout")
        for source, where, report_at in places:
            loop = _training_loop_around(facts, source, where)
            if loop is not None and report_at in set(ast.walk(loop)) \
                    and not _resumes_training(facts, source, loop, report_at):
                yield self.finding(source, report_at, text)


def _has_mode_layers(facts: Facts) -> bool:
    consts = constants(facts)
    return next(mode_dependent_layers(facts, consts.value), None) is not None


def _sets_eval_mode(facts: Facts, ev: Evaluation) -> bool:
    """``model.eval()`` in the evaluation or before it (here or in a caller), or a context
    manager of the project around it that calls it: ``with eval_mode(model):``."""
    if any(is_eval_mode_call(ev.source, n) for n in ast.walk(ev.node)):
        return True
    anchor = ev.forwards[0] if ev.kind == "function" else ev.node
    return holds_before(facts, ev.source, anchor, is_eval_mode_call) \
        or eval_context(facts, ev.source, anchor)


def _eval_switch_before(ev: Evaluation) -> ast.Call | None:
    """The last ``model.eval()`` in the loop's scope before (or in) the evaluation loop."""
    scope = ev.source.scope_of(ev.node)
    inside = set(ast.walk(ev.node))
    calls = [n for n in scope_nodes(scope) if is_eval_mode_call(ev.source, n)
             and (n.lineno <= ev.node.lineno or n in inside)]
    return max(calls, key=lambda n: n.lineno, default=None)


def _training_loop_around(facts: Facts, source: SourceFile, node: ast.AST) -> ast.AST | None:
    """The innermost loop around ``node`` (in its function) that trains on each pass: a step
    loop, a loop around one, or a loop calling a function that runs ``backward()``."""
    for parent in source.ancestors(node):
        if isinstance(parent, FUNCS):
            return None
        if isinstance(parent, LOOPS) and _trains(facts, source, parent):
            return parent
    return None


def _trains(facts: Facts, source: SourceFile, loop: ast.AST) -> bool:
    if any(lp.source is source and (lp.loop is loop or loop in set(source.ancestors(lp.loop)))
           for lp in facts.training_loops):
        return True
    return any(_calls_backward(facts, source, n) for n in scope_nodes(loop)
               if isinstance(n, ast.Call))


def _resumes_training(facts: Facts, source: SourceFile, loop: ast.AST, event: ast.AST) -> bool:
    """Whether, going round the loop body from ``event`` (the switch to eval mode), a
    ``model.train()`` comes before the next ``backward()``."""
    body = loop.body
    index = next(i for i, stmt in enumerate(body) if event in set(ast.walk(stmt)))
    if any(is_train_mode_call(source, n) and n.lineno > event.lineno
           for n in ast.walk(body[index])):
        return True
    for stmt in [*body[index + 1:], *body[:index + 1]]:
        if _trains_in(facts, source, stmt):
            return True
        if _runs_backward(facts, source, stmt):
            return False
    return True


def _runs_backward(facts: Facts, source: SourceFile, stmt: ast.AST) -> bool:
    inside = set(ast.walk(stmt))
    if any(s is source and c in inside for s, c in facts.backward_calls):
        return True
    return any(_calls_backward(facts, source, n) for n in inside if isinstance(n, ast.Call))


def _calls_backward(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    target = facts.flow.callee(source, call)
    return target is not None and any(s is target[0] and s.scope_of(c) is target[1]
                                      for s, c in facts.backward_calls)


def _trains_in(facts: Facts, source: SourceFile, node: ast.AST, depth: int = 2) -> bool:
    """A ``model.train()`` in ``node``, or in a function it calls."""
    for inner in [node, *scope_nodes(node)]:
        if is_train_mode_call(source, inner):
            return True
        if depth and isinstance(inner, ast.Call):
            target = facts.flow.callee(source, inner)
            if target is not None and _trains_in(facts, target[0], target[1], depth - 1):
                return True
    return False
