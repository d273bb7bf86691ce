"""Whether a loop is running now, and what it was doing: what `status` tells a person.

A live supervisor holds the experiment lock (`.spml/supervisor.lock`) for its whole run, and the
kernel drops the lock of a killed one. So a free lock with a round journal on disk is a round
that a dead supervisor left in flight (the next `run` finishes or redoes it), never a round that
is still running.
"""

from __future__ import annotations

from dataclasses import dataclass

from spml.toolkit.loop.experiment import Experiment, is_running
from spml.toolkit.loop.kind import KINDS
from spml.toolkit.loop.ledger import ledger_copy_path, read_journal, read_ledger


@dataclass(frozen=True)
class LoopActivity:
    """A loop's state as seen from outside the supervisor."""

    running: bool                 # a supervisor holds the lock now
    round_no: int | None = None   # the round in flight (or left in flight), if any
    phase: str | None = None      # how far that round got (the journal's phase)
    status: str | None = None     # the ledger's status line (None: no ledger yet)
    ledger_deleted: bool = False  # experiences.md is gone; the supervisor's copy is not
    command: str = "autoresearch"

    def describe(self) -> str:
        """One line for `status`."""
        run = f"`spml {self.command} run`"
        if self.running:
            if self.round_no is None:
                return "running: between rounds"
            return f"running: round {self.round_no} in flight (phase {self.phase})"
        if self.ledger_deleted:
            return (f"not running; experiences.md was deleted: {run} starts a new ledger (the "
                    "old one is kept under .spml)")
        if self.round_no is not None:
            return (f"interrupted at round {self.round_no} (phase {self.phase}): no supervisor "
                    f"is running; {run} finishes or redoes that round")
        if self.status in ("running", "interrupted"):
            return f"interrupted between rounds: no supervisor is running; {run} resumes"
        if self.status is None:
            return "not started"
        return f"not running (status: {self.status})"


def loop_activity(experiment: Experiment) -> LoopActivity:
    """Read the lock, the journal and the ledger's status of ``experiment`` (nothing written).

    Raises:
        ProtocolError: experiences.md does not parse (naming the line).
    """
    journal = read_journal(experiment)
    ledger = read_ledger(experiment)
    deleted = not experiment.ledger_path.is_file() and ledger_copy_path(experiment).is_file()
    return LoopActivity(
        running=is_running(experiment),
        round_no=journal.round if journal is not None else None,
        phase=journal.phase if journal is not None else None,
        status=ledger.status if ledger is not None else None,
        ledger_deleted=deleted,
        command=KINDS[experiment.stage].cli_group)
