"""L0-30: ``torch.load`` unpickles a checkpoint without ``weights_only=True``."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

LOADS = ("torch.load", "torch.serialization.load")


class UnsafeTorchLoad(Check):
    """Checks that ``torch.load`` is called with ``weights_only=True``.

    ## What it does
    Flags every ``torch.load(...)`` that does not pass ``weights_only=True``, including an
    explicit ``weights_only=False``. A value passed through a variable is followed to its
    assignment; one that comes from ``**kwargs`` or a config is trusted. ``map_location``
    does not matter, and ``safetensors`` loaders are never flagged.

    ## Why is this bad?
    Without ``weights_only=True``, ``torch.load`` runs Python's ``pickle``, and a checkpoint
    file can execute arbitrary code when it is loaded: a downloaded or shared checkpoint
    becomes a way into the training machine. PyTorch 2.6 made ``weights_only=True`` the
    default, but older versions (and ``weights_only=False``) still unpickle anything, so
    the same script is safe or unsafe depending on the installed version.

    ## Example
    ```python
    checkpoint = torch.load(path, map_location="cpu")
    model.load_state_dict(checkpoint["model"])
    ```

    ## Use instead
    ```python
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model"])
    ```

    ## References
    - https://pytorch.org/docs/stable/generated/torch.load.html
    - https://pytorch.org/docs/stable/notes/serialization.html#weights-only
    """

    id = "L0-30"
    name = "unsafe-torch-load"
    severity = "warning"
    message = "`torch.load` without weights_only=True can run arbitrary code from the file"
    fix = "Pass weights_only=True (store only tensors and plain containers in checkpoints)"
    condition = "calls torch.load"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.project.calls_to(*LOADS) else not_applicable("no torch.load")

    def run(self, facts: Facts) -> Iterator[Finding]:
        for source, call in facts.project.calls_to(*LOADS):
            verdict = _weights_only(facts, source, call)
            if verdict is False:
                yield self.finding(source, call, "`torch.load(..., weights_only=False)` "
                                   "can run arbitrary code from the file")
            elif verdict is None:
                yield self.finding(source, call)


def _weights_only(facts: Facts, source: SourceFile, call: ast.Call) -> bool | None | str:
    """True/False for a known value, None when not passed, "unknown" when it cannot be told."""
    value = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
    if value is None:
        return "unknown" if any(k.arg is None for k in call.keywords) else None
    if isinstance(value, ast.Constant):
        return value.value if isinstance(value.value, bool) else "unknown"
    origins = facts.flow.origins(source, value)
    values = {o.node.value for o in origins if o.kind == "value"
              and isinstance(o.node, ast.Constant) and isinstance(o.node.value, bool)}
    if len(values) == 1 and len(origins) == len([o for o in origins if o.kind == "value"]):
        return values.pop()
    return "unknown"
