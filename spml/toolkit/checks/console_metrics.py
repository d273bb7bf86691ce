"""L0-23: nothing printed to the console during training shows the loss."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.loss_logging import backward_losses
from spml.toolkit.checks.patterns import LOG_LEVELS, Facts
from spml.toolkit.checks.project import SourceFile
from spml.toolkit.checks.sinks import reached_calls

# ``accelerator.print``, ``fabric.print``, rich's ``console.print``: all reach the terminal.
PRINT_OWNERS = ("accelerator", "fabric", "console", "rich", "trainer")
PROGRESS_OWNERS = ("tqdm", "pbar", "bar", "progress")


class ConsoleWithoutMetrics(Check):
    """Checks that the console output of a training run shows the loss.

    ## What it does
    Follows the loss from ``backward()`` (through ``.item()``, meters, dicts, f-strings and
    the project's own functions) to something that reaches the terminal: ``print``, a
    ``logging`` call (its default handler writes to stderr), tqdm's ``set_postfix`` /
    ``set_description`` / ``tqdm.write``, ``accelerator.print``, rich's
    ``console.print``, or a ``MetricLogger``-style meter the loss was put in
    (``metric_logger.update(loss=...)``) that prints itself (``log_every``). A logging call
    counts only when the loss is in its message. A training loop whose console shows only a
    bare progress bar, or nothing, is a finding at ``backward()``.

    ## Why is this bad?
    The console is where a person watching the run sees it go wrong: a loss that is NaN,
    flat or exploding. With only a progress bar (or only a tracker dashboard) a diverged
    run keeps burning GPU hours until someone opens the dashboard.

    ## Example
    ```python
    for batch in tqdm(loader):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        wandb.log({"loss": loss.item()})
    ```

    ## Use instead
    ```python
    pbar = tqdm(loader)
    for batch in pbar:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        pbar.set_postfix(loss=f"{loss.item():.4f}")
        wandb.log({"loss": loss.item()})
    ```

    ## References
    - https://tqdm.github.io/docs/tqdm/#set_postfix
    """

    id = "L0-23"
    name = "console-without-metrics"
    severity = "warning"
    message = "console output never shows the loss"
    fix = "Print the loss (formatted print, logger or tqdm set_postfix) every N steps"
    condition = "always (training code)"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.backward_calls else not_applicable("no backward() call")

    def run(self, facts: Facts) -> Iterator[Finding]:
        for source, scope, call, names in backward_losses(facts):
            if not reached_calls(facts, source, scope, console_sink(facts), names):
                yield self.finding(source, call)


def console_sink(facts: Facts) -> Callable[[SourceFile, ast.Call], str | None]:
    """``console`` for a call that shows its arguments on the terminal, else None."""

    def accept(source: SourceFile, call: ast.Call) -> str | None:
        if facts.sink_kind(source, call) == "console":
            return "console"
        func = call.func
        if not isinstance(func, ast.Attribute):
            return "console" if facts.project.call_name(source, call) == "rich.print" else None
        owner = (source.canonical(func.value) or "").lower()
        # basicConfig/StreamHandler print log records to stderr, also when a file gets them.
        if func.attr in LOG_LEVELS - {"debug"} and ("log" in owner or owner == "logging"):
            return "console"
        if func.attr == "print" and any(w in owner for w in PRINT_OWNERS):
            return "console"
        if func.attr == "write" and any(w in owner for w in PROGRESS_OWNERS):
            return "console"
        return None

    return accept
