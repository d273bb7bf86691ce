"""L0-20: step time (or throughput) is never written to a file.

Also home of ``duration_seed`` (what a measured duration looks like), which L0-21 shares.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import mentions, scope_nodes, target_names
from spml.toolkit.checks.patterns import (
    Facts,
    TrainingLoop,
    is_accumulation_loop,
    is_clock_call,
    string_constants,
)
from spml.toolkit.checks.project import SourceFile, dotted
from spml.toolkit.checks.sinks import Seed, Sink, reached_calls, site_of

# Timer objects: CUDA events' elapsed_time, Megatron/fvcore-style timers.
TIMER_METHODS = frozenset({"elapsed_time", "elapsed", "elapsed_ms", "elapsed_seconds", "toc",
                           "lap"})
WALL_CLOCKS = frozenset({"datetime.datetime.now", "datetime.datetime.utcnow"})
# A file sink whose labels (keys, keyword names, variable names) name a step time or a
# throughput writes one, however it was measured.
TIME_LABEL = re.compile(r"step_?time|iter_?time|batch_?time|time_?per|per_?step_?time|"
                        r"throughput|tok(en)?s?_?(per|/)|samples?_?(per|/)|_per_?s(ec)?\b|"
                        r"\bmfu\b|elapsed|duration|latency|\bdt\b|it/s", re.IGNORECASE)


class StepTimeNotWritten(Check):
    """Checks that the time per training step (or a throughput) is written to a file.

    ## What it does
    Looks for durations measured in the training loop and in the step functions it calls:
    a subtraction with a clock (``time.time()``, ``time.perf_counter()``,
    ``time.monotonic()``, or a name assigned from one), CUDA events' ``elapsed_time()``
    and tqdm's ``format_dict["rate"]``, plus everything computed from them
    (``tokens_per_sec = tokens / dt``, MFU). It follows them through assignments, meters,
    dicts and the project's own functions to a file write: ``f.write``, ``json.dump``,
    ``csv`` writers, a ``FileHandler`` logger, TensorBoard, W&B, MLflow.
    A step time that is only printed is a finding at the print; one that is never measured
    is a finding at the training loop.

    ## Why is this bad?
    Step time is the first number to look at when a run is slow, stalls or gets slower over
    time (data stalls, memory fragmentation, thermal throttling, a straggler rank). Printed
    to the terminal it is lost with the job's output; never measured, there is nothing to
    compare a change against.

    ## Example
    ```python
    for step in range(max_steps):
        t0 = time.perf_counter()
        loss = train_step(model, batch)
        dt = time.perf_counter() - t0
        if step % 100 == 0:
            print(f"step {step} loss {loss:.4f} {dt * 1000:.1f} ms")
    ```

    ## Use instead
    ```python
    for step in range(max_steps):
        t0 = time.perf_counter()
        loss = train_step(model, batch)
        dt = time.perf_counter() - t0
        if step % 100 == 0:
            log_file.write(json.dumps({"step": step, "loss": loss, "step_time_s": dt,
                                       "tokens_per_s": tokens_per_step / dt}) + "\\n")
    ```

    ## References
    - https://docs.python.org/3/library/time.html#time.perf_counter
    - https://pytorch.org/docs/stable/generated/torch.cuda.Event.html
    """

    id = "L0-20"
    name = "step-time-not-written"
    severity = "critical"
    policy = True
    message = "step time is never measured or written to a file"
    fix = "Measure each step with time.perf_counter() and write it (or tokens/s) to the log file"
    condition = "always (training code)"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if facts.backward_calls else not_applicable("no backward() call")

    def run(self, facts: Facts) -> Iterator[Finding]:
        for loop in optimizer_step_loops(facts):
            sinks: list[Sink] = []
            measured = False
            for source, scope in step_scopes(facts, loop):
                seed = duration_seed(facts, source, scope)
                # a clock difference only compared (a time gate) measures no step
                measured = measured or any(
                    seed(n) and not isinstance(source.parents.get(n), ast.Compare)
                    for n in scope_nodes(scope))
                sinks += reached_calls(facts, source, scope, facts.sink_kind, seed=seed)
            if any(sink.kind == "file" for sink in sinks) or _labelled_write(facts, loop):
                continue
            # Reported at the call in the training code (``progress.display(i)``), not in
            # the helper that prints; those inside the step loop first.
            console = sorted((site_of(sink) for sink in sinks if sink.kind == "console"),
                             key=lambda s: (not _inside(s[:2], loop), s[0].display, s[1].lineno))
            if console:
                where, node, note = console[0]
                yield self.finding(where, node, "step time is only printed to the console, "
                                   "never written to a file", note=note)
            elif measured:
                yield self.finding(loop.source, loop.loop,
                                   "step time is measured but never written to a file")
            else:
                yield self.finding(loop.source, loop.loop)


def _labelled_write(facts: Facts, loop: TrainingLoop) -> bool:
    """A file write in the step code labelled as a step time or throughput
    (``writer.add_scalar("perf/step_time", timer.value, step)``)."""
    for source, scope in step_scopes(facts, loop):
        for node in scope_nodes(scope):
            if isinstance(node, ast.Call) and facts.sink_kind(source, node) == "file":
                labels = [*string_constants(node), *(k.arg or "" for k in node.keywords),
                          *(dotted(n) or "" for n in ast.walk(node) if isinstance(n, ast.Name))]
                if any(TIME_LABEL.search(label) for label in labels):
                    return True
    return False


def optimizer_step_loops(facts: Facts) -> list[TrainingLoop]:
    """The step loops, without a gradient-accumulation micro-loop inside another one (one
    finding per optimizer step loop)."""
    loops = facts.training_loops
    return [lp for lp in loops if not (is_accumulation_loop(lp.loop) and any(
        o is not lp and o.source is lp.source and o.loop in set(lp.source.ancestors(lp.loop))
        for o in loops))]


def _inside(found: tuple[SourceFile, ast.Call], loop: TrainingLoop) -> bool:
    source, node = found
    return source is loop.source and loop.loop in set(source.ancestors(node))


def step_scopes(facts: Facts, loop: TrainingLoop, depth: int = 2
                ) -> list[tuple[SourceFile, ast.AST]]:
    """The scope holding the step loop plus the project's functions the loop body calls
    (a ``train_step`` that times itself), ``depth`` calls deep."""
    found: dict[int, tuple[SourceFile, ast.AST]] = {id(loop.scope): (loop.source, loop.scope)}
    frontier = [(loop.source, node) for node in loop.body_nodes()]
    for _ in range(depth):
        nested: list[tuple[SourceFile, ast.AST]] = []
        for source, node in frontier:
            target = facts.flow.callee(source, node) if isinstance(node, ast.Call) else None
            if target is not None and id(target[1]) not in found:
                found[id(target[1])] = target
                nested += [(target[0], n) for n in scope_nodes(target[1])]
        frontier = nested
    return list(found.values())


def duration_seed(facts: Facts, source: SourceFile, scope: ast.AST, depth: int = 1) -> Seed:
    """A predicate for the nodes that measure a duration in ``scope``: ``time.time() - t0``,
    ``t1 - t0`` with both from clocks, ``start.elapsed_time(end)``, ``timer.elapsed()``,
    tqdm's rate, and calls of the project's functions that return a duration."""
    clocks = _clock_names(facts, source, scope)
    returns_duration: dict[int, bool] = {}

    def seed(node: ast.AST) -> bool:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub):
            return any(_is_clock(source, side) or dotted(side) in clocks
                       for side in (node.left, node.right))
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in TIMER_METHODS:
                return True
            if depth and id(node) not in returns_duration:
                returns_duration[id(node)] = _returns_duration(facts, source, node, depth - 1)
            return returns_duration.get(id(node), False)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
            key = node.slice
            return node.value.attr == "format_dict" and isinstance(key, ast.Constant) \
                and key.value == "rate"
        return False

    return seed


def _returns_duration(facts: Facts, source: SourceFile, call: ast.Call, depth: int) -> bool:
    """``Timer.stop()`` returning ``time.perf_counter() - self.start``."""
    target = facts.flow.callee(source, call)
    if target is None:
        return False
    callee_source, func = target
    seed = duration_seed(facts, callee_source, func, depth)
    tainted = facts.flow.tainted(func, seed)
    return any(isinstance(n, ast.Return) and n.value is not None
               and (mentions(n.value, tainted) or any(seed(x) for x in ast.walk(n.value)))
               for n in scope_nodes(func))


def _is_clock(source: SourceFile, node: ast.AST) -> bool:
    return is_clock_call(source, node) or (
        isinstance(node, ast.Call) and source.canonical(node.func) in WALL_CLOCKS)


def _clock_names(facts: Facts, source: SourceFile, scope: ast.AST) -> set[str]:
    """Names holding a clock reading: bound from a clock call (or from another such name)
    in ``scope`` or the module, and ``self.*`` attributes set from a clock anywhere."""
    table = {**facts.flow.bindings(source.tree), **facts.flow.bindings(scope)}
    names = set(_self_clock_attrs(source))
    changed = True
    while changed:
        changed = False
        for name, binds in table.items():
            if name not in names and any(
                    b.value is not None and (_is_clock(source, b.value)
                                             or dotted(b.value) in names)
                    for b in binds if b.kind == "assign"):
                names.add(name)
                changed = True
    return names


def _self_clock_attrs(source: SourceFile) -> set[str]:
    cached = getattr(source.tree, "_spml_self_clocks", None)
    if cached is None:  # one walk of the file per analysis, not one per step scope
        cached = _find_self_clock_attrs(source)
        source.tree._spml_self_clocks = cached  # type: ignore[attr-defined]
    return cached


def _find_self_clock_attrs(source: SourceFile) -> set[str]:
    return {name for node in ast.walk(source.tree) if isinstance(node, ast.Assign)
            and _is_clock(source, node.value)
            for target in node.targets for name in target_names(target)
            if name.startswith("self.")}
