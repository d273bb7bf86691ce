"""What a module object is made of: the parameter-bearing children an optimizer must cover.

A name like ``model`` is traced to the calls that made it (through ``.to(device)``,
``DataParallel``/``DDP`` wrappers, local factory functions and function parameters) and
each call to a ``Shape``: a local ``nn.Module`` class (the submodules and parameters its
``__init__`` creates, in any branch), an ``nn.Sequential``/``nn.ModuleList`` of listed
layers (children by position or ``OrderedDict`` name), or a library model (torchvision,
timm, transformers) whose children are not listed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from spml.toolkit.checks._optim import call_site_args, visible_bindings
from spml.toolkit.checks.flow import CHAINABLE, WRAPPERS, Origin, element_for
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
INDEXED = frozenset({"torch.nn.Sequential", "torch.nn.ModuleList"})
PRETRAINED = ("torchvision.models.", "timm.create_model")
# Where a library model comes from, and what to call it in a message.
LIBRARIES = (("torchvision.models", "torchvision model"), ("timm.create_model", "timm model"),
             ("timm.models.", "timm model"), ("transformers.", "transformers model"))
BRANCHING = (ast.If, ast.Try, ast.TryStar, ast.With, ast.Match)


@dataclass
class Shape:
    """One class a module object may have. ``attrs``: its parameter-bearing children (name
    -> where made); ``order``: every child by position (an indexable container);
    ``library``: a library model whose children are not listed."""

    label: str
    attrs: dict[str, ast.AST] = field(default_factory=dict)
    order: tuple[str, ...] = ()
    source: SourceFile | None = None
    cls: ast.ClassDef | None = None
    library: bool = False

    def expand(self, attr: str) -> set[str] | None:
        """The children ``attr`` names: itself, or those an index/slice picks (None when
        the object is not an indexable container or the index is out of range)."""
        if not attr.startswith("["):
            return {attr}
        if not self.order:
            return None
        inner = attr[1:-1]
        try:
            if ":" not in inner:
                return {self.order[int(inner)]}
            return set(self.order[slice(*(int(b) if b else None for b in inner.split(":")))])
        except (IndexError, ValueError):
            return None


def child_shape(facts: Facts, shape: Shape, attr: str) -> Shape | None:
    """The shape of the child ``attr`` of a local class, when ``__init__`` makes it as a
    listed ``nn.Sequential``/``nn.ModuleList`` (``self.net = nn.Sequential(a, b, c)``)."""
    stmt = shape.attrs.get(attr)
    value = getattr(stmt, "value", None)
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
            and value.func.attr in CHAINABLE:
        value = value.func.value
    if shape.source is None or not isinstance(value, ast.Call):
        return None
    name = facts.project.call_name(shape.source, value)
    return _indexed_shape(facts, shape.source, value, name) if name in INDEXED else None


# ---- which calls made an object ---------------------------------------------------------
def module_shapes(facts: Facts, source: SourceFile,
                  base: ast.AST) -> tuple[tuple, list[Shape]] | None:
    """Identity of the object ``base`` names and the shapes it may have; None if unknown."""
    name = dotted(base)
    if name == "self":
        cls = source.class_of(base)
        if cls is None or not facts.project.is_module_class(cls.name):
            return None
        return ("self", id(cls)), [_class_shape(facts, source, cls)]
    if name is None or "." in name:
        return None
    calls = model_makers(facts, source, base)
    if not calls:
        return None
    shapes: dict[object, Shape] = {}
    for call_source, call in calls:
        shape = shape_of_call(facts, call_source, call)
        if shape is None:
            return None
        # one shape per class (two `Net()` calls), per library, per listed container
        key = id(shape.cls) if shape.cls else shape.label if shape.library else id(call)
        shapes.setdefault(key, shape)
    return ("call", frozenset(id(c) for _, c in calls)), list(shapes.values())


def model_makers(facts: Facts, source: SourceFile, expr: ast.AST,
                 depth: int = 2) -> list[tuple[SourceFile, ast.Call]] | None:
    """The calls that made the object ``expr`` names; a function parameter is followed to
    the arguments of the function's call sites. None when some binding is unknown."""
    calls: list[tuple[SourceFile, ast.Call]] = []
    for binding in visible_bindings(facts, source, dotted(expr) or "", expr):
        if binding.kind == "assign":
            found = _unwrapped(facts, facts.flow.producing_calls(
                Origin(source, element_for(binding), "value")))
        elif binding.kind == "param" and depth:
            found = _passed(facts, source, binding.node, depth)
        else:
            found = None
        if found is None:
            return None
        calls += found
    return calls


