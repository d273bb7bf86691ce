"""S5: decide a round, then commit or roll back, record it, and tell the researcher.

The order is what makes a `kill -9` at any instant safe (see `spml.toolkit.loop.recovery`):
journal the decided row -> git commit / archive + rollback -> ledger row -> researcher.observe
-> clear the journal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from spml.errors import BaselineFailed
from spml.protocols.experiences import KEPT, ExperienceRow, format_result, format_value
from spml.toolkit.loop.acceptance import (
    baseline_note,
    identical_runs_note,
    judged_candidate,
    noise_for,
)
from spml.toolkit.loop.begin import RoundPlan
from spml.toolkit.loop.compliance import Violation
from spml.toolkit.loop.evidence import Noise
from spml.toolkit.loop.faults import crash_point
from spml.toolkit.loop.incumbent import find_incumbent, measured_runs
from spml.toolkit.loop.ledger import Journal, clear_journal, write_journal
from spml.toolkit.loop.measure import Measurement
from spml.toolkit.loop.overrides import held_notes
from spml.toolkit.loop.policies import Decision
from spml.toolkit.loop.record import (
    ROUND_TRAILER,
    attempt_message,
    generation_trailers,
    record,
)
from spml.toolkit.loop.researchers import Proposal
from spml.toolkit.loop.review import DIMENSION_COLUMNS
from spml.toolkit.loop.session import LoopSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundOutcome:
    """What a settled round produced (the flow logs it and publishes artifacts)."""

    row: ExperienceRow
    commit: str | None = None
    attempt_ref: str | None = None


def decide(session: LoopSession, plan: RoundPlan, proposal: Proposal | None,
           violations: list[Violation], measurement: Measurement | None) -> ExperienceRow:
    """The ledger row for a round, from what each step reported."""
    notes = [*plan.notes, *held_notes(session.experiment.round_dir(plan.round_no))]
    strategy = proposal.strategy if proposal else "baseline" if plan.round_no == 0 else \
        "re-measured HEAD"
    base = dict(round=plan.round_no, strategy=strategy, note="; ".join(notes))
    failed = proposal.cause if proposal is not None and not proposal.ok else ""
    violations = violations or list(measurement.violations if measurement else ())
    if violations:
        causes = "; ".join(dict.fromkeys(v.reason for v in violations))
        insight = f"compliance: {causes}" + (f"; {failed}" if failed else "")
        return ExperienceRow(compliance="fail", verdict="rolled_back", insight=insight, **base)
    if failed:
        return ExperienceRow(compliance="n/a", verdict="rolled_back", insight=failed, **base)
    assert measurement is not None
    scalar_missing = session.kind.name == "autoresearch" and measurement.mean is None
    if not measurement.ok or scalar_missing:
        # No Result: a mean over the repeats that happened to finish is not the round's value,
        # and the researcher must learn that the round failed, not a partial number.
        return ExperienceRow(compliance="pass", verdict="rolled_back", insight=measurement.cause,
                             **base)
    return _judge(session, plan, measurement, base)


def _judge(session: LoopSession, plan: RoundPlan, measurement: Measurement,
           base: dict) -> ExperienceRow:
    autoresearch = session.kind.name == "autoresearch"
    # Every earlier run, read once for the candidate's pool, the noise and the incumbent.
    runs = measured_runs(session.experiment, plan.first_round)
    if autoresearch and not plan.measures_head:
        measurement = judged_candidate(session, measurement, runs)
    noise = noise_for(session, measurement, runs) if autoresearch else Noise(0.0, 0)
    policy = session.kind.make_policy(session.protocol, noise)
    incumbent = None if plan.measures_head else find_incumbent(session, runs)
    decision = policy.judge(measurement, incumbent)
    samples = measurement.samples("metrics", session.protocol.metric or "")
    value = sum(samples) / len(samples) if samples else None
    result_text = format_result(samples) if samples and autoresearch else ""
    row = dict(compliance="pass", result=value, result_text=result_text,
               extra=_dimension_cells(session, decision), **base)
    if plan.measures_head:
        insight = "baseline measured on the base commit" if plan.round_no == 0 else (
            f"HEAD {plan.base[:7]} held code nobody measured (an override, lost state or a "
            "hand-made commit): measured it as the incumbent")
        if not autoresearch:
            insight += "; " + ("all criteria pass" if decision.stop else _failing(decision))
        elif plan.round_no == 0:
            notes = [baseline_note(session, measurement),
                     identical_runs_note(session, measurement)]
            row["note"] = "; ".join(filter(None, [row["note"], *notes]))
        return ExperienceRow(verdict="committed", insight=insight, **row)
    return ExperienceRow(verdict=decision.verdict, insight=decision.rationale, **row)


def _failing(decision: Decision) -> str:
    failing = [name for name, text in decision.per_criterion.items() if not
               text.startswith("pass")]
    return "failing: " + ", ".join(failing)


def _dimension_cells(session: LoopSession, decision: Decision) -> dict[str, str]:
    """ml-iteration's per-dimension columns: `name=value pass` per criterion."""
    if session.kind.name == "autoresearch":
        return {}
    cells: dict[str, list[str]] = {}
    for name, text in decision.per_criterion.items():
        column = DIMENSION_COLUMNS[name.split(".", 1)[0]]
        status, _, detail = text.partition(": ")
        label = name.split(".", 1)[1] if "." in name else ""
        shown = detail if detail.startswith(f"{label}=") else f"{label} {detail}".strip()
        cells.setdefault(column, []).append(f"{status}: {shown}")
    return {column: "; ".join(parts) for column, parts in cells.items()}


