"""What makes a loop kind: a descriptor the engine receives, not a copy of the engine.

Auto Research and ml-iteration share every step (S0..S5, recovery, control); they differ in the
protocol file and model, the ledger's columns, the brief, the policy that judges a measured
round, the commit prefix, the Prefect artifact keys and UI variable names. `KINDS` holds both;
`kind_named` resolves the name a task or CLI passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spml.errors import ProtocolError
from spml.protocols import autoresearch, iteration
from spml.protocols.experiences import COLUMNS, ITERATION_COLUMNS
from spml.toolkit.loop.brief import BriefInputs, render_brief, render_iteration_brief
from spml.toolkit.loop.evidence import Noise
from spml.toolkit.loop.policies import MinDeltaPolicy, Policy, SignificancePolicy, acceptance_rule
from spml.toolkit.loop.review import DIMENSION_COLUMNS, ReviewPolicy


@dataclass(frozen=True)
class LoopKind:
    """One kind of loop, as the engine sees it."""

    name: str                                   # stage: branch, worktree, state dir, flow name
    title: str                                  # for people: "Auto Research"
    protocol_filename: str
    protocol_model: type[Any]
    load_protocol: Callable[[Path], Any]
    read_body: Callable[[Path], str]
    locked_changes: Callable[[Any, Any], list[str]]
    columns: Callable[[Any], tuple[str, ...]]    # the ledger's columns for a protocol
    render_brief: Callable[[BriefInputs], str]
    make_policy: Callable[[Any, Noise], Policy]   # (protocol, the noise measured so far)
    commit_prefix: str
    artifact_prefix: str
    cli_group: str                              # `spml <cli_group> run|status|stop ...`
    implicit_fixed: tuple[str, ...] = ()        # locked although not listed in fixed.files
    variable_prefix: str = "spml"               # Prefect Variables spml-note-<experiment> ...

    def artifact_key(self, what: str, experiment_name: str = "") -> str:
        """A Prefect artifact key (lower-case letters, digits, dashes): `iteration-review`, or
        with an experiment's name, one key per experiment."""
        key = f"{self.artifact_prefix}-{what}" + (f"-{experiment_name}" if experiment_name else "")
        return key.replace(".", "-").replace("_", "-")


def _autoresearch_policy(p: autoresearch.AutoresearchProtocol, noise: Noise) -> Policy:
    if p.acceptance.greedy:
        return MinDeltaPolicy(p.eval.direction, p.acceptance.min_delta, metric=p.eval.metric,
                              target=p.target)
    return SignificancePolicy(acceptance_rule(p), noise, metric=p.eval.metric, target=p.target)


def _iteration_policy(p: iteration.IterationProtocol, _noise: Noise) -> Policy:
    # ml-iteration's margins come from each criterion's own runs (see `review`).
    parallel = getattr(p, "parallel", None)
    return ReviewPolicy(p.review_criteria, p.acceptance.noise,
                        comparisons=parallel.candidates if parallel is not None else 1)


BATCH_COLUMN = "Batch"  # which batch of candidates a row belongs to (`parallel:`)


def _with_batch(columns: tuple[str, ...], batched: bool) -> tuple[str, ...]:
    """``columns`` with `Batch` after `Round` when the protocol runs batches of candidates."""
    return (columns[0], BATCH_COLUMN, *columns[1:]) if batched else columns


def _batched(protocol: Any) -> bool:
    parallel = getattr(protocol, "parallel", None)
    return parallel is not None and parallel.batched


def _autoresearch_columns(p: autoresearch.AutoresearchProtocol) -> tuple[str, ...]:
    return _with_batch(COLUMNS, _batched(p))


def _iteration_columns(p: iteration.IterationProtocol) -> tuple[str, ...]:
    c = p.review_criteria
    present = {"Metrics": bool(c.metrics), "Speed": bool(c.performance),
               "Observability": bool(c.observability and c.observability.required_keys),
               "Stability": bool(c.stability and (c.stability.no_nan
                                                  or c.stability.forbid_patterns)),
               "Custom": bool(c.custom)}
    assert set(present) == set(DIMENSION_COLUMNS.values())
    shown = tuple(col for col in ITERATION_COLUMNS if present.get(col, True))
    return _with_batch(shown, _batched(p))


AUTORESEARCH = LoopKind(
    name="autoresearch", title="Auto Research",
    protocol_filename=autoresearch.PROTOCOL_FILENAME,
    protocol_model=autoresearch.AutoresearchProtocol, load_protocol=autoresearch.load_protocol,
    read_body=autoresearch.read_protocol_body, locked_changes=autoresearch.locked_changes,
    columns=_autoresearch_columns, render_brief=render_brief, make_policy=_autoresearch_policy,
    commit_prefix="autoresearch", artifact_prefix="autoresearch", cli_group="autoresearch",
)
ITERATION = LoopKind(
    name="ml-iteration", title="ml-iteration",
    protocol_filename=iteration.PROTOCOL_FILENAME,
    protocol_model=iteration.IterationProtocol, load_protocol=iteration.load_protocol,
    read_body=iteration.read_protocol_body, locked_changes=iteration.locked_changes,
    columns=_iteration_columns, render_brief=render_iteration_brief,
    make_policy=_iteration_policy, commit_prefix="ml-iteration", artifact_prefix="iteration",
    cli_group="iteration",
    implicit_fixed=(iteration.PROTOCOL_FILENAME, ".gitignore"),
)
KINDS: dict[str, LoopKind] = {k.name: k for k in (AUTORESEARCH, ITERATION)}


def kind_named(name: str) -> LoopKind:
    """The loop kind called ``name``."""
    try:
        return KINDS[name]
    except KeyError:
        raise ProtocolError(f"loop kind must be one of {', '.join(KINDS)}, got {name!r}.") \
            from None


def merge_columns(kept: tuple[str, ...], wanted: tuple[str, ...]) -> tuple[str, ...]:
    """A ledger's columns after a protocol edit: a new criterion dimension gains its column,
    a dropped one keeps it (rows are never rewritten)."""
    order = _with_batch(ITERATION_COLUMNS if "Result" not in kept else COLUMNS, True)
    present = set(kept) | set(wanted)
    return tuple(c for c in order if c in present) + tuple(
        c for c in kept if c not in order)


def refuse_other_kinds(kind: LoopKind, exp_dir: Path) -> None:
    """One loop kind per experiment directory: they would share `experiences.md`.

    Raises:
        ProtocolError: another kind's protocol or state is in ``exp_dir``.
    """
    for other in KINDS.values():
        if other is kind:
            continue
        flat = other is AUTORESEARCH and (exp_dir / ".spml" / "session.json").exists()
        if (exp_dir / other.protocol_filename).exists() or (
                exp_dir / ".spml" / other.name).is_dir() or flat:
            raise ProtocolError(
                f"{exp_dir} already holds an {other.title} experiment "
                f"({other.protocol_filename} or its state in .spml/); one loop kind per "
                f"experiment directory, since both keep experiences.md there. Put the "
                f"{kind.protocol_filename} in a directory of its own.")
