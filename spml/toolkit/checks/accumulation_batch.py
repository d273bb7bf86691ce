"""L0-10: accumulation steps × micro-batch (× GPUs) does not give the stated global batch."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from spml.toolkit.checks._accumulation import (
    Accumulation,
    Candidate,
    Constants,
    Number,
    accumulations,
    constants,
)
from spml.toolkit.checks._base import Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import scope_nodes
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile, dotted

MICRO_BATCH = ("micro_batch_size", "micro_batch", "per_device_train_batch_size",
               "train_batch_size", "batch_size", "mini_batch_size")
# ``global_batch_size``, ``total_batch_tokens``, ``effective_batch``; not ``total_batches``
GLOBAL_BATCH = re.compile(r"(global|total|effective|eff)_batch(_size)?(_(in_)?tokens)?")
WORLD = ("ddp_world_size", "world_size", "num_processes", "num_gpus", "n_gpus")
SEQUENCE = ("block_size", "seq_len", "sequence_length", "context_length", "max_seq_len",
            "seq_length")
DISTRIBUTED = ("DistributedDataParallel", "init_process_group", "torch.distributed",
               "FullyShardedDataParallel", "Accelerator", "deepspeed", "WORLD_SIZE")


class AccumulationBatchMismatch(Check):
    """Checks that accumulation steps × micro-batch × GPUs equals the stated global batch.

    ## What it does
    Resolves the accumulation steps, the micro-batch size, the global batch size and, in a
    distributed project, the world size to constants (literals, assignments, argparse
    defaults, dataclass and config fields) and flags a product that differs from the global
    batch (a global batch in tokens is compared with the product times the sequence length).
    It also flags accumulation steps derived by integer division (``total // micro``)
    without an ``assert total % micro == 0``: the remainder is dropped without a word.
    Values it cannot pin to one constant (environment variables, YAML files) are not judged.

    ## Why is this bad?
    The optimizer sees the batch it actually gets, not the one in the config: the learning
    rate, warm-up and token budget were tuned for the stated global batch, so a mismatch
    silently changes the experiment and makes it incomparable with the runs it cites.

    ## Example
    ```python
    global_batch_size = 256
    micro_batch_size = 16
    accum_steps = 8  # 8 x 16 = 128 samples per optimizer step
    ```

    ## Use instead
    ```python
    global_batch_size = 256
    micro_batch_size = 16
    assert global_batch_size % (micro_batch_size * world_size) == 0
    accum_steps = global_batch_size // (micro_batch_size * world_size)
    ```
    """

    id = "L0-10"
    name = "accumulation-batch-mismatch"
    severity = "warning"
    message = "accumulation steps × micro-batch does not equal the global batch size"
    fix = "Derive the accumulation steps from the global batch and assert it divides evenly"
    condition = "gradient accumulation"
    runtime_note = "values set at run time (environment, config files) are not checked"

    def applicability(self, facts: Facts) -> Applicability:
        if not accumulations(facts):
            return not_applicable("no gradient accumulation")
        if _global_name(constants(facts)) is None:
            return Applicability(True, "no global batch size is stated; accumulation steps "
                                       "× micro-batch has nothing to contradict")
        return Applicability(True)

    def run(self, facts: Facts) -> Iterator[Finding]:
        consts = constants(facts)
        derived_seen: set[int] = set()
        product_done = False
        for acc in accumulations(facts):
            derivations = _derivations(facts, consts, acc)
            for source, node, total, divisor in derivations:
                if id(node) not in derived_seen and not _guarded(facts, node, total):
                    derived_seen.add(id(node))
                    yield self.finding(source, node, _division_message(
                        consts, source, node, total, divisor))
            if derivations or product_done:
                continue
            found = _product_mismatch(facts, consts, acc)
            if found is not None:
                product_done = True
                yield self.finding(found[0].source, found[0].anchor, found[1])


def _steps_definitions(consts: Constants, acc: Accumulation
                       ) -> list[tuple[SourceFile, ast.AST, ast.AST | None]]:
    """(source, statement, value) for each place that sets the accumulation steps."""
    steps, source = acc.steps, acc.steps_source
    if steps is None or source is None:
        return []
    if isinstance(steps, ast.Name):
        scope = source.scope_of(steps)
        while True:
            found = consts.facts.flow.bindings(scope).get(steps.id, [])
            if found or scope is source.tree:
                break
            scope = source.scope_of(scope)
        if found:
            return [(source, b.node, b.value) for b in found if b.kind in ("assign", "aug")]
    name = steps.attr if isinstance(steps, ast.Attribute) else getattr(steps, "id", None)
    return [(c.source, c.anchor, c.value) for c in consts.table.get(name or "", [])
            if isinstance(c.anchor, ast.Assign | ast.AnnAssign | ast.AugAssign)]


def _derivations(facts: Facts, consts: Constants, acc: Accumulation
                 ) -> list[tuple[SourceFile, ast.AST, ast.AST, ast.AST]]:
    """Integer divisions that set the steps: (source, statement, dividend, divisor)."""
    out = []
    for source, node, value in _steps_definitions(consts, acc):
        if isinstance(node, ast.AugAssign):
            if isinstance(node.op, ast.FloorDiv):
                out.append((source, node, node.target, node.value))
            continue
        division = _truncating_division(value)
        if division is not None:
            out.append((source, node, division.left, division.right))
    return out


def _truncating_division(value: ast.AST | None) -> ast.BinOp | None:
    """``a // b``, ``int(a / b)``, ``max(1, a // b)``."""
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.FloorDiv):
        return value
    if isinstance(value, ast.Call) and dotted(value.func) in ("int", "max", "min"):
        for arg in value.args:
            if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.FloorDiv | ast.Div):
                return arg
    return None


