"""Device and dtype facts shared by the CUDA checks (L0-01, L0-02, L0-15): which calls move a
value to a device, which ``autocast`` regions run in fp16 or bf16, where a parameter's value
comes from at the function's call sites."""

from __future__ import annotations

import ast
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

from spml.toolkit.checks.flow import SCOPES, Binding, Origin, dotted, element_for, innermost_loop
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

FP16 = frozenset({"torch.float16", "torch.half"})
BF16 = frozenset({"torch.bfloat16"})
DTYPES = FP16 | BF16 | frozenset({"torch.float32", "torch.float", "torch.float64",
                                  "torch.double", "torch.int64", "torch.long", "torch.int32",
                                  "torch.bool", "torch.uint8", "torch.int8", "torch.int16"})
AUTOCAST = frozenset({"torch.autocast", "torch.amp.autocast", "torch.cuda.amp.autocast",
                      "torch.cpu.amp.autocast", "torch.amp.autocast_mode.autocast"})
GRAD_SCALER = frozenset({"torch.cuda.amp.GradScaler", "torch.amp.GradScaler",
                         "torch.GradScaler", "torch.cpu.amp.GradScaler",
                         "torch.amp.grad_scaler.GradScaler"})


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_constant(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def is_move(source: SourceFile, node: ast.AST) -> bool:
    """``x.cuda()``, ``x.to(device)``, ``x.to(device=...)``; not ``x.to(torch.float16)``."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    if node.func.attr == "cuda":
        return True
    if node.func.attr != "to":
        return False
    if keyword(node, "device") is not None:
        return True
    if not node.args:
        return False
    first = node.args[0]
    if isinstance(first, ast.Call) and source.canonical(first.func) == "torch.device":
        first = first.args[0] if first.args else first
    if isinstance(first, ast.Constant) and str(first.value).startswith("cpu"):
        return False  # .to("cpu") moves nothing to the GPU
    return (source.canonical(first) or "") not in DTYPES and not is_dtype_string(first)


def is_dtype_string(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in ("float16", "bfloat16", "float32")


def chain_moves(source: SourceFile, node: ast.AST) -> bool:
    """True when a method chain (``Net().to(dev).train()``) contains a move."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if is_move(source, node):
            return True
        node = node.func.value
    return False


# ---- autocast ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Autocast:
    """One ``autocast`` call: ``dtype`` is ``float16``, ``bfloat16`` or None (unknown)."""

    source: SourceFile
    call: ast.Call
    dtype: str | None


def autocasts(facts: Facts) -> list[Autocast]:
    """Every enabled autocast call with the dtype it runs in, when that can be told."""
    found = []
    for source, call in facts.project.calls_to(*AUTOCAST):
        if is_constant(keyword(call, "enabled"), False):
            continue
        found.append(Autocast(source, call, _autocast_dtype(facts, source, call)))
    return found


def _autocast_dtype(facts: Facts, source: SourceFile, call: ast.Call) -> str | None:
    name = facts.project.call_name(source, call) or ""
    dtype = keyword(call, "dtype")
    if dtype is None and len(call.args) > 1:
        dtype = call.args[1]
    if dtype is not None:
        return _dtype_of(facts, source, dtype)
    if name == "torch.cuda.amp.autocast":
        return "float16"  # its documented default
    if name == "torch.cpu.amp.autocast":
        return "bfloat16"
    device = keyword(call, "device_type") or (call.args[0] if call.args else None)
    if isinstance(device, ast.Constant) and device.value == "cuda":
        return "float16"  # torch.autocast("cuda") defaults to torch.float16
    if isinstance(device, ast.Constant) and device.value == "cpu":
        return "bfloat16"
    return None


def _dtype_of(facts: Facts, source: SourceFile, expr: ast.AST) -> str | None:
    """``float16``/``bfloat16`` when every value ``expr`` can hold is that literal dtype."""
    kinds = set()
    for origin in facts.flow.origins(source, expr):
        name = origin.source.canonical(origin.node) if origin.node is not None else None
        if origin.kind not in ("value", "unknown") or name is None:
            return None
        kinds.add("float16" if name in FP16 else "bfloat16" if name in BF16 else None)
    return kinds.pop() if len(kinds) == 1 else None


def grad_scalers(facts: Facts) -> list[tuple[SourceFile, ast.Call]]:
    """GradScaler constructions that are not switched off with a literal ``enabled=False``."""
    return [(s, c) for s, c in facts.project.calls_to(*GRAD_SCALER)
            if not is_constant(keyword(c, "enabled"), False)]


# ---- call sites of a parameter ---------------------------------------------------------------
_CALL_SITES: weakref.WeakKeyDictionary[Facts, dict[int, list[tuple[SourceFile, ast.Call]]]] = (
    weakref.WeakKeyDictionary())


def _call_sites(facts: Facts) -> dict[int, list[tuple[SourceFile, ast.Call]]]:
    if facts not in _CALL_SITES:
        table: dict[int, list[tuple[SourceFile, ast.Call]]] = {}
        for source, call in facts.project.calls:
            target = facts.flow.callee(source, call)
            if target is not None:
                table.setdefault(id(target[1]), []).append((source, call))
        _CALL_SITES[facts] = table
    return _CALL_SITES[facts]


def argument_values(facts: Facts, source: SourceFile, param: ast.AST
                    ) -> list[tuple[SourceFile, ast.AST]] | None:
    """The expressions passed for parameter ``param`` at every call site of its function,
    or None when some call site cannot tell (``*args``, a default, no call site at all)."""
    func = source.parents.get(source.parents.get(param, param))
    if not isinstance(param, ast.arg) or not isinstance(func, SCOPES) \
            or isinstance(func, ast.Lambda):
        return None
    positional = [a.arg for a in [*func.args.posonlyargs, *func.args.args]]
    sites = _call_sites(facts).get(id(func), [])
    found = []
    for src, call in sites:
        value = _passed(call, positional, param.arg)
        if value is None:
            return None
        found.append((src, value))
    return found or None


def _passed(call: ast.Call, positional: list[str], name: str) -> ast.AST | None:
    by_name = keyword(call, name)
    if by_name is not None or name not in positional:
        return by_name
    index = positional.index(name)
    if positional and positional[0] in ("self", "cls") and isinstance(call.func, ast.Attribute):
        index -= 1  # bound method: the receiver fills ``self``
    if any(isinstance(a, ast.Starred) for a in call.args[:index + 1]) or index < 0:
        return None
    return call.args[index] if index < len(call.args) else None


# ---- where a value comes from -----------------------------------------------------------
def origins(facts: Facts, source: SourceFile, expr: ast.AST) -> list[Origin]:
    """``flow.origins`` with parameters replaced by what the callers pass (one level), and
    inside a loop only the assignment that dominates the use (``x = x.to(device)`` at the
    top of the body hides the loop's own ``x``)."""
    out: list[Origin] = []
    for origin in local_origins(facts, source, expr):
        if origin.kind != "param":
            out.append(origin)
            continue
        passed = argument_values(facts, origin.source, origin.node)
        if passed is None:
            return [Origin(source, None, "unknown")]
        for src, value in passed:
            out.extend(o for o in local_origins(facts, src, value) if o.kind != "param")
    return out


def local_origins(facts: Facts, source: SourceFile, expr: ast.AST,
                  depth: int = 6) -> list[Origin]:
    """Like ``flow.origins``, but ``x = x.to(device)`` does not read itself, and inside a
    loop an assignment at the top of the body hides the loop's own ``x``."""
    name = dotted(expr)
    if name is None or depth == 0:
        return [Origin(source, expr, "value")]
    found = _reaching(facts, source, name, expr)
    if not found:
        return [Origin(source, expr, "unknown")]
    out: list[Origin] = []
    for binding in found:
        if binding.kind in ("param", "iter", "with"):
            node = binding.node if binding.kind == "param" else binding.value
            out.append(Origin(source, node, binding.kind))
            continue
        value = element_for(binding)
        if value is not None and dotted(value) is not None:
            out.extend(local_origins(facts, source, value, depth - 1))
        else:
            out.append(Origin(source, value, "value"))
    return out


def _reaching(facts: Facts, source: SourceFile, name: str, at: ast.AST) -> list[Binding]:
    holder = {at, *source.ancestors(at)}
    scope = source.scope_of(at)
    while True:
        found = [b for b in facts.flow.bindings(scope).get(name, [])
                 if b.kind != "aug" and b.value not in holder]
        if found or scope is source.tree:
            break
        scope = source.scope_of(scope)
    if scope is not source.scope_of(at):
        return found  # a global read in a function: any of its bindings may be current
    before = [b for b in found if b.line <= at.lineno]
    loop = innermost_loop(source, at)
    if loop is None:
        return _last_reaching(source, before, at) or found
    # In a loop: the bindings inside it, plus those that reach the loop from above
    # unless the loop's own target rebinds the name on every iteration.
    inside = [b for b in found if b.node is loop or loop in set(source.ancestors(b.node))]
    if not any(b.node is loop for b in inside):
        inside += _last_reaching(source, [b for b in before if b not in inside], loop)
    dominating = [b for b in inside if b.line <= at.lineno and b.kind == "assign"
                  and _dominates(source, b.node, loop)]
    return dominating[-1:] or inside


def _last_reaching(source: SourceFile, before: list[Binding], at: ast.AST) -> list[Binding]:
    """The last binding before ``at``, and the earlier ones while that one sits in a branch
    (``if``/``else``, a loop body, ``try``) that ``at`` is not in."""
    enclosing = set(source.ancestors(at))
    out = []
    for binding in reversed(before):
        out.append(binding)
        node = binding.node
        if all(p in enclosing or isinstance(p, ast.With | ast.AsyncWith)
               for p in _until_scope(source, node)):
            break
    return out


def _until_scope(source: SourceFile, node: ast.AST) -> Iterator[ast.AST]:
    for parent in source.ancestors(node):
        if isinstance(parent, (*SCOPES, ast.Module)):
            return
        yield parent


def _dominates(source: SourceFile, stmt: ast.AST, loop: ast.AST) -> bool:
    """``stmt`` runs on every iteration of ``loop`` (in its body, at most inside ``with``)."""
    child = stmt
    for parent in source.ancestors(stmt):
        if parent is loop:
            return child in loop.body
        if not isinstance(parent, ast.With | ast.AsyncWith):
            return False
        child = parent
    return False


# Tensor methods whose result lives where their input lives.
SAME_DEVICE = frozenset({"view", "reshape", "long", "float", "int", "flatten", "squeeze",
                         "unsqueeze", "contiguous", "permute", "transpose", "half", "bfloat16",
                         "view_as", "reshape_as", "expand", "detach", "clone", "t", "type_as"})


def base_name(expr: ast.AST) -> ast.AST | None:
    """The named value an argument reads: ``x`` for ``x``, ``batch`` for ``batch["ids"]``,
    ``y`` for ``y.view(-1)`` (methods that keep the device)."""
    while True:
        if isinstance(expr, ast.Subscript):
            expr = expr.value
        elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) \
                and expr.func.attr in SAME_DEVICE:
            expr = expr.func.value
        else:
            return expr if dotted(expr) else None
