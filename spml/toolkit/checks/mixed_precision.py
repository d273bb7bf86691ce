"""L0-02: fp16 autocast without loss scaling, a GradScaler used half-way, backward under
autocast, or a module trained with fp16 weights."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._amp_enabled import enabled_at_fp16, may_run_fp16
from spml.toolkit.checks._amp_reach import framework_scales, reached_backwards
from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks._devices import (
    AUTOCAST,
    FP16,
    Autocast,
    autocasts,
    grad_scalers,
    keyword,
    origins,
)
from spml.toolkit.checks.flow import dotted, mentions, scope_nodes, target_names
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

HALF_HINTS = frozenset({"torch.float16", "torch.half", "torch.bfloat16"})
HALF_STRINGS = frozenset({"float16", "bfloat16", "fp16", "bf16"})
NO_GRAD = frozenset({"torch.no_grad", "torch.inference_mode"})


class MixedPrecisionMisuse(Check):
    """Checks that autocast, GradScaler and low-precision weights are used the way PyTorch's
    automatic mixed precision requires.

    ## What it does
    Flags, in order of how often they bite:

    - fp16 autocast (``torch.autocast("cuda")``, ``dtype=torch.float16``,
      ``torch.cuda.amp.autocast()``) in a project that never creates a ``GradScaler``, when
      what the region computes is backpropagated (followed through assignments, into the
      project's functions and out through ``return`` to their callers). Autocast around
      inference (a validation function rendering ``pipeline(prompt)``, anything under
      ``torch.no_grad()``) needs no scaler, nor does a loss backpropagated with
      ``accelerator.backward(loss)`` (Accelerate, Fabric and DeepSpeed scale an fp16 loss
      themselves);
    - a ``GradScaler`` switched on only for another precision
      (``enabled=(dtype == "bfloat16")``) while autocast can run in fp16: it is off
      exactly when it is needed;
    - a ``GradScaler`` whose loss never goes through ``scaler.scale(loss).backward()``, whose
      optimizer steps directly instead of through ``scaler.step(optimizer)``, or which never
      calls ``scaler.update()``;
    - ``backward()`` called inside an fp16 (or unknown-dtype) ``with autocast(...)``
      block;
    - a module cast to fp16 with ``.half()`` / ``.to(torch.float16)`` and then trained.

    bf16 autocast needs no scaler and is not flagged, even around the backward (Intel's bf16
    CPU examples wrap the whole training loop); a dtype chosen at run time (nanoGPT's
    ``ptdtype`` with ``GradScaler(enabled=(dtype == "float16"))``) is trusted, and so is an
    ``enabled=`` flag whose value cannot be read (``enabled=use_amp``, ``enabled=args.fp16``).

    ## Why is this bad?
    fp16 has a narrow range: without loss scaling, small gradients flush to zero and the
    model silently stops learning. Scaling the loss but stepping the optimizer directly
    applies gradients that are tens of thousands of times too large; never calling
    ``update()`` freezes the scale so every step after an overflow is skipped. The backward
    pass under autocast runs in the dtypes autocast chose for the forward and is not
    supported usage. Pure fp16 weights round small updates (lr × grad) away entirely.

    ## Example
    ```python
    for x, y in loader:
        with torch.autocast("cuda", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        with torch.autocast("cuda", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    ```

    ## References
    - https://pytorch.org/docs/stable/amp.html
    - https://pytorch.org/docs/stable/notes/amp_examples.html
    """

    id = "L0-02"
    name = "mixed-precision-misuse"
    severity = "critical"
    message = "mixed precision is set up incorrectly (autocast, GradScaler or fp16 weights)"
    fix = "Autocast the forward only; with fp16 scale the loss and step through a GradScaler"
    condition = "mixed precision / bf16 / fp16"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if _uses_low_precision(facts) else not_applicable(
            "no autocast, GradScaler, fp16 or bf16 use")

    def run(self, facts: Facts) -> Iterator[Finding]:
        scalers = grad_scalers(facts)
        for cast in autocasts(facts):
            related = _related_files(facts, cast.source)
            if cast.dtype == "float16" and not any(s.display in related for s, _ in scalers) \
                    and facts.backward_calls and not _no_grad(cast.source, cast.call) \
                    and _trains_unscaled(facts, cast):
                yield self.finding(cast.source, cast.call, "fp16 autocast without a "
                                   "GradScaler: small gradients underflow to zero")
        if scalers:
            yield from self._scaler_off_for_fp16(facts, scalers)
            yield from self._scaler_use(facts, scalers)
        yield from self._backward_under_autocast(facts)
        yield from self._half_weights(facts)

    def _scaler_off_for_fp16(self, facts: Facts, scalers: list[tuple[SourceFile, ast.Call]]
                             ) -> Iterator[Finding]:
        fp16_files = {c.source.display for c in autocasts(facts) if may_run_fp16(facts, c)}
        for source, call in scalers:
            enabled = keyword(call, "enabled")
            if enabled is None or not _related_files(facts, source) & fp16_files:
                continue
            if enabled_at_fp16(facts, source, enabled) is False:
                yield self.finding(source, call, "GradScaler is enabled only when "
                                   f"`{_short(enabled)}`: it is off when autocast runs in "
                                   "fp16, and small gradients underflow to zero")

    def _scaler_use(self, facts: Facts, scalers: list[tuple[SourceFile, ast.Call]]
                    ) -> Iterator[Finding]:
        names = _scaler_names(scalers)
        scaler_files = {s.display for s, _ in scalers}
        scaled = [(s, c) for s, c in facts.backward_calls if _through_scale(c)]
        scaled_files = {s.display for s, _ in scaled}
        for source, call in facts.backward_calls:
            related = _related_files(facts, source)
            if _through_scale(call) or not related & scaler_files:
                continue
            if not related & scaled_files or (_fp16_scope(facts, source, call) and not any(
                    s is source and s.scope_of(c) is source.scope_of(call) for s, c in scaled)):
                yield self.finding(source, call, f"`{_short(call)}` bypasses the GradScaler "
                                   "(no scaler.scale(loss).backward())")
        for source, call in scaled:
            scope = source.scope_of(call)
            for step in [] if _scaler_calls_in(scope, names, "step") else _optimizer_steps(scope):
                yield self.finding(source, step, f"`{_short(step)}` bypasses scaler.step(): "
                                   "the update uses scaled gradients")
        updates = {s.display for s, c in facts.project.method_calls("update")
                   if _is_scaler(c.func.value, names)}
        for source, call in facts.project.method_calls("step"):
            if _is_scaler(call.func.value, names) and not _related_files(facts, source) & updates:
                yield self.finding(source, call, "GradScaler never calls update(): the loss "
                                   "scale never adapts")

    def _backward_under_autocast(self, facts: Facts) -> Iterator[Finding]:
        # (a bf16 region is skipped: see _is_autocast_block)
        for source, call in facts.backward_calls:
            if any(_is_autocast_block(facts, source, p) for p in _enclosing_withs(source, call)):
                yield self.finding(source, call, "backward() runs inside the autocast region")

    def _half_weights(self, facts: Facts) -> Iterator[Finding]:
        if not facts.backward_calls:
            return
        trained = [a for _, c in facts.optimizer_constructions
                   for a in [*c.args, *(k.value for k in c.keywords)]]
        for source, call in facts.project.method_calls("half", "to"):
            name = _half_module(facts, source, call)
            if name and any(mentions(a, {name}) for a in trained):
                yield self.finding(source, call, f"module `{name}` is trained with fp16 "
                                   "weights: small updates round away")


def _trains_unscaled(facts: Facts, cast: Autocast) -> bool:
    """The region's outputs reach a backward that no framework scales (Accelerate's
    ``accelerator.backward`` scales an fp16 loss itself). When where they go cannot be told,
    every backward of the region's files counts."""
    reached = reached_backwards(facts, cast)
    if reached is None:
        related = _related_files(facts, cast.source)
        reached = [(s, c) for s, c in facts.backward_calls if s.display in related]
    return any(not framework_scales(facts, s, c) for s, c in reached)


