"""Durable loop state: the `experiences.md` ledger and the round journal.

The ledger is the record of finished rounds. The journal (`.spml/round.json`) exists only while a
round is in flight and says how far it got, so a supervisor killed at any instant can finish or
undo that round exactly once on restart. Both are replaced atomically. Every ledger write also
refreshes the supervisor's own copy (`.spml/<kind>/ledger-copy.md`): people may edit or delete
`experiences.md` while a loop runs (`spml.toolkit.loop.handedits` compares the two).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from spml.protocols.experiences import ExperienceRow, Experiences, Status, parse_experiences
from spml.toolkit.files import write_atomic
from spml.toolkit.loop.experiment import Experiment

Phase = Literal["started", "committing", "rolling_back"]
COPY_FILENAME = "ledger-copy.md"


class Journal(BaseModel):
    """What the supervisor was doing when it last wrote down its progress."""

    model_config = ConfigDict(frozen=True)

    round: int
    base: str
    phase: Phase = "started"
    row: dict[str, Any] | None = None  # the decided ledger row, once settled

    def decided_row(self) -> ExperienceRow | None:
        """The ledger row decided before the git operation, if any."""
        return ExperienceRow.model_validate(self.row) if self.row is not None else None


def ledger_copy_path(experiment: Experiment) -> Path:
    """The supervisor's copy of the ledger, as it last wrote or accepted it."""
    return experiment.state_dir / COPY_FILENAME


def read_ledger(experiment: Experiment) -> Experiences | None:
    """The ledger (the supervisor's copy if `experiences.md` was deleted), or None when the loop
    never started."""
    path = experiment.ledger_path
    if not path.is_file():
        path = ledger_copy_path(experiment)
        if not path.is_file():
            return None
    return parse_experiences(path.read_text(encoding="utf-8"), source=str(path))


def write_ledger(experiment: Experiment, ledger: Experiences) -> None:
    """Atomically replace the ledger and the supervisor's copy. After a crash between the two,
    the next opening takes the ledger file as it is (`adopt_ledger`) and recovery writes the
    interrupted round's row again."""
    text = ledger.render()
    write_atomic(ledger_copy_path(experiment), text)
    write_atomic(experiment.ledger_path, text)


def adopt_ledger(experiment: Experiment) -> Experiences | None:
    """Take `experiences.md` as it is for the supervisor's copy (while no loop runs, every edit
    is a person's). Returns it, or None when there is none.

    Raises:
        ProtocolError: it does not parse (naming the line).
    """
    path = experiment.ledger_path
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    ledger = parse_experiences(text, source=str(path))
    write_atomic(ledger_copy_path(experiment), text)
    return ledger


def update_status(experiment: Experiment, status: Status, max_rounds: int) -> Experiences:
    """Set the ledger's status (and max rounds) and write it back."""
    ledger = read_ledger(experiment)
    assert ledger is not None, "the ledger is created when the loop opens"
    ledger = ledger.model_copy(update={"status": status, "max_rounds": max_rounds})
    write_ledger(experiment, ledger)
    return ledger


def _journal_path(experiment: Experiment) -> Path:
    return experiment.state_dir / "round.json"


def read_journal(experiment: Experiment) -> Journal | None:
    """The in-flight round's journal, if a round is in flight."""
    path = _journal_path(experiment)
    if not path.is_file():
        return None
    return Journal.model_validate_json(path.read_text(encoding="utf-8"))


def write_journal(experiment: Experiment, journal: Journal) -> None:
    """Atomically record the in-flight round's progress."""
    write_atomic(_journal_path(experiment), journal.model_dump_json(indent=2))


def clear_journal(experiment: Experiment) -> None:
    """The round is fully settled: forget it."""
    _journal_path(experiment).unlink(missing_ok=True)


def read_json(path: Path, default: Any) -> Any:
    """A small JSON state file, or ``default`` when absent."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default
