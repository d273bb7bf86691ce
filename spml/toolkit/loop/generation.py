"""Ledger generations: `experiences.md` deleted while no loop runs starts a new ledger.

A loop that opens without `experiences.md` numbers its rounds from 0 again. Everything the
previous generation kept under round numbers therefore moves to
`.spml/<kind>/generations/<its id>/` first: the round folders (briefs, logs, measurements),
the notes each round took, overrides still queued for its rounds, the notes and saved edits of
`handedits`, and its ledger (the supervisor's copy, or the ledger rebuilt to finish a round a
killed supervisor left in flight). The experiment then gets a new generation id, which its
commits and archived attempts carry (see `identity`). Nothing is deleted.

Crash-safe: the decision is a marker file written before anything moves and removed once the
new ledger exists; every move is a rename done at most once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from spml.toolkit.files import write_atomic
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.handedits import NOTES_FILENAME, SAVED_DIRNAME
from spml.toolkit.loop.identity import new_generation
from spml.toolkit.loop.ledger import ledger_copy_path, read_journal
from spml.toolkit.loop.researchers.factory import OPTUNA_STUDY_FILENAME

log = logging.getLogger(__name__)
MARKER_FILENAME = "new-ledger-pending"
GENERATIONS_DIRNAME = "generations"
# What a generation keeps under its round numbers (paths relative to the state dir). The Optuna
# study too: its trials carry the old rounds' numbers and values measured against the old
# ledger's baseline, and a new ledger's round 0 seeds a fresh study with its own baseline.
_OWNED = ("rounds", NOTES_FILENAME, SAVED_DIRNAME, "overrides/inbox", "overrides/held",
          OPTUNA_STUDY_FILENAME, "confirm")


def new_ledger_pending(experiment: Experiment) -> bool:
    """Whether this opening starts a new ledger; decided once, before the ledger is touched."""
    marker = experiment.state_dir / MARKER_FILENAME
    if not experiment.ledger_path.is_file() and not marker.is_file():
        write_atomic(marker, "experiences.md was missing when the loop opened\n")
    return marker.is_file()


def rebuild_for_recovery(experiment: Experiment) -> None:
    """A round in flight is finished in the ledger it began in: put that ledger back from the
    supervisor's copy, so recovery records the round before the generation is archived."""
    copy = ledger_copy_path(experiment)
    if read_journal(experiment) is not None and copy.is_file() and \
            not experiment.ledger_path.is_file():
        write_atomic(experiment.ledger_path, copy.read_bytes())


def start_generation(experiment: Experiment) -> Experiment:
    """Archive the previous generation's files and record a new generation id.

    Returns:
        The experiment with its new generation.
    """
    state = experiment.state_dir
    archive = state / GENERATIONS_DIRNAME / (experiment.generation or new_generation())
    moved = [name for name in _OWNED if _move(state / name, archive / name)]
    moved += [f"notes/{p.name}" for p in sorted((state / "notes").glob("round-*"))
              if _move(p, archive / "notes" / p.name)]
    # The ledger rebuilt to finish an interrupted round, and the supervisor's copy: the old
    # ledger must no longer be found where `read_ledger` looks.
    if _move(experiment.ledger_path, archive / experiment.ledger_path.name):
        moved.append("experiences.md")
    if _move(ledger_copy_path(experiment), archive / "ledger-copy.md"):
        moved.append("ledger-copy.md")
    if moved:
        log.warning("experiences.md was missing: a new ledger starts; the previous one's %s "
                    "moved to %s", ", ".join(moved), archive)
    return experiment.with_identity(experiment.name, new_generation())


def finish_new_ledger(experiment: Experiment) -> None:
    """The new ledger is written: the decision is carried out."""
    (experiment.state_dir / MARKER_FILENAME).unlink(missing_ok=True)


def _move(source: Path, target: Path) -> bool:
    if not source.exists():
        return False
    number = 1
    while target.exists():  # a second restart in one generation (a crash before its id)
        number += 1
        target = target.with_name(f"{target.stem.split('~')[0]}~{number}{target.suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    return True