def _uses_low_precision(facts: Facts) -> bool:
    if autocasts(facts) or grad_scalers(facts) or facts.project.method_calls("half"):
        return True
    for source, node in facts.project.walk():
        if isinstance(node, ast.Attribute) and source.canonical(node) in HALF_HINTS:
            return True
        if isinstance(node, ast.Constant) and node.value in HALF_STRINGS:
            return True
    return False


def _scaler_names(scalers: list[tuple[SourceFile, ast.Call]]) -> set[str]:
    names: set[str] = set()
    for source, call in scalers:
        parent = source.parents.get(call)
        if isinstance(parent, ast.Assign):
            names.update(n for t in parent.targets for n in target_names(t))
        elif isinstance(parent, ast.AnnAssign):
            names.update(target_names(parent.target))
    return names


def _is_scaler(receiver: ast.AST, names: set[str]) -> bool:
    name = dotted(receiver) or ""
    return name in names or "scaler" in name.rsplit(".", 1)[-1].lower()


def _scaler_calls_in(scope: ast.AST, names: set[str], method: str) -> list[ast.Call]:
    return [n for n in scope_nodes(scope) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and n.func.attr == method
            and _is_scaler(n.func.value, names)]


def _related_files(facts: Facts, source: SourceFile) -> set[str]:
    """The file, the project files it imports and the files that import it: a scaler made
    in any of them can serve its training code; a separate entry script cannot."""
    by_module = facts.project.by_module
    related = {source.display}
    for target in source.aliases.values():
        module = target.rsplit(".", 1)[0]
        for name in (target, module):
            if name in by_module:
                related.add(by_module[name].display)
    for other in facts.project.files:
        if any(t == source.module or t.startswith(source.module + ".")
               for t in other.aliases.values()):
            related.add(other.display)
    return related


