"""Opening, steering and closing an Auto Research loop (the parts around the rounds)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from spml.errors import ProtocolError
from spml.protocols.autoresearch import (
    PROTOCOL_FILENAME,
    AutoresearchProtocol,
    load_protocol,
    locked_changes,
)
from spml.protocols.experiences import ExperienceRow, Experiences, Status
from spml.toolkit.git.workspace import Workspace, ensure_excluded
from spml.toolkit.loop import control
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_ledger, write_ledger
from spml.toolkit.loop.policies import target_reached
from spml.toolkit.loop.recovery import recover_unfinished_round
from spml.toolkit.loop.session import (
    STAGE,
    LoopSession,
    accepted_protocol,
    preflight,
    save_session,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NextStep:
    """What the loop does next: run round ``round_no``, or end with ``status``."""

    kind: Literal["round", "end"]
    round_no: int = 0
    status: Status = "running"
    reason: str = ""


def open_loop(experiment_dir: str, max_rounds: int | None = None) -> LoopSession:
    """Validate the protocol, prepare the worktree, finish or undo an interrupted round.

    Raises:
        ProtocolError: the protocol is invalid, or a locked field changed since the loop began.
        GitStateError: the directory is not in a git repository with a commit.
    """
    experiment = Experiment.locate(experiment_dir, PROTOCOL_FILENAME)
    protocol = load_protocol(experiment.protocol_path)
    previous = accepted_protocol(experiment)
    if previous is not None:
        _refuse_locked_edits(previous, protocol)
    if max_rounds is not None and max_rounds < 0:
        raise ProtocolError(f"max_rounds must be >= 0, got {max_rounds!r} (command line).")
    ensure_excluded(experiment.repo_root, ".spml/")
    workspace = Workspace.open_or_create(experiment.repo_root, experiment.worktree_dir(STAGE),
                                         experiment.branch(STAGE))
    session = LoopSession(experiment, protocol, workspace, max_rounds)
    preflight(session)
    save_session(experiment, protocol, max_rounds)
    if control.stop_requested(experiment):
        log.info("clearing a stop request left from before this run")
        control.clear_stop(experiment)
    recover_unfinished_round(session)
    _open_ledger(session)
    return session


def _refuse_locked_edits(previous: AutoresearchProtocol, protocol: AutoresearchProtocol) -> None:
    changed = locked_changes(previous, protocol)
    if changed:
        raise ProtocolError(
            f"{PROTOCOL_FILENAME}: {', '.join(changed)} changed since this loop started; these "
            "fields cannot change mid-run because the recorded best would no longer be "
            "comparable. Restore them, or start a new experiment directory."
        )


def _open_ledger(session: LoopSession) -> None:
    p = session.protocol
    ledger = read_ledger(session.experiment)
    if ledger is None:
        ledger = Experiences(metric=p.eval.metric, max_rounds=session.max_rounds)
        if p.baseline is not None:
            ledger = ledger.with_row(ExperienceRow(
                round=0, compliance="pass", result=p.baseline, verdict="committed",
                strategy="baseline", insight="baseline given in the protocol (not measured)"))
    elif ledger.metric != p.eval.metric:
        raise ProtocolError(f"experiences.md tracks metric {ledger.metric!r} but the protocol "
                            f"says {p.eval.metric!r}. Use a new experiment directory.")
    write_ledger(session.experiment, ledger.model_copy(
        update={"max_rounds": session.max_rounds, "status": "running"}))


def next_step(session: LoopSession) -> NextStep:
    """Decide whether to run another round, and which, or how the loop ends."""
    ledger = read_ledger(session.experiment)
    assert ledger is not None, "open_loop creates the ledger"
    if not ledger.has_round(0):
        return NextStep("round", 0)
    if control.stop_requested(session.experiment):
        return NextStep("end", status="stopped", reason="stop requested")
    best = ledger.best
    p = session.protocol
    if best is not None and target_reached(best.result, p.target, p.eval.direction):
        return NextStep("end", status="target_reached",
                        reason=f"target {p.target:g} reached in round {best.round}")
    if ledger.rounds_done >= session.max_rounds:
        return NextStep("end", status="completed",
                        reason=f"{ledger.rounds_done} of {session.max_rounds} rounds done")
    return NextStep("round", ledger.rounds_done + 1)


def close_loop(session: LoopSession, step: NextStep) -> Experiences:
    """Write the final status; acknowledge a stop request."""
    ledger = read_ledger(session.experiment)
    assert ledger is not None
    ledger = ledger.model_copy(update={"status": step.status, "max_rounds": session.max_rounds})
    write_ledger(session.experiment, ledger)
    control.clear_stop(session.experiment)
    return ledger
