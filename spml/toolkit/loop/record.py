"""Recording a decided round: ledger row, researcher feedback, journal cleared (idempotent)."""

from __future__ import annotations

from spml.protocols.experiences import KEPT, ExperienceRow
from spml.toolkit.loop.faults import crash_point
from spml.toolkit.loop.kind import merge_columns
from spml.toolkit.loop.ledger import clear_journal, read_ledger, write_ledger
from spml.toolkit.loop.session import LoopSession

# Commit trailer naming the round a loop commit belongs to (read back by recovery).
ROUND_TRAILER = "Spml-Round"


def record(session: LoopSession, row: ExperienceRow) -> None:
    """Write the row, tell the researcher, forget the journal (idempotent)."""
    ledger = read_ledger(session.experiment)
    assert ledger is not None
    if not ledger.has_round(row.round):
        # A criterion added by a protocol edit gets its column from its first row on.
        columns = merge_columns(ledger.columns, session.kind.columns(session.protocol))
        ledger = ledger.with_row(row).model_copy(update={"columns": columns})
        if session.kind.name != "autoresearch" and row.verdict in KEPT:
            ledger = ledger.model_copy(update={"best_commit": session.workspace.head()[:12]})
        write_ledger(session.experiment, ledger)
    crash_point("after-ledger", row.round)
    value = row.result if row.compliance == "pass" else None
    session.researcher().observe(row.round, value, row.verdict in KEPT)
    clear_journal(session.experiment)
