"""Finish or undo a round that a killed supervisor left in flight — exactly once.

The journal says how far the round got (see `spml.toolkit.loop.settle` for the write order):

* the ledger already has the row -> only the bookkeeping after it is redone;
* `committing` and the branch tip is that round's commit -> the commit happened: record the row;
* anything else -> the round is rolled back to its base and will be redone from scratch.

Orphaned researcher/train/eval process groups of the dead supervisor are killed first, so
nothing keeps writing into the worktree.
"""

from __future__ import annotations

import logging

from spml.toolkit.git.workspace import GitSnapshot
from spml.toolkit.loop.begin import SNAPSHOT_FILENAME
from spml.toolkit.loop.ledger import Journal, clear_journal, read_journal, read_ledger
from spml.toolkit.loop.record import ROUND_TRAILER, attempt_message, record
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.process.runner import kill_stale_process_group

log = logging.getLogger(__name__)


def recover_unfinished_round(session: LoopSession) -> str:
    """Bring the worktree, ledger and researcher to a consistent state; say what was done."""
    kill_orphans(session)
    journal = read_journal(session.experiment)
    workspace = session.workspace
    if journal is None:
        workspace.rollback(workspace.head())
        return "clean"
    ledger = read_ledger(session.experiment)
    row = journal.decided_row()
    saved = saved_snapshot(session, journal.round)
    if ledger is not None and ledger.has_round(journal.round):
        action = "finished the bookkeeping of"
        row = next(r for r in ledger.rows if r.round == journal.round)
    elif journal.phase == "committing" and row is not None and tip_is_round(session, journal):
        action = "recorded the commit of"
    elif journal.phase == "rolling_back" and row is not None:
        # The round was measured and decided: finish its rollback instead of redoing it.
        action = "finished the rollback of"
        if workspace.changes_since(journal.base):  # killed before the attempt was archived
            workspace.archive_attempt(session.experiment.attempt_ref(journal.round), journal.base,
                                      attempt_message(row))
        workspace.rollback(journal.base, restore_refs=saved)
    else:
        row, action = None, "rolled back"
        workspace.rollback(journal.base, restore_refs=saved)
        if journal.round > 0:
            session.researcher().abandon(journal.round)
        clear_journal(session.experiment)
    if row is not None:
        workspace.rollback(workspace.head(), restore_refs=saved)
        record(session, row)
    message = f"{action} round {journal.round} interrupted (supervisor killed or stopped)"
    log.warning(message)
    return message


def saved_snapshot(session: LoopSession, round_no: int) -> GitSnapshot | None:
    """The git state saved when the round began: hooks, config and watched refs to restore."""
    path = session.experiment.round_dir(round_no) / SNAPSHOT_FILENAME
    try:
        return GitSnapshot.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("no usable git snapshot for round %d; restoring the worktree only",
                    round_no)
        return None


def tip_is_round(session: LoopSession, journal: Journal) -> bool:
    commit = session.workspace.repo.commit(session.workspace.head())
    trailer = f"{ROUND_TRAILER}: {journal.round}"
    parents = [p.hexsha for p in commit.parents]
    return trailer in commit.message and parents == [journal.base]


def kill_orphans(session: LoopSession) -> None:
    state = session.experiment.state_dir
    candidates = [state / "train.pid", state / "eval.pid", *state.glob("train-c*.pid"),
                  *state.glob("eval-c*.pid")]
    candidates += list((state / "rounds").glob("*/researcher.pid"))
    for pid_file in candidates:
        if pid_file.exists() and kill_stale_process_group(pid_file):
            log.warning("killed an orphaned process group left by a dead supervisor (%s)",
                        pid_file.name)
