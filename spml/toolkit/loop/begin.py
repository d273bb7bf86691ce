"""S0: begin a round — protocol edits, notes, a clean tree, the journal, a git snapshot, a brief.

Every step is a plain function of the session (rebuilt from disk) and the round's plan, so the
Prefect tasks in `spml.tasks` stay one-line wrappers and the engine is tested without Prefect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from spml.toolkit.files import write_atomic
from spml.toolkit.git.workspace import GitSnapshot
from spml.toolkit.loop import control
from spml.toolkit.loop.brief import BriefInputs
from spml.toolkit.loop.faults import crash_point
from spml.toolkit.loop.handedits import load_ledger, reconcile_ledger
from spml.toolkit.loop.identity import IDENTITY_FILENAME
from spml.toolkit.loop.incumbent import find_incumbent, measured_runs, top_up_seeds
from spml.toolkit.loop.ledger import Journal, ledger_copy_path, write_journal
from spml.toolkit.loop.measurement import INCUMBENT_FILENAME, MEASUREMENT_FILENAME
from spml.toolkit.loop.overrides import apply_overrides, pending_overrides
from spml.toolkit.loop.session import LoopSession, reload_protocol

log = logging.getLogger(__name__)
SNAPSHOT_FILENAME = "git-snapshot.json"
BATCH_FILENAME = "batch.json"  # the journal of a batch of candidates (`batch`)


@dataclass(frozen=True)
class RoundPlan:
    """A round that has begun: its number, base commit, git snapshot, notes."""

    round_no: int
    base: str
    snapshot: GitSnapshot = field(repr=False)
    notes: tuple[str, ...] = ()
    # Contents of the supervisor's own files outside the worktree (ledger, journal, session),
    # which a researcher running with the user's rights could otherwise rewrite.
    supervisor_files: dict[str, bytes | None] = field(default_factory=dict, repr=False)
    # Overrides already queued when the round began (any other one came while it ran).
    queued_overrides: tuple[str, ...] = ()
    # HEAD holds code nobody measured (an override's revert, lost state, a hand-made commit):
    # this round measures HEAD instead of asking the researcher, so the next one is judged.
    remeasure: bool = False
    # Seeds HEAD's code runs on before the researcher starts, so that the candidate is compared
    # with enough runs of the incumbent (see `spml.toolkit.loop.measure.top_up_incumbent`).
    top_up: tuple[int, ...] = ()
    # The rounds of this round's batch (`spml.toolkit.loop.batch`), () for a round alone. A
    # candidate is judged against what was measured before its batch, never its siblings.
    batch: tuple[int, ...] = ()

    @property
    def first_round(self) -> int:
        """The first round of its batch (itself when alone): the runs before it are evidence."""
        return self.batch[0] if self.batch else self.round_no

    @property
    def measures_head(self) -> bool:
        """Round 0 or a re-measure: no researcher, HEAD itself is trained and evaluated."""
        return self.round_no == 0 or self.remeasure

    @property
    def note_text(self) -> str:
        """The ledger's Note cell."""
        return "; ".join(self.notes)


def begin_round(session: LoopSession, round_no: int) -> tuple[LoopSession, RoundPlan]:
    """Apply protocol edits, take notes, start from a clean tree, journal the round."""
    notes: list[str] = []
    reconcile_ledger(session.experiment)  # a ledger deleted between rounds is rebuilt first
    if round_no > 0:
        session, protocol_note = reload_protocol(session)
        notes = control.take_notes(session.experiment, round_no)
        if protocol_note:
            notes.append(protocol_note)
        apply_overrides(session)  # each one is its own ledger row, not a note
    workspace = session.workspace
    base = workspace.head()
    workspace.rollback(base)
    write_journal(session.experiment, Journal(round=round_no, base=base))
    crash_point("begin-before-snapshot", round_no)
    round_dir = session.experiment.round_dir(round_no)
    round_dir.mkdir(parents=True, exist_ok=True)
    snapshot = workspace.snapshot()
    # On disk too: after a crash, recovery restores hooks, config and watched refs from it.
    write_atomic(round_dir / SNAPSHOT_FILENAME, snapshot.to_json())
    runs = measured_runs(session.experiment, round_no) if round_no > 0 else []
    incumbent = find_incumbent(session, runs) if round_no > 0 else None
    remeasure = round_no > 0 and incumbent is None
    if remeasure:
        log.warning("round %d re-measures HEAD %s: no measurement of its code", round_no,
                    base[:7])
    plan = RoundPlan(round_no, base, snapshot, tuple(notes),
                     read_all(supervisor_files(session, plan_round=round_no)),
                     tuple(o.id for o in pending_overrides(session.experiment)), remeasure,
                     top_up_seeds(session, incumbent, runs))
    if not plan.measures_head:
        write_atomic(round_dir / "brief.md", round_brief(session, plan))
    return session, plan


def round_brief(session: LoopSession, plan: RoundPlan) -> str:
    """The round's brief, from the ledger as it stands."""
    ledger = load_ledger(session.experiment)
    human = [n for n in plan.notes if not n.startswith("protocol edit")]
    return session.kind.render_brief(BriefInputs(session.protocol, session.prose(), ledger,
                                                 plan.round_no, session.max_rounds, human))


def supervisor_files(session: LoopSession, plan_round: int,
                     first: int | None = None) -> list[Path]:
    """Files only the supervisor writes during a round, and the protocol (people's edits of it
    and of the ledger are judged apart: see `handedits`). ``first``: the first round of the
    round's batch (its siblings' measurement files are theirs to write meanwhile)."""
    experiment = session.experiment
    state = experiment.state_dir
    first = plan_round if first is None else first
    # Every round's measurements decide what the incumbent and the noise are: nobody else may
    # rewrite them.
    measured = [experiment.round_dir(n) / name for n in range(first)
                for name in (MEASUREMENT_FILENAME, INCUMBENT_FILENAME)]
    measured.append(experiment.round_dir(first) / INCUMBENT_FILENAME)
    # And the end-of-loop confirmation of a loop that is resumed with more rounds.
    measured += [state / "confirm" / f"{side}.json" for side in ("best", "baseline")]
    return [ledger_copy_path(experiment), state / "round.json", state / BATCH_FILENAME,
            state / "session.json",
            state / IDENTITY_FILENAME, experiment.round_dir(plan_round) / SNAPSHOT_FILENAME,
            experiment.protocol_path, *measured]


def protect_supervisor_files(session: LoopSession, plan: RoundPlan) -> RoundPlan:
    """``plan`` with the supervisor's files read again (after the incumbent's top-up wrote)."""
    return replace(plan, supervisor_files=read_all(supervisor_files(
        session, plan.round_no, plan.first_round)))


def read_all(paths: list[Path]) -> dict[str, bytes | None]:
    return {str(p): p.read_bytes() if p.is_file() else None for p in paths}
