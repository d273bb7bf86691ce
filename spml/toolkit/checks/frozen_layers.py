"""L0-13: frozen layers that are not the intended ones (everything, or out of step with the
optimizer's requires_grad filter)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._freezing import Freeze, freezes
from spml.toolkit.checks._local_optim import optimizer_builds
from spml.toolkit.checks._optim import callers_of
from spml.toolkit.checks._params import Part, traced_builds
from spml.toolkit.checks.flow import scope_nodes, target_names
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

# Calls that add trainable parameters to a frozen model (LoRA and other adapters).
ADAPTERS = ("peft", "lora", "adapter", "prepare_model_for")


class FrozenLayers(Check):
    """Checks that freezing leaves something to train and agrees with the optimizer.

    ## What it does
    Looks at every place that sets ``requires_grad`` (``p.requires_grad = False`` in a
    loop over ``parameters()``, ``requires_grad_(False)``, ``.freeze()``) and flags:

    - a model whose parameters are all frozen while an optimizer is built over it, with
      nothing unfrozen, no new head assigned and no adapter added afterwards;
    - freezing that runs after an optimizer was built with a ``requires_grad`` filter
      (``filter(lambda p: p.requires_grad, ...)``): the filter saw everything trainable,
      so the frozen parameters are in the optimizer anyway;
    - unfreezing that runs after such a filtered optimizer was built, with no new
      optimizer or ``add_param_group``: the unfrozen layers are not in the optimizer and
      never train (a common gradual-unfreezing bug).

    Which layers a fine-tune should freeze is a design choice; the check only flags
    freezing that cannot have the effect the code implies.

    ## Why is this bad?
    An all-frozen model makes ``backward()`` fail or, with some trainable buffer or a
    frozen base model wrapped elsewhere, a run that spends hours without changing a weight.
    A filter applied before the freeze or before the unfreeze is out of date the moment the
    flags change: parameters meant to train stay out of the optimizer, and parameters
    meant to be frozen keep optimizer state and can still be moved by momentum and weight
    decay whenever their gradient is zero rather than ``None``.

    ## Example
    ```python
    params = filter(lambda p: p.requires_grad, model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    for p in model.backbone.parameters():
        p.requires_grad = False
    ```

    ## Use instead
    ```python
    for p in model.backbone.parameters():
        p.requires_grad = False
    params = filter(lambda p: p.requires_grad, model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ```

    ## References
    - https://pytorch.org/tutorials/beginner/finetuning_torchvision_models_tutorial.html
    - https://pytorch.org/docs/stable/notes/autograd.html#locally-disabling-gradient-computation
    """

    id = "L0-13"
    name = "frozen-layers"
    severity = "warning"
    message = "every parameter of the model is frozen; nothing will train"
    fix = "Freeze first, then build the optimizer over the parameters that still require grad"
    condition = "fine-tuning (frozen parameters)"

    def applicability(self, facts: Facts) -> Applicability:
        if any(f.requires_grad is not True for f in freezes(facts)):
            return APPLIES
        return not_applicable("no parameter is frozen")

    def run(self, facts: Facts) -> Iterator[Finding]:
        all_freezes = freezes(facts)
        built = _built(facts)
        for freeze in all_freezes:
            if freeze.requires_grad is False and _freezes_whole(freeze, built) \
                    and not _may_train_again(facts, freeze, all_freezes):
                name = dotted(freeze.receiver)
                yield self.finding(freeze.source, freeze.node,
                                   f"every parameter of `{name[:40]}` is frozen; nothing "
                                   "will train", "Unfreeze the layers to train (or add a "
                                   "trainable head) before building the optimizer")
            stale = _stale_filter(facts, freeze, built)
            if stale:
                fix = None if not freeze.requires_grad else "Add the unfrozen parameters " \
                    "with optimizer.add_param_group(...) or rebuild the optimizer"
                yield self.finding(freeze.source, freeze.node, stale, fix)


def _built(facts: Facts) -> list[tuple[ast.Call, list[Part]]]:
    """Optimizer constructions whose parameters can be traced, with their parts."""
    return [(call, parts) for _, call, parts in traced_builds(facts, optimizer_builds(facts))
            if parts]


def _freezes_whole(freeze: Freeze, built: list[tuple[ast.Call, list[Part]]]) -> bool:
    """An unconditional freeze of all of ``X`` where an optimizer in the same scope takes
    ``X.parameters()``."""
    name = dotted(freeze.receiver) if freeze.receiver is not None else None
    if name is None or "." in name or freeze.conditional:
        return False
    scope = freeze.source.scope_of(freeze.node)
    return any(p.attr is None and dotted(p.base) == name and p.source is freeze.source
               and p.source.scope_of(call) is scope for call, parts in built for p in parts)


def _may_train_again(facts: Facts, freeze: Freeze, all_freezes: list[Freeze]) -> bool:
    """Anything that could make some parameter trainable again: an unfreeze anywhere, a
    new submodule assigned on the model, the model rebound, an adapter library."""
    name = dotted(freeze.receiver)
    if any(f.requires_grad is not False and _may_reach(facts, f, name) for f in all_freezes):
        return True
    for source, node in facts.project.walk():
        if isinstance(node, ast.Call) and any(
                w in (facts.project.call_name(source, node) or "").lower() for w in ADAPTERS):
            return True
        if isinstance(node, ast.Assign) and any(_roots_at(t, name) for t in node.targets) \
                and any(isinstance(n, ast.Call) for n in ast.walk(node.value)):
            return True
    scope = freeze.source.scope_of(freeze.node)
    return any(isinstance(n, ast.Assign) and n.lineno > freeze.node.lineno
               and any(dotted(t) == name for t in n.targets) for n in scope_nodes(scope))


def _may_reach(facts: Facts, unfreeze: Freeze, name: str) -> bool:
    """Whether an unfreeze can act on the object called ``name``: same name, an unknown
    receiver, or a parameter of a function that some call site (or none known) passes
    ``name`` to. A differently named local object is another model."""
    root = (dotted(unfreeze.receiver) or "").split(".")[0] if unfreeze.receiver else ""
    if root in ("", name, "self"):
        return True
    func = unfreeze.source.scope_of(unfreeze.node)
    params = [a.arg for a in func.args.args] if isinstance(func, ast.FunctionDef) else []
    if root not in params:
        return False
    sites = [c for _, c in callers_of(facts, func)]
    return not sites or any(name in {dotted(a) for a in [*c.args, *(k.value for k in c.keywords)]}
                            for c in sites)


def _roots_at(target: ast.AST, name: str) -> bool:
    """``model.fc = ...`` or ``model.classifier[6] = ...`` for ``name`` == ``model``."""
    while isinstance(target, ast.Subscript | ast.Attribute):
        if isinstance(target, ast.Attribute) and target.attr == "requires_grad":
            return False
        target = target.value
        if isinstance(target, ast.Name):
            return target.id == name
    return False


def _stale_filter(facts: Facts, freeze: Freeze,
                  built: list[tuple[ast.Call, list[Part]]]) -> str | None:
    """Freezing or unfreezing after a requires_grad-filtered optimizer over the same model,
    in the same scope, with no optimizer built or param group added after it."""
    name = dotted(freeze.receiver) if freeze.receiver is not None else None
    if name is None or freeze.requires_grad is None:
        return None
    scope = freeze.source.scope_of(freeze.node)
    line = freeze.node.lineno
    earlier = [call for call, parts in built for p in parts
               if p.filtered and p.source is freeze.source and dotted(p.base) == name.split(".")[0]
               and p.source.scope_of(call) is scope and (call.end_lineno or 0) < line]
    if not earlier:
        return None
    if _rebuilt_after(facts, freeze.source, scope, line, earlier):
        return None
    if freeze.requires_grad:
        return (f"`{name[:30]}` is unfrozen after the optimizer kept only trainable "
                "parameters; it never trains")
    return (f"`{name[:30]}` is frozen after the optimizer's requires_grad filter ran; "
            "the optimizer still holds it")


def _rebuilt_after(facts: Facts, source: SourceFile, scope: ast.AST, line: int,
                   earlier: list[ast.Call]) -> bool:
    """An optimizer built, or the old one's name rebound, after ``line`` in ``scope``; or a
    param group added anywhere (the new parameters may be added there)."""
    if facts.project.method_calls("add_param_group"):
        return True
    names = {n for call in earlier for n in _assigned_names(source, call)}
    made = {id(c) for _, c in optimizer_builds(facts)}
    for node in scope_nodes(scope):
        if getattr(node, "lineno", 0) <= line:
            continue
        if id(node) in made or (isinstance(node, ast.Assign) and names & {
                n for t in node.targets for n in target_names(t)}):
            return True
    return False


def _assigned_names(source: SourceFile, call: ast.Call) -> set[str]:
    parent = source.parents.get(call)
    if isinstance(parent, ast.Assign):
        return {n for t in parent.targets for n in target_names(t)}
    return set()