def _passed(facts: Facts, source: SourceFile, param: ast.AST,
            depth: int) -> list[tuple[SourceFile, ast.Call]] | None:
    sites = call_site_args(facts, source, param)
    if not sites:
        return None
    calls: list[tuple[SourceFile, ast.Call]] = []
    for site_source, arg in sites:
        found = model_makers(facts, site_source, arg, depth - 1) if dotted(arg) else \
            _unwrapped(facts, facts.flow.producing_calls(Origin(site_source, arg, "value")))
        if found is None:
            return None
        calls += found
    return calls


def _unwrapped(facts: Facts, calls: list[tuple[SourceFile, ast.Call]],
               depth: int = 3) -> list[tuple[SourceFile, ast.Call]] | None:
    """``DataParallel(model).cuda()`` -> the calls that made ``model`` (the flow unwraps a
    wrapper only when nothing is chained after it)."""
    out: list[tuple[SourceFile, ast.Call]] = []
    for source, call in calls:
        if facts.project.call_name(source, call) not in WRAPPERS or not call.args:
            out.append((source, call))
            continue
        if depth == 0:
            return None
        for origin in facts.flow.origins(source, call.args[0]):
            if origin.kind != "value":
                return None
            inner = _unwrapped(facts, facts.flow.producing_calls(origin), depth - 1)
            if inner is None:
                return None
            out += inner
    return out


# ---- the shape each call makes -------------------------------------------------------------
def shape_of_call(facts: Facts, source: SourceFile, call: ast.Call) -> Shape | None:
    name = facts.project.call_name(source, call)
    found = facts.project.local_class(name)
    if found is not None and facts.project.is_module_class(name):
        return _class_shape(facts, *found)
    if name in INDEXED:
        return _indexed_shape(facts, source, call, name)
    label = library_model(facts, source, call)
    return Shape(label, library=True) if label else None


def _class_shape(facts: Facts, source: SourceFile, cls: ast.ClassDef) -> Shape:
    return Shape(cls.name, module_attrs(facts, source, cls), source=source, cls=cls)


def library_model(facts: Facts, source: SourceFile, call: ast.Call) -> str | None:
    """``torchvision model`` for ``models.resnet50()``, ``models.__dict__[arch]()``,
    ``getattr(models, arch)()``; ``timm model``; ``transformers model``. None otherwise."""
    func = call.func
    if isinstance(func, ast.Subscript):
        owner = source.canonical(func.value) or ""
    elif isinstance(func, ast.Call) and facts.project.call_name(source, func) == "getattr" \
            and func.args:
        owner = (source.canonical(func.args[0]) or "") + "."
    else:
        owner = facts.project.call_name(source, call) or ""
    if owner.startswith("transformers.") and not owner.endswith((".from_pretrained",
                                                                 ".from_config")):
        return None  # a config or tokenizer, not a model
    return next((label for root, label in LIBRARIES if owner.startswith(root)), None)


def _indexed_shape(facts: Facts, source: SourceFile, call: ast.Call, name: str) -> Shape | None:
    """``nn.Sequential(a, b, c)`` (children ``0``, ``1``, ``2``),
    ``nn.Sequential(OrderedDict([("conv", a), ...]))``, ``nn.ModuleList([a, b])``."""
    args = call.args
    if name.endswith("ModuleList") or (len(args) == 1 and _ordered_dict(source, args[0])):
        items = _named_items(source, args[0]) if len(args) == 1 and not call.keywords else None
    else:
        items = None if call.keywords or any(isinstance(a, ast.Starred) for a in args) \
            else [(str(i), a) for i, a in enumerate(args)]
    if items is None:
        return None
    attrs = {key: value for key, value in items if bears_params(facts, source, value)}
    return Shape("nn." + name.rsplit(".", 1)[-1], attrs, tuple(k for k, _ in items), source)


