"""L0-29: evaluation runs the model with autograd on (no ``torch.no_grad()``)."""

from __future__ import annotations

from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._evaluation import evaluations, grad_disabled
from spml.toolkit.checks.patterns import Facts


class EvalWithGrad(Check):
    """Checks that evaluation runs the model under ``torch.no_grad()`` or ``inference_mode()``.

    ## What it does
    Finds evaluation code (functions named ``evaluate``/``eval_*``/``validate``/``test``/
    ``estimate_loss``/``val_*`` that run the model and never call ``backward()``, and loops
    over a validation or test loader) and flags the first model call that runs with autograd
    enabled: not inside ``with torch.no_grad():`` / ``with torch.inference_mode():``, not in
    a function decorated with either, not after ``torch.set_grad_enabled(False)``, and not
    in a function whose every caller disables gradients.

    ## Why is this bad?
    With autograd on, every forward pass records a graph and keeps each layer's activations
    alive for a backward pass that never comes. Evaluation then needs several times the
    memory of inference (often the cause of an out-of-memory error in the first
    validation), runs slower, and an accumulated ``total += loss`` keeps every batch's
    graph alive until the end of the loop.

    ## Example
    ```python
    def evaluate(model, loader):
        model.eval()
        return [model(x).argmax(-1) for x, _ in loader]
    ```

    ## Use instead
    ```python
    @torch.no_grad()
    def evaluate(model, loader):
        model.eval()
        return [model(x).argmax(-1) for x, _ in loader]
    ```

    ## References
    - https://pytorch.org/docs/stable/generated/torch.no_grad.html
    - https://pytorch.org/docs/stable/generated/torch.autograd.grad_mode.inference_mode.html
    """

    id = "L0-29"
    name = "eval-with-grad"
    severity = "warning"
    message = "evaluation runs the model with autograd on, keeping activations for no backward"
    fix = "Wrap evaluation in `with torch.no_grad():` or decorate it with @torch.no_grad()"
    condition = "has an evaluation function"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if evaluations(facts) else not_applicable("no evaluation code")

    def run(self, facts: Facts) -> Iterator[Finding]:
        for ev in evaluations(facts):
            call = next((c for c in ev.forwards if not grad_disabled(facts, ev.source, c)), None)
            if call is not None:
                yield self.finding(ev.source, call, f"{ev.label[:40]} runs the model with "
                                   "autograd on (no torch.no_grad / inference_mode)")
