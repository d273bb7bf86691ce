"""People's edits while a loop runs: `experiences.md` and the protocol are theirs too.

A person may read and annotate `experiences.md` at any time, and may delete it. The supervisor
keeps its own copy (`.spml/<kind>/ledger-copy.md`, rewritten with every ledger write) and,
whenever it reads the ledger during a run, compares the two (`reconcile_ledger`):

* deleted -> rebuilt from the copy (to start a new ledger: stop the loop, then delete it);
* only text changed (Strategy, Insight, Note cells, the header's wording) -> kept;
* a fact changed (a row's round, verdict, compliance or result, an override row, the metric
  or direction) or it no longer parses -> the copy is put back and the edited file is saved in
  `.spml/<kind>/hand-edits/`: decisions read these facts, and verdicts change only through
  `override`.

While no loop runs, every edit is taken as it is when the next run opens
(`ledger.adopt_ledger`), and deleting the file starts a new ledger (`generation`).

The protocol: an edit made while no researcher runs is the person's and applies from the next
round (`session.reload_protocol`, which still refuses locked fields). One made while the
researcher ran could be the researcher widening its own rights, so `hold_protocol_edit` puts
the accepted text back and saves the edit in the round's folder for the person to copy back.

None of this fails a round: whoever made the edit, undoing it is enough. Each event becomes a
line of the next recorded round's Note (`pending_notes`, consumed by `record`).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from spml.errors import ProtocolError
from spml.protocols.experiences import Experiences, parse_experiences
from spml.toolkit.files import write_atomic
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import ledger_copy_path, read_ledger

log = logging.getLogger(__name__)
NOTES_FILENAME = "edit-notes.txt"
SAVED_DIRNAME = "hand-edits"
HELD_PROTOCOL_FILENAME = "held-protocol.md"


def load_ledger(experiment: Experiment) -> Experiences:
    """The ledger during a run, after `reconcile_ledger` (never None once a loop is open)."""
    reconcile_ledger(experiment)
    ledger = read_ledger(experiment)
    if ledger is None:
        raise ProtocolError(f"{experiment.ledger_path} and the supervisor's copy are both gone; "
                            "run the loop again to start a new ledger.")
    return ledger


def reconcile_ledger(experiment: Experiment) -> list[str]:
    """Keep a person's text edits of the ledger; undo deletions and edits of facts.

    Returns:
        The notes written for the round's Note (empty when nothing happened).
    """
    path, copy = experiment.ledger_path, ledger_copy_path(experiment)
    if not copy.is_file():  # a ledger from before copies were kept: it is the record
        if path.is_file():
            write_atomic(copy, path.read_bytes())
        return []
    kept = copy.read_bytes()
    if not path.is_file():
        moved = _move_aside(experiment, path)  # a directory or a dangling link in its place
        write_atomic(path, kept)
        what = f"replaced by something that is not a file (kept in {moved})" if moved else \
            "deleted"
        return add_note(experiment, f"experiences.md was {what} while the loop ran: rebuilt "
                        "from the supervisor's copy (to start a new ledger, stop the loop, then "
                        "delete it)")
    edited = path.read_bytes()
    if edited == kept:
        return []
    problem = fact_change(kept, edited)
    if problem is None:
        return add_note(experiment, "experiences.md was edited while the loop ran: the text "
                        "edits are kept")
    saved = save_aside(experiment, "experiences", edited)
    write_atomic(path, kept)
    return add_note(experiment, f"experiences.md edit undone ({problem}; verdicts change only "
                    f"through `override`): the supervisor's version is back, yours is in {saved}")


def fact_change(kept: bytes, edited: bytes) -> str | None:
    """What fact of the ledger ``edited`` changed relative to ``kept``; None for text only."""
    try:
        mine = parse_experiences(kept.decode("utf-8"))
    except (ProtocolError, UnicodeDecodeError):
        return None  # the copy itself is unreadable: nothing to hold the edit against
    try:
        theirs = parse_experiences(edited.decode("utf-8"))
    except (ProtocolError, UnicodeDecodeError) as exc:
        return f"it no longer parses: {str(exc).splitlines()[0]}"
    if (mine.metric, mine.direction) != (theirs.metric, theirs.direction):
        return "the metric or direction changed"
    if mine.incumbent != theirs.incumbent:  # the pooled best is measured, not written
        return "the best: line's measured value changed"
    if len(mine.rows) != len(theirs.rows):
        return "rows were added or removed"
    for old, new in zip(mine.rows, theirs.rows, strict=True):
        if _row_facts(old) != _row_facts(new):
            return f"round {old.round}'s row changed its round, verdict, compliance or result"
    return None


def _row_facts(row: Any) -> tuple[Any, ...]:
    result = row.result
    value = "nan" if result is not None and math.isnan(result) else result
    # An override row's Insight holds its id, which keeps the override from applying twice.
    return row.round, row.verdict, row.compliance, value, row.insight if row.is_override else ""


def _move_aside(experiment: Experiment, path: Path) -> str:
    """Move whatever is at ``path`` (not a file) out of the way; '' when nothing is there."""
    if not (path.exists() or path.is_symlink()):
        return ""
    target = experiment.state_dir / SAVED_DIRNAME / f"{path.name}-{time.time_ns()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    path.rename(target)
    return target.relative_to(experiment.exp_dir).as_posix()


def save_aside(experiment: Experiment, stem: str, content: bytes) -> str:
    """Keep a person's undone edit; its path relative to the experiment directory."""
    name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.md"
    path = experiment.state_dir / SAVED_DIRNAME / name
    write_atomic(path, content)
    return path.relative_to(experiment.exp_dir).as_posix()


def hold_protocol_edit(experiment: Experiment, accepted: bytes | None,
                       round_dir: Path) -> list[str]:
    """Undo a protocol edit made while the researcher ran, keeping its text for the person.

    Args:
        experiment: The experiment.
        accepted: The protocol file's bytes when the round began (None: it was absent).
        round_dir: The round's folder, where the edit is saved.

    Returns:
        The note written for the round's Note (empty when the file is unchanged).
    """
    path = experiment.protocol_path
    edited = path.read_bytes() if path.is_file() else None
    if edited == accepted:
        return []
    if accepted is None:
        path.unlink()
    else:
        write_atomic(path, accepted)
    name = experiment.protocol_filename
    if edited is None:
        return add_note(experiment, f"{name} was deleted while the researcher ran: restored")
    held = round_dir / HELD_PROTOCOL_FILENAME
    write_atomic(held, edited)
    where = held.relative_to(experiment.exp_dir).as_posix()
    return add_note(experiment, f"{name} changed while the researcher ran: not applied, since "
                    f"the researcher could have made that edit; it is saved in {where} (copy "
                    "it back to apply it from the next round)")


def _notes_path(experiment: Experiment) -> Path:
    return experiment.state_dir / NOTES_FILENAME


def add_note(experiment: Experiment, note: str) -> list[str]:
    """Queue ``note`` for the next recorded round's Note (once); returns ``[note]``."""
    log.warning(note)
    notes = pending_notes(experiment)
    if note not in notes:
        write_atomic(_notes_path(experiment), "\n".join([*notes, note]) + "\n")
    return [note]


def pending_notes(experiment: Experiment) -> list[str]:
    """Notes about people's edits that no recorded round carries yet."""
    path = _notes_path(experiment)
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def clear_notes(experiment: Experiment) -> None:
    """The notes are in a ledger row now."""
    _notes_path(experiment).unlink(missing_ok=True)
