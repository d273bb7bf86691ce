"""L0-04: an optimizer that misses trainable submodules of the model it trains."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._optim import (
    PARAM_METHODS,
    Freeze,
    call_site_args,
    freezes,
    visible_bindings,
)
from spml.toolkit.checks.flow import CHAINABLE, Origin, element_for, scope_nodes
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

PARAM_LAYERS = frozenset({
    "Linear", "Bilinear", "LazyLinear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d",
    "ConvTranspose2d", "ConvTranspose3d", "LazyConv1d", "LazyConv2d", "LazyConv3d",
    "Embedding", "EmbeddingBag", "LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm1d",
    "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LSTM", "GRU", "RNN", "LSTMCell",
    "GRUCell", "RNNCell", "MultiheadAttention", "Transformer", "TransformerEncoder",
    "TransformerDecoder", "TransformerEncoderLayer", "TransformerDecoderLayer", "PReLU"})
CONTAINERS = frozenset({"ModuleList", "Sequential", "ModuleDict", "ParameterList",
                        "ParameterDict"})
PRETRAINED = ("torchvision.models.", "timm.create_model")
# Submodules updated without the optimizer (EMA/target copies, teachers): not a finding.
NOT_OPTIMIZED = ("ema", "target", "teacher", "momentum", "frozen", "shadow", "old_")


class OptimizerMissesParameters(Check):
    """Checks that the optimizers cover every trainable submodule of the model they train.

    ## What it does
    Follows each optimizer's ``params`` argument (``model.parameters()``, a list of
    ``model.sub.parameters()``, ``[{"params": ...}, ...]`` groups, ``filter``/comprehension
    over ``requires_grad``, through variables) to the model object and its ``nn.Module``
    class, reads the submodules and ``nn.Parameter``s its ``__init__`` always creates, and
    flags the ones no optimizer receives and the project never freezes. Also flags a
    submodule assigned to the model (``model.head = nn.Linear(...)``) after the optimizer
    was built from ``model.parameters()``.

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
        if facts.optimizer_constructions:
            return APPLIES
        return not_applicable("no optimizer is built")

    def run(self, facts: Facts) -> Iterator[Finding]:
        if facts.project.method_calls("add_param_group"):
            return  # groups added later: the construction does not tell the whole story
        resolver = ParamResolver(facts)
        built, unknown = [], False
        for source, call in facts.optimizer_constructions:
            params = optimizer_params(call)
            parts = resolver.parts(source, params) if params is not None else None
            if parts is None:
                unknown = True
            else:
                built.append((source, call, parts))
        for source, call, parts in built:
            yield from self._late_assignments(facts, source, call, parts)
        if not unknown:
            yield from self._missing(facts, built)

    def _missing(self, facts: Facts, built: list) -> Iterator[Finding]:
        coverage = _coverage(facts, built)
        frozen = _Frozen(facts, {dotted(p.base) for _, _, parts in built for p in parts})
        if coverage is None or frozen.everything:
            return
        for cover in coverage.values():
            if cover.everything:
                continue
            attrs = module_attrs(facts, cover.source, cover.cls)
            tied = _tied(cover.cls) | _run_without_grad(cover.cls)
            missing = [a for a in attrs if a not in cover.attrs and a not in tied
                       and not frozen.covers(cover.base, a) and not _by_design(a)]
            if missing:
                where, call = cover.first
                yield self.finding(where, call, _missing_message(cover.base, missing))

    def _late_assignments(self, facts: Facts, source: SourceFile, call: ast.Call,
                          parts: list[Part]) -> Iterator[Finding]:
        """``model.head = nn.Linear(...)`` after ``AdamW(model.parameters())``, same scope."""
        scope = source.scope_of(call)
        bases = {dotted(p.base) for p in parts if p.source is source} - {None, "self"}
        end = call.end_lineno or call.lineno
        later = [n for n in scope_nodes(scope) if getattr(n, "lineno", 0) > end]
        made = {id(c) for _, c in facts.optimizer_constructions}
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
    """What the optimizers take from one module object."""

    base: str
    source: SourceFile
    cls: ast.ClassDef
    first: tuple[SourceFile, ast.Call]
    attrs: set[str] = field(default_factory=set)
    everything: bool = False


