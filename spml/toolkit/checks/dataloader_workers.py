"""L0-06: a DataLoader without worker processes, or without pinned memory on CUDA."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.patterns import Facts

BOTH_MESSAGE = ("DataLoader loads in the main process (num_workers is 0) and without "
                "pin_memory=True in a CUDA project")


class DataLoaderWorkers(Check):
    """Checks that every ``DataLoader`` loads in worker processes and, on CUDA, pins memory.

    ## What it does
    Flags a ``torch.utils.data.DataLoader`` built without ``num_workers`` (or with
    ``num_workers=0``), and, when the project uses CUDA, one without ``pin_memory=True``.
    A value passed through a variable is followed to its assignment; a value from the
    command line or a config object is trusted.

    ## Why is this bad?
    With ``num_workers=0`` the training process decodes and collates every batch itself,
    so the GPU waits for data on every step. Without pinned memory, host-to-device copies
    cannot overlap with compute (``non_blocking=True`` has no effect).

    ## Example
    ```python
    loader = DataLoader(dataset, batch_size=64, shuffle=True)
    ```

    ## Use instead
    ```python
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=8,
                        pin_memory=True, persistent_workers=True)
    ```

    ## References
    - https://pytorch.org/docs/stable/data.html#multi-process-data-loading
    - https://pytorch.org/docs/stable/data.html#memory-pinning
    """

    id = "L0-06"
    name = "dataloader-workers"
    severity = "critical"
    policy = True
    message = "DataLoader loads in the main process (num_workers is 0)"
    fix = "Pass num_workers (e.g. min(8, os.cpu_count())) and pin_memory=True on CUDA"
    condition = "has a DataLoader"
    runtime_note = "whether the data pipeline keeps up is measured in L1 (data-wait share)"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.dataloaders else not_applicable("no DataLoader")


    def run(self, facts: Facts) -> Iterator[Finding]:
        # One finding per DataLoader, naming every setting it lacks.
        for source, call in facts.dataloaders:
            workers = _keyword(call, "num_workers")
            no_workers = workers is None or _is_zero(facts, source, workers)
            pin = _keyword(call, "pin_memory") if facts.uses_cuda else True
            no_pin = pin is None or (pin is not True and _is_false(pin))
            if no_workers and no_pin:
                yield self.finding(source, call, BOTH_MESSAGE, self.fix)
            elif no_workers:
                yield self.finding(source, call)
            elif no_pin:
                yield self.finding(
                    source, call, "DataLoader without pin_memory=True in a CUDA project",
                    "Pass pin_memory=True; copy batches with .to(device, non_blocking=True)")


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    found = next((k.value for k in call.keywords if k.arg == name), None)
    if found is None and any(k.arg is None for k in call.keywords):
        return ast.Constant(value=...)  # **kwargs: the value is unknown, trust it
    return found


def _is_zero(facts: Facts, source, expr: ast.AST) -> bool:
    values = [o.node for o in facts.flow.origins(source, expr) if o.kind == "value"]
    return bool(values) and all(isinstance(v, ast.Constant) and v.value == 0 for v in values)


def _is_false(expr: ast.AST) -> bool:
    return isinstance(expr, ast.Constant) and expr.value is False
