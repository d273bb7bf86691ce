"""Recording a decided round: ledger row, researcher feedback, journal cleared (idempotent)."""

from __future__ import annotations

import logging

from spml.protocols.experiences import KEPT, ExperienceRow
from spml.toolkit.loop.acceptance import incumbent_estimate
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.faults import crash_point
from spml.toolkit.loop.handedits import clear_notes, pending_notes, reconcile_ledger
from spml.toolkit.loop.incumbent import NO_CHANGE, find_incumbent
from spml.toolkit.loop.kind import merge_columns
from spml.toolkit.loop.ledger import clear_journal, read_ledger, write_ledger
from spml.toolkit.loop.session import LoopSession

log = logging.getLogger(__name__)

# Commit trailer naming the round a loop commit belongs to (read back by recovery).
ROUND_TRAILER = "Spml-Round"
# And the ledger generation it belongs to: a restarted ledger numbers its rounds from 0 again.
GENERATION_TRAILER = "Spml-Generation"


def generation_trailers(experiment: Experiment) -> dict[str, str]:
    """The trailer marking a commit as this generation's (none for generation "")."""
    return {GENERATION_TRAILER: experiment.generation} if experiment.generation else {}


def attempt_message(row: ExperienceRow) -> str:
    """The message of a rolled-back round's archived attempt (`refs/spml/attempts/...`)."""
    return f"spml attempt: round {row.round} — {row.insight}"


def generation_lines(experiment: Experiment) -> tuple[str, ...]:
    """`generation_trailers` as message lines, to find this generation's commits."""
    return tuple(f"{key}: {value}" for key, value in generation_trailers(experiment).items())


def record(session: LoopSession, row: ExperienceRow) -> None:
    """Write the row (with the notes about people's edits), tell the researcher, forget the
    journal (idempotent)."""
    experiment = session.experiment
    reconcile_ledger(experiment)  # edits made during the evaluation
    ledger = read_ledger(experiment)
    if ledger is None:  # deleted while no loop ran, with no copy to rebuild it from
        log.warning("round %d is not recorded: there is no experiences.md", row.round)
    elif not ledger.has_round(row.round):
        # A criterion added by a protocol edit gets its column from its first row on.
        columns = merge_columns(ledger.columns, session.kind.columns(session.protocol))
        ledger = ledger.with_row(_with_notes(row, pending_notes(experiment))).model_copy(
            update={"columns": columns})
        if session.kind.name != "autoresearch" and row.verdict in KEPT:
            ledger = ledger.model_copy(update={"best_commit": session.workspace.head()[:12]})
        ledger = ledger.model_copy(update={"incumbent": incumbent_estimate(session, ledger)})
        write_ledger(experiment, ledger)
    clear_notes(experiment)
    crash_point("after-ledger", row.round)
    value = row.result if row.compliance == "pass" else None
    if value is None and row.insight == NO_CHANGE:
        # The proposal is HEAD's code: its value is the incumbent's (a sampler told "failed"
        # would propose it again and again).
        incumbent = find_incumbent(session)
        value = incumbent.mean if incumbent is not None else None
    session.researcher().observe(row.round, value, row.verdict in KEPT)
    clear_journal(experiment)


def _with_notes(row: ExperienceRow, notes: list[str]) -> ExperienceRow:
    new = [n for n in notes if n not in row.note]
    return row.model_copy(update={"note": "; ".join(filter(None, [row.note, *new]))}) if new \
        else row