def _coverage(facts: Facts, built: list) -> dict[tuple, _Cover] | None:
    """Per model object, the submodules the optimizers cover; None when a part's model
    cannot be identified (it might be an alias of a submodule)."""
    out: dict[tuple, _Cover] = {}
    for source, call, parts in built:
        for part in parts:
            found = module_of(facts, part)
            if found is None:
                return None
            key, cls_source, cls = found
            cover = out.setdefault(key, _Cover(dotted(part.base) or "model", cls_source, cls,
                                               (source, call)))
            if part.attr is None:
                cover.everything = True
            else:
                cover.attrs.add(part.attr)
    return out


class _Frozen:
    """Which submodules the project freezes (their absence from the optimizer is intended)."""

    def __init__(self, facts: Facts, bases: set[str | None]) -> None:
        self.attrs: set[str] = set()
        self.roots: set[str] = set()
        self.everything = False
        for freeze in freezes(facts):
            if freeze.frozen is not True:
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


def _run_without_grad(cls: ast.ClassDef) -> set[str]:
    """Submodules the model's own code runs under ``torch.no_grad()``/``inference_mode()``
    or whose output it detaches (a linear probe): no gradient reaches them by design."""
    out: set[str] = set()
    for node in ast.walk(cls):
        blocks = [node] if isinstance(node, ast.With) and any(
            ((dotted(item.context_expr.func) if isinstance(item.context_expr, ast.Call)
              else None) or "").endswith(("no_grad", "inference_mode"))
            for item in node.items) else []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "detach":
            blocks.append(node.func.value)
        for block in blocks:
            out.update(sub.func.attr for sub in ast.walk(block) if isinstance(sub, ast.Call)
                       and isinstance(sub.func, ast.Attribute)
                       and dotted(sub.func.value) == "self")
    return out


def _tied(cls: ast.ClassDef) -> set[str]:
    """Submodules sharing a weight (``self.lm_head.weight = self.wte.weight``)."""
    out: set[str] = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            sides = [dotted(node.targets[0]) or "", dotted(node.value) or ""]
            if all(s.startswith("self.") and s.count(".") >= 2 for s in sides):
                out |= {s.split(".")[1] for s in sides}
    return out


def _missing_message(base: str, missing: list[str]) -> str:
    names = [f"`{base}.{a}`" for a in missing]
    head = "optimizer misses trainable parameters of "
    for shown in range(len(names), 0, -1):
        rest = len(names) - shown
        text = head + ", ".join(names[:shown]) + (f" and {rest} more" if rest else "")
        if len(text) <= 100:
            return text
    return f"optimizer misses trainable parameters of {len(names)} submodules of `{base[:20]}`"


# ---- which parameters an optimizer holds ---------------------------------------------------
MUTATORS = frozenset({"append", "extend", "insert", "add", "update", "add_param_group"})


@dataclass(frozen=True)
class Part:
    """Parameters of one module object: all of ``base`` (``attr`` None) or of its submodule
    ``base.attr``; ``filtered`` when they went through a ``requires_grad`` filter."""

    source: SourceFile
    base: ast.AST
    attr: str | None
    filtered: bool = False


def optimizer_params(call: ast.Call) -> ast.AST | None:
    """The params argument of an optimizer construction (first positional or ``params=``)."""
    if call.args:
        return None if isinstance(call.args[0], ast.Starred) else call.args[0]
    return next((k.value for k in call.keywords if k.arg == "params"), None)


