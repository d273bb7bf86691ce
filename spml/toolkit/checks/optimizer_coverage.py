"""L0-04: an optimizer that misses trainable submodules of the model it trains."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._freezing import Freeze, freezes
from spml.toolkit.checks._local_optim import optimizer_builds
from spml.toolkit.checks._module_shape import (
    Shape,
    bears_params,
    child_shape,
    model_makers,
    module_shapes,
    run_without_grad,
    ties,
)
from spml.toolkit.checks._optim import visible_bindings
from spml.toolkit.checks._params import Part, traced_builds
from spml.toolkit.checks.flow import SCOPES, Origin, element_for, scope_nodes
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

# Submodules updated without the optimizer (EMA/target copies, teachers): not a finding.
NOT_OPTIMIZED = ("ema", "target", "teacher", "momentum", "frozen", "shadow", "old_")
# The classifier heads of library models (torchvision, timm, transformers): an optimizer
# that takes only these takes a strict part of the model, whatever its architecture.
HEADS = frozenset({"fc", "classifier", "head", "heads", "lm_head", "score", "last_linear"})
NO_GRAD = ("no_grad", "inference_mode")


class OptimizerMissesParameters(Check):
    """Checks that the optimizers cover every trainable submodule of the model they train.

    ## What it does
    Follows each optimizer's ``params`` argument (``model.parameters()``, a list of
    ``model.sub.parameters()``, ``model[1:].parameters()`` of an ``nn.Sequential`` or
    ``model.net[:-1].parameters()`` of one the model holds, ``[{"params": ...}, ...]``
    groups, ``filter``/comprehension over ``requires_grad``, through variables) to the
    model object and what made it, reads the submodules and ``nn.Parameter``s it has (its
    local ``nn.Module`` class's ``__init__``, in any branch; the layers listed in
    ``nn.Sequential(...)``; a backbone re-wrapped as
    ``nn.Sequential(*list(resnet.children())[:-1])``) and flags the ones no optimizer
    receives and the project never freezes. A weight tied under a condition (``if tie_weights:``)
    counts as covered only when the optimizer takes it itself. When the model may be one of
    several classes, it is flagged only if the optimizer misses parameters for each of
    them. For a library model (torchvision, timm, transformers), whose submodules are not
    listed, it flags an optimizer that gets only the classifier head (``model.fc``, timm's
    ``model.get_classifier()``) while
    the whole model runs with gradients in training and nothing in the project is frozen.
    Also flags a submodule assigned to the model (``model.head = nn.Linear(...)``) after
    the optimizer was built from ``model.parameters()``. The project's own
    ``torch.optim.Optimizer`` subclasses count as optimizers.

    ``model.parameters()``, comprehensions that keep every trainable parameter and
    nanoGPT-style groups built from ``named_parameters()`` are fine. When any optimizer's
    parameters cannot be traced, or a selection is made by name, the check stays silent.

    ## Why is this bad?
    Parameters outside every param group get gradients but are never updated: a new
    classification head stays at its random initialisation, a norm layer keeps its initial
    scale. Training runs, the loss even drops a little, and nothing reports the omission.

    ## Example
    ```python
    model = Classifier()  # self.backbone, self.neck, self.head
    optimizer = torch.optim.AdamW([
        {"params": model.backbone.parameters(), "lr": 1e-5},
        {"params": model.head.parameters(), "lr": 1e-3},
    ])
    ```

    ## Use instead
    ```python
    model = Classifier()
    head = [*model.neck.parameters(), *model.head.parameters()]
    optimizer = torch.optim.AdamW([
        {"params": model.backbone.parameters(), "lr": 1e-5},
        {"params": head, "lr": 1e-3},
    ])
    ```

    ## References
    - https://pytorch.org/docs/stable/optim.html#per-parameter-options
    """

    id = "L0-04"
    name = "optimizer-misses-parameters"
    severity = "critical"
    message = "optimizer param groups miss trainable parameters of the model"
    fix = "Pass model.parameters() or add a param group for every trainable submodule"
    condition = "always (an optimizer is built)"

    def applicability(self, facts: Facts) -> Applicability:
        if optimizer_builds(facts):
            return APPLIES
        return not_applicable("no optimizer is built")

    def run(self, facts: Facts) -> Iterator[Finding]:
        if facts.project.method_calls("add_param_group"):
            return  # groups added later: the construction does not tell the whole story
        traced = traced_builds(facts, optimizer_builds(facts))
        built = [(s, c, parts) for s, c, parts in traced if parts is not None]
        for source, call, parts in built:
            yield from self._late_assignments(facts, source, call, parts)
        if len(built) == len(traced):  # one untraced optimizer may hold the rest
            yield from self._missing(facts, built)

    def _missing(self, facts: Facts, built: list) -> Iterator[Finding]:
        coverage = _coverage(facts, built)
        frozen = _Frozen(facts, {dotted(p.base) for _, _, parts in built for p in parts})
        if coverage is None or frozen.everything:
            return
        for cover in coverage.values():
            if cover.everything:
                continue
            misses = [(shape, _shape_missing(facts, cover, shape, frozen))
                      for shape in cover.shapes]
            # Whichever class the model turns out to have, parameters are missed.
            if misses and all(missing for _, missing in misses):
                where, call = cover.first
                yield self.finding(where, call, _message(cover.base, misses))

    def _late_assignments(self, facts: Facts, source: SourceFile, call: ast.Call,
                          parts: list[Part]) -> Iterator[Finding]:
        """``model.head = nn.Linear(...)`` after ``AdamW(model.parameters())``, same scope."""
        scope = source.scope_of(call)
        bases = {dotted(p.base) for p in parts if p.source is source} - {None, "self"}
        end = call.end_lineno or call.lineno
        later = [n for n in scope_nodes(scope) if getattr(n, "lineno", 0) > end]
        made = {id(c) for _, c in optimizer_builds(facts)}
        rebuilt = [n.lineno for n in later if id(n) in made]
        for node in later:
            if not isinstance(node, ast.Assign) or len(node.targets) != 1:
                continue
            target = node.targets[0]
            if isinstance(target, ast.Attribute) and dotted(target.value) in bases \
                    and not any(line > node.lineno for line in rebuilt) \
                    and bears_params(facts, source, node.value):
                name = dotted(target)
                yield self.finding(source, node, f"`{name[:40]}` is assigned after the "
                                   "optimizer was built; its parameters are never optimized",
                                   "Build the optimizer after the model is complete")


@dataclass
class _Cover:
    """What the optimizers take from one module object (which may have several shapes)."""

    base: str
    key: tuple
    shapes: list[Shape]
    first: tuple[SourceFile, ast.Call]
    attrs: set[str] = field(default_factory=set)
    everything: bool = False


def _coverage(facts: Facts, built: list) -> dict[tuple, _Cover] | None:
    """Per model object, the submodules the optimizers cover; None when a part's model
    cannot be identified (it might be an alias of a submodule)."""
    out: dict[tuple, _Cover] = {}
    for source, call, parts in built:
        for part in parts:
            found = module_shapes(facts, part.source, part.base)
            if found is None:
                return None
            key, shapes = found
            cover = out.setdefault(key, _Cover(dotted(part.base) or "model", key, shapes,
                                               (source, call)))
            if part.attr is None:
                cover.everything = True
            else:
                cover.attrs.add(part.attr)
    return out


def _shape_missing(facts: Facts, cover: _Cover, shape: Shape, frozen: _Frozen) -> list[str]:
    """The children of ``shape`` the optimizers miss (``["*"]``: the rest of a library
    model); empty when nothing is missed or it cannot be told."""
    covered: set[str] = set()
    partial: dict[str, tuple[Shape, set[str]]] = {}  # `model.net[:-1]`: some of net's
    for attr in cover.attrs:
        if attr == "get_classifier()":  # timm: the model's classifier head
            if not shape.library:
                return []
            covered.add("fc")
            continue
        head, bracket, rest = attr.partition("[")
        if head and bracket:
            sub = child_shape(facts, shape, head) if not shape.library else None
            names = sub.expand(bracket + rest) if sub is not None else None
            if names is None:
                return []
            partial.setdefault(head, (sub, set()))[1].update(names)
            continue
        names = shape.expand(attr)
        if names is None:
            return []  # an index into something that is not a listed container
        covered |= names
    if shape.library:
        head_only = covered and covered <= HEADS and not frozen.attrs
        return ["*"] if head_only and _trained_whole(facts, cover.key) else []
    tied = ties(shape.cls) if shape.cls is not None else []
    # A tied weight is covered through its partner only when the tie is always made.
    covered |= {a for a, b, conditional in tied if not conditional and b in covered}
    covered |= {b for a, b, conditional in tied if not conditional and a in covered}
    skipped = run_without_grad(shape.cls) if shape.cls is not None else set()
    missing = [a for a in shape.attrs if a not in covered and a not in skipped
               and not frozen.covers(cover.base, a) and not _by_design(a)]
    out = []
    for attr in missing:  # of a child the optimizer takes a slice of: what the slice drops
        sub, taken = partial.get(attr, (None, None))
        out += [attr] if sub is None else [f"{attr}[{k}]" for k in sub.attrs if k not in taken]
    return out


def _trained_whole(facts: Facts, key: tuple) -> bool:
    """The object runs as a whole (``model(x)``) with gradients where the project trains
    (a step loop, or a function that calls backward): not only its head gets gradients,
    as in a linear probe that runs the backbone under ``no_grad`` or piecewise."""
    makers = key[1] if key[0] == "call" else frozenset()
    scopes = {id(lp.loop): (lp.source, lp.loop) for lp in facts.training_loops}
    for source, call in facts.backward_calls:
        scope = source.scope_of(call)
        scopes.setdefault(id(scope), (source, scope))
    for source, scope in scopes.values():
        for node in scope_nodes(scope):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and not _without_grad(source, node):
                found = model_makers(facts, source, node.func)
                if found and makers & {id(c) for _, c in found}:
                    return True
    return False


def _without_grad(source: SourceFile, node: ast.AST) -> bool:
    """``node`` runs under ``with torch.no_grad()`` or in a ``@torch.no_grad()`` function."""
    for parent in source.ancestors(node):
        exprs = [i.context_expr for i in parent.items] if isinstance(parent, ast.With) \
            else getattr(parent, "decorator_list", [])
        if any((dotted(e.func if isinstance(e, ast.Call) else e) or "").endswith(NO_GRAD)
               for e in exprs):
            return True
        if isinstance(parent, SCOPES):
            return False
    return False


class _Frozen:
    """Which submodules the project freezes (their absence from the optimizer is intended)."""

    def __init__(self, facts: Facts, bases: set[str | None]) -> None:
        self.attrs: set[str] = set()
        self.roots: set[str] = set()
        self.everything = False
        for freeze in freezes(facts):
            if freeze.requires_grad is not True:
                self._add(facts, freeze, bases)

    def _add(self, facts: Facts, freeze: Freeze, bases: set[str | None]) -> None:
        name = dotted(freeze.receiver) if freeze.receiver is not None else None
        if name is None:
            self.everything = True
        elif "." in name:
            self.attrs.add(name.split(".")[1])
            if freeze.conditional:
                self.roots.add(name.split(".")[0])
        elif name in bases or name == "self" or not _made_by_call(facts, freeze.source,
                                                                   freeze.receiver):
            self.everything = True  # the trained model (or something unknown) is frozen
        # else: a whole other model (a frozen teacher) is frozen; it says nothing here

    def covers(self, base: str, attr: str) -> bool:
        return attr in self.attrs or base in self.roots


def _made_by_call(facts: Facts, source: SourceFile, expr: ast.AST) -> bool:
    found = visible_bindings(facts, source, dotted(expr) or "", expr)
    return bool(found) and all(b.kind == "assign" and facts.flow.producing_calls(
        Origin(source, element_for(b), "value")) for b in found)


def _by_design(attr: str) -> bool:
    return any(word in attr.lower() for word in NOT_OPTIMIZED)


# ---- messages ------------------------------------------------------------------------------
def _message(base: str, misses: list[tuple[Shape, list[str]]]) -> str:
    if len(misses) == 1:
        shape, missing = misses[0]
        if missing == ["*"]:
            return _library_message(base, shape)
        return _fitted("optimizer misses trainable parameters of ",
                       [_child(base, a) for a in missing], f"submodules of `{base[:20]}`")
    # One model, several possible classes: what each would miss ("... or ...").
    groups = [", ".join("the rest" if a == "*" else _child(base, a) for a in missing)
              + f" ({shape.label})" for shape, missing in misses]
    text = "optimizer misses " + " or ".join(groups)
    if len(text) <= 100:
        return text
    return _fitted(f"optimizer misses parameters of `{base[:20]}` as ",
                   [shape.label for shape, _ in misses], "classes")


def _child(base: str, attr: str) -> str:
    """``model.head``; ``model[0]`` for an ``nn.Sequential``'s numbered child."""
    return f"`{base}[{attr}]`" if attr.isdigit() else f"`{base}.{attr}`"


def _library_message(base: str, shape: Shape) -> str:
    text = (f"optimizer only gets the head of `{base}` ({shape.label}); the rest trains "
            "but is never updated")
    return text if len(text) <= 100 else "optimizer only gets the head of a " + shape.label


def _fitted(head: str, names: list[str], unit: str) -> str:
    """``head`` and as many of ``names`` as fit in 100 characters (``and N more``)."""
    for shown in range(len(names), 0, -1):
        rest = len(names) - shown
        text = head + ", ".join(names[:shown]) + (f" and {rest} more" if rest else "")
        if len(text) <= 100:
            return text
    return f"optimizer misses trainable parameters of {len(names)} {unit}"
