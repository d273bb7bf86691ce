"""L0-25: checkpoints saved at a hard-coded interval, on every step, or only at the end."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import in_loop
from spml.toolkit.checks.logging_cadence import (
    FUNCTIONS,
    LOOPS,
    every_step_loop,
    is_epoch_loop,
)
from spml.toolkit.checks.patterns import Facts, TrainingLoop, is_cadence_test
from spml.toolkit.checks.project import SourceFile

# Writers that take an object and a path (``torch.save(obj, f)``); a checkpoint when what
# they save (or its name) says model/optimizer state.
OBJECT_SAVES = ("torch.save", "torch_xla.core.xla_model.save")
SAVE_OWNERS = ("accelerator", "fabric")
STATE_WORDS = re.compile(r"state_dict|optim|checkpoint|ckpt", re.IGNORECASE)
MODEL_WORD = re.compile(r"model", re.IGNORECASE)
# Methods that always write a checkpoint.
CHECKPOINT_METHODS = frozenset({"save_pretrained", "save_state", "save_model",
                                "save_checkpoint"})
MODEL_CHECKPOINT = "ModelCheckpoint"
Place = tuple[SourceFile, ast.AST]


class CheckpointIntervalFixed(Check):
    """Checks that checkpoints are saved periodically, at an interval set from args or config.

    ## What it does
    Finds checkpoint saves (``torch.save`` of model/optimizer state, ``save_pretrained``,
    ``accelerator.save_state``, ``save_checkpoint``, Lightning's ``ModelCheckpoint``),
    following the project's own ``save_checkpoint()`` helpers to where they are called.
    Flags a save in the training loop gated by a literal interval (``if step % 1000 == 0``,
    ``every_n_train_steps=1000``), a save that runs on every training step, and a project
    that only saves after the training loop has finished. An interval from a variable,
    argument or config (``step % args.save_every``) is fine, and so is saving once per
    epoch or when the validation loss improves.

    ## Why is this bad?
    A run that only saves at the end loses everything to a crash, a preemption or a time
    limit. Saving every step spends more time writing than training. A hard-coded interval
    cannot be adapted to a slower GPU, a longer run or a preemptible queue without editing
    the code, so it is usually wrong for the next run.

    ## Example
    ```python
    for step in range(max_steps):
        loss = train_step(batch)
        if step % 1000 == 0:
            torch.save(model.state_dict(), "ckpt.pt")
    ```

    ## Use instead
    ```python
    parser.add_argument("--save-every", type=int, default=1000)
    ...
    for step in range(max_steps):
        loss = train_step(batch)
        if step % args.save_every == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": step}, "ckpt.pt")
    ```

    ## References
    - https://pytorch.org/tutorials/beginner/saving_loading_models.html
    """

    id = "L0-25"
    name = "checkpoint-interval-fixed"
    severity = "warning"
    message = "checkpoint interval is hard-coded"
    fix = "Save every N steps with N from args/config (if step % args.save_every == 0)"
    condition = "saves checkpoints"

    def applicability(self, facts: Facts) -> Applicability:
        if not _saves(facts) and not _model_checkpoints(facts):
            return not_applicable("no checkpoint save")
        return APPLIES

    def run(self, facts: Facts) -> Iterator[Finding]:
        for source, call in _model_checkpoints(facts):
            steps = next((k.value for k in call.keywords if k.arg == "every_n_train_steps"), None)
            if steps is not None and _literal(steps):
                yield self.finding(source, call, "checkpoint interval is hard-coded "
                                   f"({ast.unparse(steps)} steps)")
        places = [p for s, c in _saves(facts) for p in _placements(facts, s, c, 3)]
        for source, node in places:
            loop = _step_loop_around(facts, source, node)
            if loop is None:
                continue
            interval = _literal_interval(source, node, loop.loop)
            if interval:
                unit = "epochs" if is_epoch_loop(loop) else "steps"
                yield self.finding(source, node, f"checkpoint interval is hard-coded "
                                   f"({interval} {unit})")
            elif every_step_loop(facts, source, node) is loop and not is_epoch_loop(loop):
                yield self.finding(source, node, "checkpoint is saved on every training step")
        periodic = {id(p) for s, n in places for p in _loops_around(s, n)}
        for source, node in places:
            before = _loops_before(facts, source, node)
            if before and not any(id(p) in periodic for lp in before
                                  for p in [lp.loop, *_loops_around(lp.source, lp.loop)]):
                yield self.finding(source, node, "checkpoint is only saved after training ends;"
                                   " a crash loses the run", "Also save every N steps inside "
                                   "the training loop, N from args/config")


def _saves(facts: Facts) -> list[tuple[SourceFile, ast.Call]]:
    found = []
    for source, call in facts.project.calls:
        name = facts.project.call_name(source, call) or ""
        if name.rsplit(".", 1)[-1] in CHECKPOINT_METHODS:
            # the project's own save_checkpoint(): its torch.save is found on its own
            if facts.flow.callee(source, call) is None:
                found.append((source, call))
        elif _object_save(source, call, name) and _saves_state(facts, source, call):
            found.append((source, call))
    return found


def _object_save(source: SourceFile, call: ast.Call, name: str) -> bool:
    if name in OBJECT_SAVES:
        return True
    if isinstance(call.func, ast.Attribute) and call.func.attr == "save":
        owner = (source.canonical(call.func.value) or "").lower()
        return any(w in owner for w in SAVE_OWNERS)
    return False


def _saves_state(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    """What ``torch.save`` writes is model/optimizer state: ``model.state_dict()``, a dict
    built with it (``{"model": ..., "optimizer": ...}``), a ``checkpoint``/``ckpt``, or the
    model object itself."""
    args = [*call.args, *(k.value for k in call.keywords)]
    if any(STATE_WORDS.search(ast.unparse(a)) for a in args):
        return True
    scope = source.scope_of(call)
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef) \
            and STATE_WORDS.search(scope.name):
        return True  # def save_checkpoint(state, ...): torch.save(state, filename)
    first = call.args[0] if call.args else None
    if isinstance(first, ast.Name) and "model" in first.id.lower():
        return True
    origins = facts.flow.origins(source, first) if first is not None else []
    return any(o.node is not None and o.kind == "value" and (
        isinstance(o.node, ast.Dict) and MODEL_WORD.search(ast.unparse(o.node))
        or STATE_WORDS.search(ast.unparse(o.node))) for o in origins)


def _model_checkpoints(facts: Facts) -> list[tuple[SourceFile, ast.Call]]:
    return [(s, c) for s, c in facts.project.calls
            if (facts.project.call_name(s, c) or "").rsplit(".", 1)[-1] == MODEL_CHECKPOINT]


def _placements(facts: Facts, source: SourceFile, node: ast.AST, depth: int) -> list[Place]:
    """Where a save happens in the program: the call itself when it sits in a loop or at
    the top of a script, else (for a ``save_checkpoint()`` helper) its call sites."""
    scope = source.scope_of(node)
    if in_loop(source, node) or scope is source.tree or not depth:
        return [(source, node)]
    callers = [(s, c) for s, c in facts.project.calls
               if (t := facts.flow.callee(s, c)) is not None and t[1] is scope]
    if not callers:
        return [(source, node)]
    return [p for s, c in callers for p in _placements(facts, s, c, depth - 1)]


def _step_loop_around(facts: Facts, source: SourceFile, node: ast.AST) -> TrainingLoop | None:
    loops = {id(lp.loop): lp for lp in facts.training_loops if lp.source is source}
    for parent in source.ancestors(node):
        if isinstance(parent, FUNCTIONS):
            return None
        if id(parent) in loops:
            return loops[id(parent)]
    return None


def _literal_interval(source: SourceFile, node: ast.AST, stop: ast.AST) -> str | None:
    """``1000`` for a save under ``if step % 1000 == 0`` when no ``% n`` with a variable
    ``n`` guards it as well."""
    moduli = []
    for parent in source.ancestors(node):
        if parent is stop:
            break
        if isinstance(parent, ast.If) and is_cadence_test(parent.test):
            moduli += [n.right for n in ast.walk(parent.test)
                       if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod)]
    if moduli and all(_literal(m) for m in moduli):
        return ast.unparse(moduli[0])
    return None


def _literal(expr: ast.AST) -> bool:
    return all(not isinstance(n, ast.Name | ast.Attribute | ast.Call) for n in ast.walk(expr))


def _loops_around(source: SourceFile, node: ast.AST) -> list[ast.AST]:
    """The loops that contain ``node`` in its function."""
    found = []
    for parent in source.ancestors(node):
        if isinstance(parent, FUNCTIONS):
            break
        if isinstance(parent, LOOPS):
            found.append(parent)
    return found


def _loops_before(facts: Facts, source: SourceFile, node: ast.AST) -> list[TrainingLoop]:
    """The training loops that have finished when ``node`` runs: earlier in the same
    function, or in a function called earlier (``train(model); torch.save(...)``)."""
    if in_loop(source, node):
        return []
    scope = source.scope_of(node)
    found = [lp for lp in facts.training_loops if lp.source is source and lp.scope is scope
             and lp.loop.lineno < node.lineno]
    for call in ast.walk(scope):
        if isinstance(call, ast.Call) and call.lineno < node.lineno \
                and source.scope_of(call) is scope:
            target = facts.flow.callee(source, call)
            found += [lp for lp in facts.training_loops
                      if target is not None and lp.scope is target[1]]
    return found