class ParamResolver:
    """Resolves a params expression to the module parts it covers; None when unknown."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts

    def parts(self, source: SourceFile, expr: ast.AST, filtered: bool = False,
              depth: int = 8) -> list[Part] | None:
        if depth == 0:
            return None
        if isinstance(expr, ast.Call):
            return self._call(source, expr, filtered, depth)
        if isinstance(expr, ast.ListComp | ast.GeneratorExp | ast.SetComp):
            return self._comprehension(source, expr, filtered, depth)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return self._union(source, [expr.left, expr.right], filtered, depth)
        if isinstance(expr, ast.List | ast.Tuple):
            return self._union(source, expr.elts, filtered, depth)
        if isinstance(expr, ast.Dict):
            values = [v for k, v in zip(expr.keys, expr.values, strict=True)
                      if isinstance(k, ast.Constant) and k.value == "params"]
            return self._union(source, values, filtered, depth) if values else None
        if isinstance(expr, ast.Starred):
            return self.parts(source, expr.value, filtered, depth - 1)
        if dotted(expr) is not None:
            return self._name(source, expr, filtered, depth)
        return None

    def _union(self, source: SourceFile, exprs: list[ast.AST], filtered: bool,
               depth: int) -> list[Part] | None:
        out: list[Part] = []
        for expr in exprs:
            found = self.parts(source, expr, filtered, depth - 1)
            if found is None:
                return None
            out += found
        return out

    def _call(self, source: SourceFile, call: ast.Call, filtered: bool,
              depth: int) -> list[Part] | None:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in PARAM_METHODS:
            name = dotted(func.value)
            if name is None or name.count(".") > 1:
                return None
            if "." not in name:
                return [Part(source, func.value, None, filtered)]
            return [Part(source, func.value.value, name.split(".")[1], filtered)]
        called = self.facts.project.call_name(source, call)
        if called in ("list", "tuple", "set", "itertools.chain") and not call.keywords:
            return self._union(source, call.args, filtered, depth)
        if called == "filter" and len(call.args) == 2 and _mentions_requires_grad(call.args[0]):
            return self.parts(source, call.args[1], True, depth - 1)
        return None

    def _comprehension(self, source: SourceFile, comp: ast.AST, filtered: bool,
                       depth: int) -> list[Part] | None:
        if len(comp.generators) != 1 or not isinstance(comp.elt, ast.Name):
            return None
        gen = comp.generators[0]
        names = [n.id for n in ast.walk(gen.target) if isinstance(n, ast.Name)]
        if not names or comp.elt.id != names[-1]:
            return None
        if gen.ifs and not all(_mentions_requires_grad(t) for t in gen.ifs):
            return None  # a selection by name or shape: deliberate, not ours to judge
        return self.parts(source, gen.iter, filtered or bool(gen.ifs), depth - 1)

    def _name(self, source: SourceFile, expr: ast.AST, filtered: bool,
              depth: int) -> list[Part] | None:
        name = dotted(expr)
        found = visible_bindings(self.facts, source, name, expr)
        if not found and name.count(".") == 1 and isinstance(expr, ast.Attribute):
            return [Part(source, expr.value, expr.attr, filtered)]  # model.cls_token
        if not found or any(b.kind != "assign" for b in found):
            return None
        if _mutated(source, source.scope_of(found[0].node), name):
            return None
        return self._union(source, [element_for(b) for b in found], filtered, depth)


def _mentions_requires_grad(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "requires_grad" for n in ast.walk(node))


def _mutated(source: SourceFile, scope: ast.AST, name: str) -> bool:
    """True when a list/dict of parameters grows after it was bound (append, +=, [k]=)."""
    for node in scope_nodes(scope):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in MUTATORS and dotted(node.func.value) == name:
            return True
        if isinstance(node, ast.AugAssign) and dotted(node.target) == name:
            return True
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Subscript) and dotted(t.value) == name for t in node.targets):
            return True
    return False


# ---- module objects and their parameter-bearing attributes ---------------------------------
def module_of(facts: Facts, part: Part) -> tuple[tuple, SourceFile, ast.ClassDef] | None:
    """Identity and local ``nn.Module`` class of the object a part's ``base`` names."""
    name = dotted(part.base)
    if name == "self":
        cls = part.source.class_of(part.base)
        if cls is None or not facts.project.is_module_class(cls.name):
            return None
        return ("self", id(cls)), part.source, cls
    if name is None or "." in name:
        return None
    calls = _makers(facts, part.source, part.base)
    made = {(id(c), facts.project.call_name(s, c)) for s, c in calls or []}
    if len(made) != 1:
        return None
    ((key, class_name),) = made
    found = facts.project.local_class(class_name)
    if found is None or not facts.project.is_module_class(class_name):
        return None
    return ("call", key), found[0], found[1]


