"""L0-31: torch.optim.Adam/AdamW on CUDA without the fused implementation."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._devices import is_constant, keyword
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

ADAM = frozenset({"torch.optim.Adam", "torch.optim.AdamW", "torch.optim.adam.Adam",
                  "torch.optim.adamw.AdamW"})


class UnfusedAdamOnCuda(Check):
    """Checks that ``torch.optim.Adam``/``AdamW`` in a CUDA project use the fused kernel.

    ## What it does
    Flags a ``torch.optim.Adam`` or ``torch.optim.AdamW`` constructed without
    ``fused=True``, or with ``fused=False`` / ``foreach=False``, in a project that uses
    CUDA. A ``fused=`` value from a variable (``fused=use_fused``) or ``**extra_args``
    (nanoGPT's ``dict(fused=True) if use_fused else dict()``) counts as handled, and
    third-party fused optimizers (apex ``FusedAdam``, bitsandbytes) are not flagged.

    ## Why is this bad?
    The default (``foreach``) implementation launches several kernels per parameter group
    and step; the fused one updates every parameter in a single kernel. On models with many
    parameter tensors the optimizer step is noticeably faster, for free. ``foreach=False``
    falls back to a Python loop over parameters, which is much slower again.

    ## Example
    ```python
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    ```

    ## Use instead
    ```python
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1,
                                  fused=True)
    ```

    ## References
    - https://pytorch.org/docs/stable/generated/torch.optim.AdamW.html
    - https://pytorch.org/docs/stable/optim.html#algorithms
    """

    id = "L0-31"
    name = "unfused-adam-on-cuda"
    severity = "warning"
    message = "Adam/AdamW runs unfused on CUDA (no fused=True)"
    fix = "Pass fused=True (parameters must be floating-point CUDA tensors)"
    condition = "uses CUDA with Adam/AdamW"

    def applicability(self, facts: Facts) -> Applicability:
        if not facts.uses_cuda:
            return not_applicable("no CUDA use")
        return APPLIES if _adams(facts) else not_applicable("no torch.optim.Adam/AdamW")

    def run(self, facts: Facts) -> Iterator[Finding]:
        for source, call in _adams(facts):
            name = (facts.project.call_name(source, call) or "").rsplit(".", 1)[-1]
            fused = keyword(call, "fused")
            if is_constant(keyword(call, "foreach"), False) and fused is None:
                yield self.finding(source, call, f"{name} with foreach=False loops over "
                                   "parameters in Python on CUDA")
            elif is_constant(fused, False):
                yield self.finding(source, call, f"{name} with fused=False on CUDA")
            elif fused is None and not any(k.arg is None for k in call.keywords):
                yield self.finding(source, call, f"{name} runs unfused on CUDA (no fused=True)")


def _adams(facts: Facts) -> list[tuple[SourceFile, ast.Call]]:
    return facts.project.calls_to(*ADAM)