def _last_names(expr: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(expr):
        if isinstance(node, ast.Name | ast.Attribute) and dotted(node):
            names.add((dotted(node) or "").rsplit(".", 1)[-1])
    return names


def _guarded(facts: Facts, node: ast.AST, total: ast.AST) -> bool:
    """A check anywhere in the project that the division is exact: ``assert total % x == 0``,
    ``if total % x: raise``, or ``assert total == steps * x`` (multiplying back)."""
    wanted = _last_names(total)
    target = node.target if isinstance(node, ast.AugAssign | ast.AnnAssign) else node.targets[0]
    # after ``a //= w`` the old ``a`` is gone, so only a ``%`` test can guard it
    steps = set() if isinstance(node, ast.AugAssign) else _last_names(target)
    for _, check in facts.project.walk():
        if isinstance(check, ast.Assert):
            test = check.test
        elif isinstance(check, ast.If) and any(isinstance(n, ast.Raise) for s in check.body
                                               for n in [s, *scope_nodes(s)]):
            test = check.test
        else:
            continue
        for part in ast.walk(test):
            if isinstance(part, ast.BinOp) and isinstance(part.op, ast.Mod) \
                    and wanted and wanted <= _last_names(part.left):
                return True
            if isinstance(part, ast.Compare) and wanted and steps \
                    and wanted | steps <= _last_names(part):
                return True
    return False


def _division_message(consts: Constants, source: SourceFile, node: ast.AST, total: ast.AST,
                      divisor: ast.AST) -> str:
    target = node.target if isinstance(node, ast.AugAssign | ast.AnnAssign) else node.targets[0]
    name = ast.unparse(target)
    g, x = consts.value(source, total), consts.value(source, divisor)
    if isinstance(g, int) and isinstance(x, int) and x > 0 and g % x:
        text = (f"`{name}` = {g} // {x} = {g // x} drops the remainder: "
                f"{g // x * x} ≠ {g} per optimizer step")
        if len(text) <= 100:
            return text
    expr = _short(ast.unparse(node)[len(name):].strip(), 47 - len(name))
    text = f"`{name} {expr}` truncates silently when not divisible (no assert)"
    return text if len(text) <= 100 else "accumulation steps come from an unchecked division"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:max(limit - 1, 8)] + "…"


def _global_name(consts: Constants) -> str | None:
    names = sorted(n for n in consts.table if GLOBAL_BATCH.fullmatch(n.lower())
                   and consts.anchor(n) is not None)
    return names[0] if names else None


def _first_known(consts: Constants, names: tuple[str, ...]) -> Number | None:
    for name in names:
        if name in consts.table:
            return consts.named(name)
    return None


def _uses_distributed(facts: Facts) -> bool:
    for _, node in facts.project.walk():
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.alias):
            text = node.name
        elif isinstance(node, ast.Attribute | ast.Name):
            text = dotted(node)
        if text and any(w in text for w in DISTRIBUTED):
            return True
    return False


def _product_mismatch(facts: Facts, consts: Constants, acc: Accumulation
                      ) -> tuple[Candidate, str] | None:
    name = _global_name(consts)
    anchor = consts.anchor(name) if name else None
    if name is None or anchor is None:
        return None
    if acc.kind == "accelerate":
        steps = consts.named("gradient_accumulation_steps")
    else:
        steps = consts.value(acc.steps_source, acc.steps) if acc.steps_source else None
    micro, total = _first_known(consts, MICRO_BATCH), consts.named(name)
    world = _first_known(consts, WORLD) if _uses_distributed(facts) else 1
    if None in (steps, micro, total, world):
        return None
    product = steps * micro * world
    seq = _first_known(consts, SEQUENCE)
    if product == total or (seq is not None and product * seq == total):
        return None
    parts = f"accumulation {_fmt(steps)} × micro-batch {_fmt(micro)}"
    if world != 1:
        parts += f" × {_fmt(world)} GPUs"
    unit = ""
    if seq is not None and abs(product * seq - total) < abs(product - total):
        parts, product, unit = parts + f" × seq {_fmt(seq)}", product * seq, " tokens"
    return anchor, f"{parts} = {_fmt(product)} ≠ global batch {_fmt(total)}{unit}"


def _fmt(value: Number) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