def _no_grad(source: SourceFile, node: ast.AST) -> bool:
    """Inside ``torch.no_grad()`` / ``inference_mode()`` (a block or a decorator): inference,
    where fp16 needs no loss scaling."""
    for parent in source.ancestors(node):
        if isinstance(parent, ast.With | ast.AsyncWith):
            exprs = [i.context_expr for i in parent.items]
        elif isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef):
            exprs = parent.decorator_list
        else:
            continue
        for expr in exprs:
            target = expr.func if isinstance(expr, ast.Call) else expr
            if (source.canonical(target) or "") in NO_GRAD:
                return True
    return False


def _fp16_scope(facts: Facts, source: SourceFile, node: ast.AST) -> bool:
    """The function around ``node`` enters an fp16 autocast region."""
    scope = source.scope_of(node)
    return any(c.source is source and c.dtype == "float16" and source.scope_of(c.call) is scope
               for c in autocasts(facts))


def _through_scale(call: ast.Call) -> bool:
    """``scaler.scale(loss).backward()`` (or ``.backward()`` on a name bound to it)."""
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
    return isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute) \
        and receiver.func.attr == "scale" or "scale" in (dotted(receiver) or "").lower()


def _optimizer_steps(scope: ast.AST) -> list[ast.Call]:
    """Direct ``optimizer.step()`` calls in the scope of a scaled backward."""
    return [n for n in scope_nodes(scope)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "step" and not n.args
            and "opt" in (dotted(n.func.value) or "").rsplit(".", 1)[-1].lower()]


def _short(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 40 else text[:37] + "..."


def _enclosing_withs(source: SourceFile, node: ast.AST) -> Iterator[ast.With | ast.AsyncWith]:
    for parent in source.ancestors(node):
        if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(parent, ast.With | ast.AsyncWith):
            yield parent


def _is_autocast_block(facts: Facts, source: SourceFile, block: ast.With | ast.AsyncWith) -> bool:
    """``with torch.autocast(...)`` or ``with ctx`` where ``ctx`` was made by autocast, unless
    every autocast it enters is bf16 (fp32's range: the backward cannot underflow, and
    PyTorch runs it in the forward's dtypes anyway; Intel's bf16 CPU examples wrap the whole
    training loop so) or switched off with a literal ``enabled=False``."""
    dtypes = {id(c.call): c.dtype for c in autocasts(facts)}
    found = []
    for item in block.items:
        expr = item.context_expr
        nodes = [(source, expr)]
        if dotted(expr):
            nodes = [(o.source, o.node) for o in origins(facts, source, expr) if o.node]
        found += [n for src, node in nodes for n in ast.walk(node)
                  if isinstance(n, ast.Call) and facts.project.call_name(src, n) in AUTOCAST]
    return any(id(n) in dtypes and dtypes[id(n)] != "bfloat16" for n in found)


def _half_module(facts: Facts, source: SourceFile, call: ast.Call) -> str | None:
    """The name of a module a ``.half()`` / ``.to(torch.float16)`` call casts, if any."""
    if call.func.attr == "to":
        dtype = keyword(call, "dtype") or (call.args[0] if call.args else None)
        if dtype is None or source.canonical(dtype) not in FP16:
            return None
    parent = source.parents.get(call)
    if isinstance(parent, ast.Assign) and len(parent.targets) == 1:
        name = dotted(parent.targets[0])  # model = Net().cuda().half()
    else:
        name = dotted(call.func.value)  # model.half()
    if name is None or not _is_module_value(facts, source, call.func.value):
        return None
    return name


def _is_module_value(facts: Facts, source: SourceFile, expr: ast.AST) -> bool:
    while isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
        expr = expr.func.value  # look through Net().cuda()
    names = ([facts.project.call_name(source, expr)] if isinstance(expr, ast.Call)
             else [n for _, n in facts.flow.origin_calls(source, expr)])
    return bool(names) and all(
        facts.project.is_module_class(n) or (n or "").startswith("torch.nn.") for n in names)
