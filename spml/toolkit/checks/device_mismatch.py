"""L0-01: a model on the GPU fed batches (or a loss fed targets) that stay on the CPU."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, replace

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._devices import base_name, chain_moves, is_move, keyword, origins
from spml.toolkit.checks.flow import CHAINABLE, Origin, dotted, maximal_names, scope_nodes
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

# Calls that wrap a module and return it (or a wrapper running it) unchanged in device.
WRAPPERS = frozenset({"torch.compile", "torch.nn.DataParallel", "torch.nn.parallel.DataParallel",
                      "torch.nn.parallel.DistributedDataParallel",
                      "torch.nn.parallel.distributed.DistributedDataParallel", "torch.jit.script"})
# Wrappers that copy their inputs to the module's device themselves (DataParallel scatters
# them; DistributedDataParallel does when given ``device_ids``).
SCATTERING = frozenset({"torch.nn.DataParallel", "torch.nn.parallel.DataParallel"})
DDP = frozenset({"torch.nn.parallel.DistributedDataParallel",
                 "torch.nn.parallel.distributed.DistributedDataParallel"})
# Iterables that hand out the elements of their first argument.
ITER_WRAPPERS = frozenset({"enumerate", "iter", "tqdm", "tqdm.tqdm", "tqdm.auto.tqdm"})
FUNCTIONAL_LOSSES = frozenset({
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "cosine_embedding_loss",
    "margin_ranking_loss", "triplet_margin_loss", "ctc_loss", "poisson_nll_loss"})
MOVED, UNMOVED = "moved", "unmoved"


@dataclass(frozen=True)
class Made:
    """A module object: the constructor call that built it and whether it was moved there.
    ``known`` is False for a library call of unknown class (``models.__dict__[arch]()``,
    ``timm.create_model(...)``): only a move of it is evidence that it is a model on the
    device. ``scatters`` when a DataParallel-like wrapper moves its inputs itself."""

    source: SourceFile
    ctor: ast.Call
    name: str
    moved: bool
    known: bool = True
    scatters: bool = False


class DeviceMismatch(Check):
    """Checks that the model, its input batches and the loss targets end up on one device.

    ## What it does
    Follows each call of a model (an instance of the project's own ``nn.Module`` subclass or
    a ``torch.nn`` layer) back to where the model was built, and each batch argument back to
    the loop over a ``DataLoader`` it came from. It flags a batch (or a loss target) that is
    never moved with ``.to(device)`` / ``.cuda()`` while the model was, and a model that is
    never moved while its batches are. A library model of unknown class (torchvision's
    ``models.__dict__[arch]()``, ``timm.create_model(...)``) counts once it is moved to the
    device, and is trusted otherwise. ``DataParallel`` (and ``DistributedDataParallel`` with
    ``device_ids``) copies the batches itself, so only the loss targets must be moved; an
    inference pipeline (diffusers, ``transformers.pipeline``) takes prompts and moves its
    own tensors. A batch moved entry by entry (``for k, v in batch.items(): batch[k] =
    v.to(device)``) counts as moved, and a DataLoader over a dataset built from tensors
    already on the GPU (``TensorDataset(X, Y)`` with ``X = X.to(device)``) yields GPU
    batches. Values whose origin it cannot see (function parameters without a visible
    caller, library wrappers, config objects) are trusted.

    ## Why is this bad?
    A model on the GPU called with CPU tensors fails at the first step with "Expected all
    tensors to be on the same device", after the run was queued, data loaded and the model
    built. A branch that only runs at evaluation time or on the first real GPU node fails
    hours later, wasting the allocation.

    ## Example
    ```python
    model = GPT(config).to(device)
    for x, y in train_loader:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    ```

    ## Use instead
    ```python
    model = GPT(config).to(device)
    for x, y in train_loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    ```

    ## References
    - https://pytorch.org/docs/stable/notes/cuda.html#device-agnostic-code
    """

    id = "L0-01"
    name = "device-mismatch"
    severity = "critical"
    message = "model, batches and loss are not on the same device"
    fix = "Move the model once and every batch with .to(device, non_blocking=True) in the loop"
    condition = "uses CUDA"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.uses_cuda else not_applicable("no CUDA use")

    def run(self, facts: Facts) -> Iterator[Finding]:
        if facts.project.calls_to("torch.set_default_device", "torch.set_default_tensor_type"):
            return  # tensors are created on the GPU by default: batches need no move
        moved_ids = _statement_moves(facts)
        moved_scopes: set[int] = set()
        for source, call in _candidate_calls(facts):
            made = _resolve_module(facts, source, call.func)
            if not made or any(_is_loss(m.name) for m in made):
                continue
            moved = {m.moved or id(m.ctor) in moved_ids or _moves_itself(facts, m) for m in made}
            if moved == {True}:
                moved_scopes.add(id(source.scope_of(call)))
                if not _moves_inputs(facts, made) and not any(m.scatters for m in made):
                    yield from self._unmoved_inputs(facts, source, call, "batch")
            elif moved == {False} and all(m.known for m in made) \
                    and _only_called(facts, source, call.func):
                yield from self._model_left_behind(facts, source, call)
        yield from self._loss_targets(facts, moved_scopes)

    def _unmoved_inputs(self, facts: Facts, source: SourceFile, call: ast.Call,
                        what: str) -> Iterator[Finding]:
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            name = base_name(arg)
            if name is not None and batch_state(facts, source, name) == UNMOVED:
                yield self.finding(source, arg, f"{what} `{dotted(name)}` is never moved to "
                                   "the model's device")

    def _model_left_behind(self, facts: Facts, source: SourceFile,
                           call: ast.Call) -> Iterator[Finding]:
        args = [base_name(a) for a in [*call.args, *(k.value for k in call.keywords)]]
        states = {batch_state(facts, source, a) for a in args if a is not None}
        if states == {MOVED}:
            yield self.finding(source, call, f"model `{dotted(call.func)}` is never moved to "
                               "the device its batches are moved to")

    def _loss_targets(self, facts: Facts, moved_scopes: set[int]) -> Iterator[Finding]:
        for source, call in _candidate_calls(facts):
            if id(source.scope_of(call)) in moved_scopes and _loss_call(facts, source, call):
                yield from self._unmoved_inputs(facts, source, call, "target")


def _candidate_calls(facts: Facts) -> Iterator[tuple[SourceFile, ast.Call]]:
    """Calls of a named object outside model code (a module's own ``forward`` is not the
    training code, and its inputs come from its caller)."""
    for source, call in facts.project.calls:
        if dotted(call.func) is None or dotted(call.func).startswith("self."):
            continue
        cls = source.class_of(call)
        if cls is not None and facts.project.is_module_class(cls.name):
            continue
        yield source, call


def _is_module_ctor(facts: Facts, name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    if facts.project.is_module_class(name):
        return True
    if name.startswith("torch.nn.") and not name.startswith(("torch.nn.functional.",
                                                             "torch.nn.init.")):
        return last[:1].isupper() and last not in ("Parameter", "ParameterList")
    if last == "from_pretrained":  # GPT.from_pretrained(...) of a local or HF model class
        return name.startswith("transformers.") or facts.project.is_module_class(
            name.rsplit(".", 1)[0])
    return False


def _is_loss(name: str) -> bool:
    return name.endswith("Loss")


def _loss_call(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    name = facts.project.call_name(source, call) or ""
    if name.startswith("torch.nn.functional.") and name.rsplit(".", 1)[-1] in FUNCTIONAL_LOSSES:
        return True
    made = _resolve_module(facts, source, call.func)
    return bool(made) and all(_is_loss(m.name) for m in made)


def _resolve_module(facts: Facts, source: SourceFile, expr: ast.AST,
                    depth: int = 4) -> list[Made] | None:
    """The module constructions ``expr`` can hold, or None when any origin is unknown."""
    out: list[Made] = []
    seen: set[tuple[int, bool, bool]] = set()
    for origin in origins(facts, source, expr):
        made = _made(facts, origin, depth) if origin.kind == "value" else None
        if not made:
            return None
        for m in made:
            if (id(m.ctor), m.moved, m.scatters) not in seen:
                seen.add((id(m.ctor), m.moved, m.scatters))
                out.append(m)
    return out or None


def _made(facts: Facts, origin: Origin, depth: int) -> list[Made] | None:
    source, node, moved, scatters = origin.source, origin.node, False, False
    while isinstance(node, ast.Call):
        name = facts.project.call_name(source, node) or ""
        if name in WRAPPERS and node.args:
            scatters = scatters or _scatters(node, name)
            node = node.args[0]
        elif isinstance(node.func, ast.Attribute) and node.func.attr in CHAINABLE:
            moved = moved or is_move(source, node)
            node = node.func.value
        else:
            break
    if dotted(node) is not None and depth:
        inner = _resolve_module(facts, source, node, depth - 1)
        return _wrapped(inner or [], moved, scatters) or None
    if not isinstance(node, ast.Call):
        return None
    name = facts.project.call_name(source, node) or ""
    if _is_module_ctor(facts, name) or facts.flow.callee(source, node) is None:
        on_device = moved or keyword(node, "device") is not None or _built_on_device(source, node)
        return [Made(source, node, name, on_device, _is_module_ctor(facts, name), scatters)]
    returned = facts.flow.returns_of(source, node) if depth else []
    made = [_made(facts, Origin(src, value, "value"), depth - 1) for src, value in returned]
    if not made or any(m is None for m in made):
        return None
    return _wrapped([m for ms in made for m in ms or []], moved, scatters)


def _wrapped(made: list[Made], moved: bool, scatters: bool) -> list[Made]:
    """``made`` seen through the moves and wrappers applied to it on the way out."""
    return [replace(m, moved=m.moved or moved, scatters=m.scatters or scatters) for m in made]


def _scatters(call: ast.Call, name: str) -> bool:
    """``DataParallel(model)``, or ``DistributedDataParallel(model, device_ids=[...])``."""
    if name in SCATTERING:
        return True
    ids = keyword(call, "device_ids") or (call.args[1] if len(call.args) > 1 else None)
    return name in DDP and ids is not None and not (isinstance(ids, ast.Constant)
                                                   and ids.value is None)


def _built_on_device(source: SourceFile, node: ast.AST) -> bool:
    """Built inside ``with torch.device("cuda"):``."""
    return any(isinstance(p, ast.With) and any(
        isinstance(i.context_expr, ast.Call)
        and source.canonical(i.context_expr.func) == "torch.device" for i in p.items)
        for p in source.ancestors(node))


def _statement_moves(facts: Facts) -> set[int]:
    """Constructor calls of modules moved by a statement like ``model.to(device)``."""
    found: set[int] = set()
    for source, call in facts.project.method_calls("to", "cuda"):
        receiver = call.func.value
        if not is_move(source, call) or dotted(receiver) is None:
            continue
        for made in _resolve_module(facts, source, receiver) or []:
            found.add(id(made.ctor))
    return found


def _moves_itself(facts: Facts, made: Made) -> bool:
    """A module class whose ``__init__`` calls ``self.to(...)`` / ``self.cuda()``."""
    found = facts.project.local_class(made.name)
    if found is None:
        return False
    source, cls = found
    return any(is_move(source, n) and dotted(n.func.value) == "self"
               for n in ast.walk(cls) if isinstance(n, ast.Call))


def _moves_inputs(facts: Facts, made: list[Made]) -> bool:
    """A model whose ``forward`` moves its own arguments (``x = x.to(self.device)``), or an
    inference pipeline (diffusers' ``DiffusionPipeline``, ``transformers.pipeline``): it
    takes prompts and puts its own tensors on its device."""
    for m in made:
        if _is_pipeline(m.name):
            return True
        found = _forward_of(facts, m.name)
        if found is None:
            continue
        source, forward = found
        params = {a.arg for a in forward.args.args[1:]}
        if any(is_move(source, n) and dotted(base_name(n.func.value) or n) in params
               for n in ast.walk(forward) if isinstance(n, ast.Call)):
            return True
    return False


def _is_pipeline(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "diffusers" and any(p.endswith("Pipeline") for p in parts) \
        or name in ("transformers.pipeline", "transformers.pipelines.pipeline")


def _forward_of(facts: Facts, name: str) -> tuple[SourceFile, ast.FunctionDef] | None:
    found, seen = facts.project.local_class(name), set()
    while found is not None and found[1].name not in seen:
        source, cls = found
        seen.add(cls.name)
        for node in cls.body:
            if isinstance(node, ast.FunctionDef) and node.name == "forward":
                return source, node
        bases = [facts.project.local_class(source.canonical(b)) for b in cls.bases]
        found = next((b for b in bases if b is not None), None)
    return None


def _only_called(facts: Facts, source: SourceFile, func: ast.AST) -> bool:
    """The model variable is never handed to another call (that call might move it), nor
    moved anywhere under its name (``global model; model = model.to(device)``)."""
    name = dotted(func)
    if any(is_move(s, c) and dotted(c.func.value) == name
           for s, c in facts.project.method_calls("to", "cuda")):
        return False
    scope = source.scope_of(func)
    for node in [*scope_nodes(scope), *scope_nodes(source.tree)]:
        if isinstance(node, ast.Call) and any(
                dotted(a) == name for a in [*node.args, *(k.value for k in node.keywords)]):
            return False
    return True


# ---- batches -------------------------------------------------------------------------------
def batch_state(facts: Facts, source: SourceFile, expr: ast.AST) -> str | None:
    """``unmoved`` when every value of ``expr`` comes straight from a DataLoader, ``moved``
    when every value was moved to a device, None otherwise (unknown or mixed)."""
    if _moved_in_place(source, expr):
        return MOVED
    states = set()
    for origin in origins(facts, source, expr):
        states.add(_origin_state(facts, origin))
    return states.pop() if len(states) == 1 else None


def _moved_in_place(source: SourceFile, expr: ast.AST) -> bool:
    """``for k, v in batch.items(): batch[k] = v.to(device)`` (or ``batch[k] =
    batch[k].cuda()``) before ``expr`` in its function: the batch's entries were moved."""
    name = dotted(expr)
    if name is None:
        return False
    for node in scope_nodes(source.scope_of(expr)):
        if isinstance(node, ast.Assign) and node.lineno < expr.lineno and any(
                isinstance(t, ast.Subscript) and dotted(t.value) == name for t in node.targets) \
                and any(is_move(source, n) for n in ast.walk(node.value)):
            return True
    return False


def _origin_state(facts: Facts, origin: Origin) -> str | None:
    source, node = origin.source, origin.node
    if origin.kind == "iter":
        return UNMOVED if _from_loader(facts, source, node) else None
    if origin.kind != "value" or node is None:
        return None
    if chain_moves(source, node):
        return MOVED
    if isinstance(node, ast.Subscript) and dotted(node.value):
        return batch_state(facts, source, node.value)  # x = batch[0]
    if isinstance(node, ast.Call) and facts.project.call_name(source, node) == "next" \
            and node.args:
        return UNMOVED if _from_loader(facts, source, node.args[0]) else None
    return None


def _from_loader(facts: Facts, source: SourceFile, iterable: ast.AST | None) -> bool:
    """True when ``iterable`` yields the CPU batches of a ``DataLoader``."""
    while isinstance(iterable, ast.Call) and iterable.args and \
            facts.project.call_name(source, iterable) in ITER_WRAPPERS:
        iterable = iterable.args[0]
    if iterable is None:
        return False
    if isinstance(iterable, ast.Call):
        return _is_cpu_loader(facts, source, iterable)
    if dotted(iterable) is None:
        return False
    found = origins(facts, source, iterable)
    return bool(found) and all(o.kind == "value" and o.node is not None
                               and _from_loader(facts, o.source, o.node) for o in found)


def _is_cpu_loader(facts: Facts, source: SourceFile, call: ast.Call) -> bool:
    if not any(c is call for _, c in facts.dataloaders):
        return False
    dataset = keyword(call, "dataset") or (call.args[0] if call.args else None)
    collate = keyword(call, "collate_fn")
    return not any(_touches_device(facts, source, part) for part in (dataset, collate)
                   if part is not None)


def _touches_device(facts: Facts, source: SourceFile, expr: ast.AST) -> bool:
    """A dataset or collate function that may put tensors on the GPU itself (looking one
    call deep into the project's own classes and functions); library objects count as CPU."""
    nodes: list[tuple[SourceFile, ast.AST]] = [(source, expr)]
    for origin in facts.flow.origins(source, expr) if dotted(expr) else []:
        if origin.node is not None:
            nodes.append((origin.source, origin.node))
    for src, node in list(nodes):
        for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
            # TensorDataset(X, Y) with X = torch.randn(...).to(device): built from GPU tensors
            nodes.extend((o.source, o.node) for a in [*call.args, *call.keywords]
                         for n in maximal_names(a) for o in facts.flow.origins(src, n)
                         if o.node is not None and o.kind == "value")
            local = facts.project.local_class(facts.project.call_name(src, call))
            nodes.extend([local] if local else [])
            callee = facts.flow.callee(src, call)
            nodes.extend([callee] if callee else [])
        name = (dotted(node) or "").rsplit(".", 1)[-1]
        nodes.extend(facts.project.functions.get(name, [])[:1])  # collate_fn=collate
    return any(_mentions_device(src, node) for src, node in nodes)


def _mentions_device(source: SourceFile, node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and (is_move(source, sub) or keyword(sub, "device")):
            return True
    return False