def settle(session: LoopSession, plan: RoundPlan, row: ExperienceRow) -> RoundOutcome:
    """Apply the decision to git, the ledger and the researcher, crash-safely."""
    experiment, workspace = session.experiment, session.workspace
    commit = attempt = None
    if plan.remeasure:
        workspace.rollback(plan.base)  # nothing to commit: HEAD was measured, not changed
    elif plan.round_no == 0:
        workspace.rollback(plan.base)
        if row.verdict != "committed":
            clear_journal(experiment)
            hint = ("Files that training or evaluation writes must be covered by .gitignore"
                    if row.compliance == "fail" else
                    "Fix the training or evaluation command")
            raise BaselineFailed(f"the baseline (round 0) could not be measured: {row.insight}. "
                                 f"{hint}, then run again.")
    elif row.verdict in KEPT:
        write_journal(experiment, Journal(round=plan.round_no, base=plan.base,
                                          phase="committing", row=row.model_dump()))
        crash_point("before-commit", plan.round_no)
        commit = workspace.commit_all(commit_message(session, row), trailers={
            ROUND_TRAILER: str(plan.round_no), **generation_trailers(experiment)})
        crash_point("after-commit", plan.round_no)
    else:
        write_journal(experiment, Journal(round=plan.round_no, base=plan.base,
                                          phase="rolling_back", row=row.model_dump()))
        crash_point("before-rollback", plan.round_no)
        attempt = workspace.archive_attempt(experiment.attempt_ref(plan.round_no), plan.base,
                                            attempt_message(row))
        workspace.rollback(plan.base, restore_refs=plan.snapshot)
        crash_point("after-rollback", plan.round_no)
    record(session, row)
    return RoundOutcome(row, commit, attempt)


def commit_message(session: LoopSession, row: ExperienceRow) -> str:
    """`autoresearch: round N — <metric>=<value>` / `ml-iteration: round N — <strategy>`."""
    prefix = f"{session.kind.commit_prefix}: round {row.round} — "
    if session.kind.name != "autoresearch":
        return prefix + (row.strategy[:72] or row.verdict)
    value = format_value(row.result) if row.result is not None else "n/a"
    return prefix + f"{session.protocol.eval.metric}={value}"


def abort_round(session: LoopSession, plan: RoundPlan, reason: str) -> None:
    """Undo a round that will not be recorded (a stop was requested mid-round)."""
    log.warning("round %d aborted: %s", plan.round_no, reason)
    session.workspace.rollback(plan.base, restore_refs=plan.snapshot)
    if plan.round_no > 0:
        session.researcher().abandon(plan.round_no)
    clear_journal(session.experiment)
