"""The person on the loop: notes for the next brief and stop requests, as files.

Files work without a Prefect server (the CLI's embedded mode) and survive a supervisor crash.
A note is one file in `.spml/notes/inbox/`; when a round starts it is moved (atomic rename) to
`.spml/notes/round-<n>/`, so a redone round sees the same notes and no note is lost or doubled.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spml.errors import ProtocolError
from spml.toolkit.files import write_atomic
from spml.toolkit.loop.experiment import Experiment


def _notes_dir(experiment: Experiment) -> Path:
    return experiment.state_dir / "notes"


def note_unread_warning(experiment: Experiment, protocol_reader: Callable[[Path], Any]) -> str:
    """Why a note will not steer the search ('' when the researcher reads notes, or while a
    person's edit leaves the protocol unreadable: `run` names that problem).

    Args:
        protocol_reader: The loop kind's `load_protocol`.
    """
    try:
        researcher = protocol_reader(experiment.protocol_path).researcher
    except ProtocolError:
        return ""
    if researcher.reads_notes:
        return ""
    return (f"the {researcher.kind} researcher does not read notes: the note is kept in the "
            "ledger's Note column, but cannot steer its search")


def add_note(experiment: Experiment, text: str) -> Path:
    """Queue guidance for the next round's brief and Note column."""
    text = " ".join(text.split())
    if not text:
        raise ProtocolError("a note must say something, got an empty text.")
    inbox = _notes_dir(experiment) / "inbox"
    name = f"{time.time_ns():020d}-{os.getpid()}.txt"
    path = inbox / name
    write_atomic(path, text)
    return path


def take_notes(experiment: Experiment, round_no: int) -> list[str]:
    """Move queued notes to this round and return every note the round owns, oldest first."""
    notes = _notes_dir(experiment)
    inbox, owned = notes / "inbox", notes / f"round-{round_no:04d}"
    owned.mkdir(parents=True, exist_ok=True)
    if inbox.is_dir():
        for path in sorted(inbox.glob("*.txt")):
            os.replace(path, owned / path.name)
    return [p.read_text(encoding="utf-8") for p in sorted(owned.glob("*.txt"))]


def pending_notes(experiment: Experiment) -> list[str]:
    """Notes queued for the next round."""
    inbox = _notes_dir(experiment) / "inbox"
    return [p.read_text(encoding="utf-8") for p in sorted(inbox.glob("*.txt"))]


def _stop_path(experiment: Experiment) -> Path:
    return experiment.state_dir / "stop-requested"


def request_stop(experiment: Experiment, reason: str = "stop requested by user") -> None:
    """Ask a running loop to end after its current step."""
    write_atomic(_stop_path(experiment), reason)


def stop_requested(experiment: Experiment) -> str | None:
    """The stop reason if a stop was requested."""
    path = _stop_path(experiment)
    return path.read_text(encoding="utf-8") if path.is_file() else None


def clear_stop(experiment: Experiment) -> None:
    """Acknowledge a stop request (the loop has stopped)."""
    _stop_path(experiment).unlink(missing_ok=True)


def swap_supervisor_run(experiment: Experiment, run_id: str) -> tuple[str | None, int]:
    """Record the orchestrator run now supervising the experiment.

    Called with the experiment lock held: the previous run, if it is not this one, is dead.

    Returns:
        The previous run's id (None when none, or when it is this run: a retried task), and
        this run's number among the experiment's runs (1 for the first; it names the run).
    """
    path = experiment.state_dir / "supervisor-run.txt"
    previous = path.read_text(encoding="utf-8").strip() if path.is_file() else None
    history = experiment.state_dir / "supervisor-runs.log"
    runs = history.read_text(encoding="utf-8").split() if history.is_file() else []
    if run_id not in runs:
        runs.append(run_id)
        write_atomic(history, "\n".join(runs) + "\n")
    write_atomic(path, run_id)
    return (previous if previous != run_id else None), runs.index(run_id) + 1
