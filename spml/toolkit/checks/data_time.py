"""L0-21: the time a training step waits for its batch is never measured or recorded."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.flow import mentions, scope_nodes
from spml.toolkit.checks.patterns import Facts, TrainingLoop, string_constants
from spml.toolkit.checks.project import SourceFile, dotted
from spml.toolkit.checks.sinks import Seed, reached_calls
from spml.toolkit.checks.step_time_logging import (
    duration_seed,
    optimizer_step_loops,
    step_scopes,
)

# Names and labels that say a duration is the data wait (``data_time``, ``t_data``,
# ``"time/dataload"``, ``fetch_s``, ``wait_ms``).
DATA_WORDS = re.compile(r"data|load|fetch|wait", re.IGNORECASE)
# Calls that hand out the next batch: ``get_batch()``, ``next(it)``, ``loader.next()``.
BATCH_CALL = re.compile(r"^_?((get|next|load|fetch|sample|read|make|draw)_?)?batch(es)?$",
                        re.IGNORECASE)
# Statements after a fetch (or at the top of a ``for batch in loader`` body) that may time it.
WINDOW = 2


class DataTimeNotRecorded(Check):
    """Checks that the time each training step waits for its batch is measured and recorded.

    ## What it does
    Looks in every training loop (and the step functions it calls) for a duration taken
    around the data fetch and printed or written: a clock difference right after
    ``next(it)`` / ``get_batch()`` or at the top of a ``for batch in loader`` body
    (``data_time.update(time.time() - end)``), or any measured duration whose name, dict
    key or log label says data (``t_data``, ``"data_time"``, ``"time/dataload"``).

    ## Why is this bad?
    When the input pipeline cannot keep up, the GPU idles between steps and the run is
    simply slower, with no error anywhere. Step time alone does not tell a data stall from
    slow compute; only the data-wait share does, and it is what decides whether more
    workers, pinned memory, prefetching or a faster format would help.

    ## Example
    ```python
    for step, (x, y) in enumerate(loader):
        loss = model(x.to(device), y.to(device))
        loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    end = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        data_time = time.perf_counter() - end
        loss = model(x.to(device), y.to(device))
        loss.backward()
        optimizer.step()
        if step % log_every == 0:
            log.info("step %d loss %.4f data %.3fs", step, loss.item(), data_time)
        end = time.perf_counter()
    ```

    ## References
    - https://pytorch.org/docs/stable/data.html#multi-process-data-loading
    - https://github.com/pytorch/examples/blob/main/imagenet/main.py
    """

    id = "L0-21"
    name = "data-time-not-recorded"
    severity = "warning"
    message = "time spent waiting for data is never measured"
    fix = "Time the batch fetch (time.perf_counter() around next()/the loader) and log it"
    condition = "has a DataLoader or batch function"
    runtime_note = "the data-wait share of step time is measured in L1"

    def applicability(self, facts: Facts) -> Applicability:
        if not facts.dataloaders and not any(_fetches(facts, lp) or _iterates_data(lp)
                                             for lp in facts.training_loops):
            return not_applicable("no DataLoader or batch function")
        if not facts.training_loops:
            return not_applicable("no training loop")
        return APPLIES

    def run(self, facts: Facts) -> Iterator[Finding]:
        for loop in optimizer_step_loops(facts):
            measured = recorded = False
            for source, scope in step_scopes(facts, loop):
                seed = duration_seed(facts, source, scope)
                names, nodes = _data_durations(facts, source, scope, seed, loop)
                measured = measured or bool(names or nodes)
                recorded = recorded or bool(reached_calls(
                    facts, source, scope, facts.sink_kind, names, _one_of(nodes)))
                recorded = recorded or bool(reached_calls(
                    facts, source, scope, _labelled(facts), seed=seed))
            if recorded:
                continue
            if measured:
                yield self.finding(loop.source, loop.loop, "data-loading time is measured but "
                                   "never printed or written")
            else:
                yield self.finding(loop.source, loop.loop)


def _one_of(nodes: list[ast.AST]) -> Seed:
    ids = frozenset(id(n) for n in nodes)
    return lambda node: id(node) in ids


def _fetches(facts: Facts, loop: TrainingLoop) -> list[ast.stmt]:
    """Statements in the loop body that fetch a batch."""
    return [n for n in loop.body_nodes() if isinstance(n, ast.stmt)
            and not isinstance(n, ast.For | ast.While | ast.If | ast.With | ast.Try)
            and any(_is_batch_call(facts, loop.source, c) for c in ast.walk(n))]


def _is_batch_call(facts: Facts, source: SourceFile, node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = facts.project.call_name(source, node) or (
        node.func.attr if isinstance(node.func, ast.Attribute) else "")
    last = name.rsplit(".", 1)[-1]
    return last in ("next", "__next__") or bool(BATCH_CALL.match(last))


def _data_durations(facts: Facts, source: SourceFile, scope: ast.AST, seed: Seed,
                    loop: TrainingLoop) -> tuple[frozenset[str], list[ast.AST]]:
    """Durations that time the data fetch: names saying so, and the clock differences
    taken right after a fetch or labelled as data (dict keys, keyword names)."""
    tainted = facts.flow.tainted(scope, seed)
    names = frozenset(n for n in tainted if DATA_WORDS.search(n.rsplit(".", 1)[-1]))
    nodes: list[ast.AST] = []
    if scope is loop.scope:
        for stmt in _after_fetch(facts, loop):
            nodes += [n for n in ast.walk(stmt) if seed(n)]

    def timed(expr: ast.AST) -> bool:
        return mentions(expr, tainted) or any(seed(n) for n in ast.walk(expr))

    for node in scope_nodes(scope):
        if isinstance(node, ast.Dict):
            nodes += [v for k, v in zip(node.keys, node.values, strict=True)
                      if isinstance(k, ast.Constant) and isinstance(k.value, str)
                      and DATA_WORDS.search(k.value) and timed(v)]
        elif isinstance(node, ast.keyword) and node.arg and DATA_WORDS.search(node.arg) \
                and timed(node.value):
            nodes.append(node.value)
    return names, nodes


def _after_fetch(facts: Facts, loop: TrainingLoop) -> list[ast.stmt]:
    """The few statements after each fetch, and the top of a loop over a data source."""
    found: list[ast.stmt] = []
    if _iterates_data(loop):
        found += loop.loop.body[:WINDOW]
    for stmt in _fetches(facts, loop):
        found += _following(loop.source, stmt, loop.loop)
    return found


def _following(source: SourceFile, stmt: ast.stmt, stop: ast.AST) -> list[ast.stmt]:
    """The ``WINDOW`` statements run after ``stmt``, leaving its block when it ends there
    (a fetch inside ``try: x = next(it)`` is timed after the ``try``)."""
    found: list[ast.stmt] = []
    while len(found) < WINDOW and stmt is not stop:
        body = _body_of(source, stmt)
        index = body.index(stmt)
        found += body[index + 1:index + 1 + WINDOW - len(found)]
        parent = source.parents.get(stmt)
        if not isinstance(parent, ast.stmt):
            break
        stmt = parent
    return found


def _iterates_data(loop: TrainingLoop) -> bool:
    """``for batch in loader`` (any loop over something other than a step counter)."""
    return isinstance(loop.loop, ast.For | ast.AsyncFor) and not _is_range(loop.loop.iter)


def _is_range(expr: ast.AST) -> bool:
    """``range(n)``, ``count()``, ``trange(n)``, also wrapped: ``tqdm(range(n))``."""
    if not isinstance(expr, ast.Call):
        return False
    name = (dotted(expr.func) or "").rsplit(".", 1)[-1]
    if name in ("tqdm", "enumerate") and expr.args:
        return _is_range(expr.args[0])
    return name in ("range", "count", "trange")


def _body_of(source: SourceFile, stmt: ast.stmt) -> list[ast.stmt]:
    parent = source.parents[stmt]
    for field in ("body", "orelse", "finalbody", "handlers"):
        block = getattr(parent, field, None)
        if isinstance(block, list) and stmt in block:
            return block
    return [stmt]


def _labelled(facts: Facts):
    """A sink whose text labels the duration it carries as data time."""

    def accept(source: SourceFile, call: ast.Call) -> str | None:
        kind = facts.sink_kind(source, call)
        labels = [s for arg in [*call.args, *(k.value for k in call.keywords)]
                  for s in string_constants(arg)]
        return kind if kind and any(DATA_WORDS.search(s) for s in labels) else None

    return accept
