"""L0-19: the training loss never reaches a file (only the console, or nowhere)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import dotted, maximal_names
from spml.toolkit.checks.patterns import BACKWARD_OWNERS, Facts
from spml.toolkit.checks.project import SourceFile
from spml.toolkit.checks.sinks import reached_calls, site_of


class LossNotWritten(Check):
    """Checks that the value passed to ``backward()`` is written somewhere durable.

    ## What it does
    Follows the loss from ``loss.backward()`` (or ``scaler.scale(loss).backward()``)
    through assignments (``lossf = loss.item()``), containers (``losses.append(...)``),
    f-strings and calls of the project's own functions, and looks for a write to a file:
    ``f.write``, ``print(..., file=f)``, ``json.dump``, ``csv`` writers, ``logging`` with a
    ``FileHandler``, TensorBoard ``add_scalar``, ``wandb.log``, ``mlflow.log_metric``,
    ``accelerator.log`` and well-known library helpers (timm's ``update_summary``). A loss
    that reaches ``backward()`` as a parameter (timm's ``_backward(loss)`` closure) is
    followed from what the callers pass. A loss that is only printed is a finding at the
    print, or at the call of the project's helper that prints it (``print0(...)``, with the
    helper's print as a note); a loss never recorded at all is a finding at ``backward()``.

    ## Why is this bad?
    Console output is lost with the terminal, the job scheduler's log rotation or a crash.
    Without the loss curve on disk nobody can tell afterwards whether training diverged,
    plateaued or never started learning, and the watchdog and L1 have nothing to read.

    ## Example
    ```python
    loss.backward()
    optimizer.step()
    print(f"step {step} loss {loss.item():.4f}")
    ```

    ## Use instead
    ```python
    loss.backward()
    optimizer.step()
    if step % log_every == 0:
        log_file.write(f"step={step} loss={loss.item():.4f}\\n")
    ```
    """

    id = "L0-19"
    name = "loss-not-written"
    severity = "critical"
    policy = True
    message = "loss is never written to a file (no file, logger or tracker receives it)"
    fix = "Write the loss to a log file, a FileHandler logger, TensorBoard or W&B"
    condition = "always (training code with backward())"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.backward_calls else not_applicable("no backward() call")

    def run(self, facts: Facts) -> Iterator[Finding]:
        for source, scope, call, names in backward_losses(facts):
            sinks = reached_calls(facts, source, scope, facts.sink_kind, names)
            if any(sink.kind == "file" for sink in sinks):
                continue
            console = [sink for sink in sinks if sink.kind == "console"]
            if console:
                # At the call in the training code (``print0(...)``), not in the helper.
                where, node, note = site_of(console[0])
                yield self.finding(where, node, "loss is only printed to the console, "
                                   "never written to a file", note=note)
            else:
                yield self.finding(source, call)


def backward_losses(facts: Facts
                    ) -> Iterator[tuple[SourceFile, ast.AST, ast.Call, frozenset[str]]]:
    """Per scope that runs backward: (file, scope, the first backward call, the names of
    the loss it backpropagates)."""
    seen: set[int] = set()
    for source, call in facts.backward_calls:
        scope = source.scope_of(call)
        if id(scope) in seen:
            continue
        seen.add(id(scope))
        names = frozenset(n for x in loss_expressions(source, call, facts)
                          if (n := dotted(x)))
        if names:
            yield source, scope, call, names


def loss_expressions(source: SourceFile, call: ast.Call,
                     facts: Facts | None = None) -> list[ast.AST]:
    """The loss operand of a backward call: ``loss``, ``scaler.scale(loss)`` -> ``loss``,
    ``accelerator.backward(loss)`` -> ``loss``, ``(a + b).backward()`` -> ``a``, ``b``.
    With ``facts``, ``acc.backward(loss)`` is known by where ``acc`` comes from too."""
    assert isinstance(call.func, ast.Attribute)
    receiver = call.func.value
    if isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute) \
            and receiver.func.attr == "scale" and receiver.args:
        receiver = receiver.args[0]
    if call.args and (not _is_tensor_receiver(source, receiver)
                      or _backward_owner(facts, source, receiver)):
        receiver = call.args[0]
    return maximal_names(receiver)


def _backward_owner(facts: Facts | None, source: SourceFile, receiver: ast.AST) -> bool:
    return facts is not None and dotted(receiver) is not None and any(
        name in BACKWARD_OWNERS for _, name in facts.flow.origin_calls(source, receiver))


def _is_tensor_receiver(source: SourceFile, receiver: ast.AST) -> bool:
    name = (source.canonical(receiver) or "").lower()
    return not any(w in name for w in ("accelerator", "engine", "fabric", "manual_backward"))
