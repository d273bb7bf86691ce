"""What an interrupted supervisor (Ctrl-C, SIGTERM) leaves on disk, and the line it prints.

The ledger's `status: running` becomes `status: interrupted`; the round journal stays exactly as
it is, so the next `run` finishes or redoes the round in flight once (`recovery`), as after a
kill -9, and `_open_ledger` sets the status back to `running`. Only the status line is
changed, in the supervisor's copy and in `experiences.md` (each atomically, both only where
they exist): a person's pending edit of the ledger is kept as it is, and a deleted ledger is
not brought back.

Called from a signal handler's helper thread while the loop itself is suspended mid-step, so it
only reads files and replaces them atomically; no git, no locks shared with the loop.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from spml.protocols.experiences import parse_experiences
from spml.toolkit.files import write_atomic
from spml.toolkit.loop.begin import BATCH_FILENAME
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.kind import KINDS
from spml.toolkit.loop.ledger import ledger_copy_path, read_journal, read_json, read_ledger

_RUNNING = re.compile(r"^status:[ \t]*running[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Interruption:
    """Where the loop was when it was interrupted."""

    exp_dir: Path
    command: str                  # `autoresearch` or `iteration`
    round_no: int | None = None   # the round in flight (its journal is kept), if any
    last_round: int | None = None  # the ledger's last recorded round
    status: str | None = None     # the ledger's status after recording (None: no ledger)
    flags: tuple[str, ...] = ()    # the run's own flags (--max-rounds N), for the resume command

    def resume_command(self) -> str:
        """The command that resumes the loop."""
        return shlex.join(["spml", self.command, "run", str(self.exp_dir), *self.flags])

    def describe(self, signal_name: str = "") -> str:
        """One line: where the loop stopped and how to resume it."""
        by = f" by {signal_name}" if signal_name else ""
        if self.status not in (None, "running", "interrupted"):
            return f"interrupted{by} after the loop ended (status: {self.status})"
        if self.round_no is not None:
            where = f" at round {self.round_no}"
        elif self.last_round is not None:
            where = f" after round {self.last_round}"
        else:
            where = " before the first round"
        return f"interrupted{by}{where}; resume with: {self.resume_command()}"


def record_interrupted(experiment: Experiment, flags: tuple[str, ...] = ()) -> Interruption:
    """Mark the ledger `interrupted` (if it says `running`); the journal is left for `recovery`.

    Args:
        experiment: The interrupted loop's experiment.
        flags: The flags the run was given (e.g. ``--max-rounds 3``), for the resume command.

    Returns:
        Where the loop was, for the line the supervisor prints.
    """
    for path in (ledger_copy_path(experiment), experiment.ledger_path):
        _mark_interrupted(path)
    journal = read_journal(experiment)
    batch = read_json(experiment.state_dir / BATCH_FILENAME, None)  # a batch in flight
    try:
        ledger = read_ledger(experiment)
    except Exception:  # noqa: BLE001 - a hand-broken ledger must not hide the resume line
        ledger = None
    return Interruption(
        exp_dir=experiment.exp_dir, command=KINDS[experiment.stage].cli_group,
        round_no=journal.round if journal is not None else
        batch["rounds"][0] if isinstance(batch, dict) and batch.get("rounds") else None,
        last_round=max((r.round for r in ledger.rows), default=None) if ledger else None,
        status=ledger.status if ledger is not None else None, flags=flags)


def _mark_interrupted(path: Path) -> None:
    try:
        text = path.read_text(encoding="utf-8")
        if parse_experiences(text, source=str(path)).status != "running":
            return
    except Exception:  # noqa: BLE001 - missing or hand-broken: nothing to mark
        return
    write_atomic(path, _RUNNING.sub("status: interrupted", text, count=1))