def _makers(facts: Facts, source: SourceFile, expr: ast.AST,
            depth: int = 2) -> list[tuple[SourceFile, ast.Call]] | None:
    """The calls that made the object ``expr`` names; a function parameter is followed to
    the arguments of the function's call sites. None when some binding is unknown."""
    calls: list[tuple[SourceFile, ast.Call]] = []
    for binding in visible_bindings(facts, source, dotted(expr) or "", expr):
        if binding.kind == "assign":
            value = element_for(binding)
            calls += facts.flow.producing_calls(Origin(source, value, "value"))
            continue
        sites = call_site_args(facts, source, binding.node) if binding.kind == "param" \
            and depth else None
        if not sites:
            return None
        for site_source, arg in sites:
            found = _makers(facts, site_source, arg, depth - 1) if dotted(arg) else \
                facts.flow.producing_calls(Origin(site_source, arg, "value"))
            if found is None:
                return None
            calls += found
    return calls


def module_attrs(facts: Facts, source: SourceFile, cls: ast.ClassDef,
                 seen: frozenset[str] = frozenset()) -> dict[str, ast.stmt]:
    """Attributes with parameters that ``__init__`` (or a local base's) always sets:
    ``self.head = nn.Linear(...)``, ``self.blocks = nn.ModuleList(...)``, a local module."""
    if cls.name in seen:
        return {}
    seen = seen | {cls.name}
    out: dict[str, ast.stmt] = {}
    for base in cls.bases:
        found = facts.project.local_class(source.canonical(base))
        if found is not None:
            out.update(module_attrs(facts, found[0], found[1], seen))
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef)
                 and n.name == "__init__"), None)
    for stmt in init.body if init else []:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
            else getattr(stmt, "target", None) if isinstance(stmt, ast.AnnAssign) else None
        if isinstance(target, ast.Attribute) and dotted(target.value) == "self":
            if stmt.value is not None and bears_params(facts, source, stmt.value, seen):
                out[target.attr] = stmt
            else:
                out.pop(target.attr, None)
    return out


def bears_params(facts: Facts, source: SourceFile, value: ast.AST,
                 seen: frozenset[str] = frozenset()) -> bool:
    """True when ``value`` certainly builds something with trainable parameters."""
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
            and value.func.attr in CHAINABLE:
        value = value.func.value  # nn.Linear(...).to(device)
    if not isinstance(value, ast.Call):
        return False
    name = facts.project.call_name(source, value) or ""
    last = name.rsplit(".", 1)[-1]
    if name in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
        return not _keyword_false(value, "requires_grad")
    if name.startswith("torch.nn."):
        if last in CONTAINERS:
            return any(bears_params(facts, source, c, seen) for c in ast.walk(value)
                       if isinstance(c, ast.Call) and c is not value)
        return last in PARAM_LAYERS and not (_keyword_false(value, "affine")
                                             or _keyword_false(value, "elementwise_affine"))
    if name.startswith(PRETRAINED) or name.endswith(".from_pretrained"):
        return True
    found = facts.project.local_class(name)
    if found is None or not facts.project.is_module_class(name):
        return False
    src, cls = found
    layers = {(src.canonical(b) or "").rsplit(".", 1)[-1] for b in cls.bases}
    return bool(layers & PARAM_LAYERS) or bool(module_attrs(facts, src, cls, seen))


def _keyword_false(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is False
               for k in call.keywords)