def _ordered_dict(source: SourceFile, node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and (source.canonical(node.func) or "").endswith(
        "OrderedDict")


def _named_items(source: SourceFile, node: ast.AST) -> list[tuple[str, ast.AST]] | None:
    """Children of a ModuleList literal (by position) or an OrderedDict (by key)."""
    if isinstance(node, ast.List | ast.Tuple):
        if any(isinstance(e, ast.Starred) for e in node.elts):
            return None
        return [(str(i), e) for i, e in enumerate(node.elts)]
    if not _ordered_dict(source, node) or len(node.args) != 1 or node.keywords:
        return None
    pairs = node.args[0]
    if not isinstance(pairs, ast.List | ast.Tuple):
        return None
    out = []
    for pair in pairs.elts:
        key = pair.elts[0] if isinstance(pair, ast.Tuple) and len(pair.elts) == 2 else None
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            return None
        out.append((key.value, pair.elts[1]))
    return out


# ---- a local class's parameter-bearing attributes ------------------------------------------
def module_attrs(facts: Facts, source: SourceFile, cls: ast.ClassDef,
                 seen: frozenset[str] = frozenset()) -> dict[str, ast.stmt]:
    """Attributes with parameters that ``__init__`` (or a local base's) sets, in any branch
    (``if rnn_type in ...: self.rnn = ... else: self.rnn = nn.RNN(...)``):
    ``self.head = nn.Linear(...)``, ``self.blocks = nn.ModuleList(...)``, a local module."""
    if cls.name in seen:
        return {}
    seen = seen | {cls.name}
    out: dict[str, ast.stmt] = {}
    for base in cls.bases:
        found = facts.project.local_class(source.canonical(base))
        if found is not None:
            out.update(module_attrs(facts, found[0], found[1], seen))
    for stmt, nested in _init_statements(_init(cls).body if _init(cls) else []):
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
            else getattr(stmt, "target", None) if isinstance(stmt, ast.AnnAssign) else None
        if isinstance(target, ast.Attribute) and dotted(target.value) == "self":
            if stmt.value is not None and bears_params(facts, source, stmt.value, seen):
                out[target.attr] = stmt
            elif not nested:  # an unconditional `self.head = None` drops it for sure
                out.pop(target.attr, None)
    return out


def _init(cls: ast.ClassDef) -> ast.FunctionDef | None:
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef)
                 and n.name == "__init__"), None)


def _init_statements(body: list[ast.stmt], nested: bool = False):
    """(statement, inside a branch) in source order, through if/try/with/match blocks; not
    into loops (a loop may run zero times) or nested definitions."""
    for stmt in body:
        yield stmt, nested
        if isinstance(stmt, BRANCHING):
            blocks = [getattr(stmt, "body", []), getattr(stmt, "orelse", []),
                      getattr(stmt, "finalbody", []),
                      *(h.body for h in getattr(stmt, "handlers", [])),
                      *(c.body for c in getattr(stmt, "cases", []))]
            inner = nested or not isinstance(stmt, ast.With)
            for block in blocks:
                yield from _init_statements(block, inner)


def ties(cls: ast.ClassDef) -> list[tuple[str, str, bool]]:
    """Submodules sharing a weight (``self.lm_head.weight = self.wte.weight``), as
    (one side, other side, conditional). A tie is unconditional when ``__init__`` makes it
    at its top level, or calls the method making it there (``self.tie_weights()``)."""
    init = _init(cls)
    called = {s.value.func.attr for s in (init.body if init else [])
              if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
              and isinstance(s.value.func, ast.Attribute) and dotted(s.value.func.value) == "self"}
    out = []
    for method in cls.body:
        if not isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        always = method is init or method.name in called
        top = {id(s) for s in method.body}
        for node in ast.walk(method):
            sides = _tie_sides(node)
            if sides:
                out.append((*sides, not (always and id(node) in top)))
    return out


def _tie_sides(stmt: ast.AST) -> tuple[str, str] | None:
    if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
        return None
    sides = [dotted(stmt.targets[0]) or "", dotted(stmt.value) or ""]
    if all(s.startswith("self.") and s.count(".") >= 2 for s in sides):
        return sides[0].split(".")[1], sides[1].split(".")[1]
    return None


def run_without_grad(cls: ast.ClassDef) -> set[str]:
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
            return _rewraps(value) or any(bears_params(facts, source, c, seen)
                                          for c in ast.walk(value)
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


def _rewraps(call: ast.Call) -> bool:
    """``nn.Sequential(*list(resnet.children())[:-1])``: a module's own children re-wrapped
    (a pretrained backbone without its head), which carry its parameters."""
    return any(isinstance(arg, ast.Starred) and any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        and n.func.attr == "children" and not n.args for n in ast.walk(arg))
        for arg in call.args)


def _keyword_false(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is False
               for k in call.keywords)
