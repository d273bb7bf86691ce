"""Opening, steering and closing a loop of any kind (the parts around the rounds)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Literal

from spml.errors import ProtocolError
from spml.protocols.experiences import Experiences, Status
from spml.toolkit.git.workspace import Workspace, ensure_excluded
from spml.toolkit.loop import control, generation
from spml.toolkit.loop.batch import (
    batch_size,
    check_batch_sandbox,
    gpu_slices,
    parallel_spec,
    recover_batch,
)
from spml.toolkit.loop.evidence import Noise
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.handedits import load_ledger
from spml.toolkit.loop.incumbent import find_incumbent
from spml.toolkit.loop.kind import AUTORESEARCH, LoopKind, merge_columns, refuse_other_kinds
from spml.toolkit.loop.ledger import adopt_ledger, read_ledger, write_ledger
from spml.toolkit.loop.policies import target_reached
from spml.toolkit.loop.record import generation_lines
from spml.toolkit.loop.recovery import recover_unfinished_round
from spml.toolkit.loop.sandboxing import sandbox_status
from spml.toolkit.loop.session import (
    LoopSession,
    accepted_protocol,
    check_checkout,
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
    candidates: int = 1  # > 1: a batch of candidates, rounds round_no.. (`batch`)


def open_loop(experiment_dir: str, max_rounds: int | None = None,
              kind: LoopKind = AUTORESEARCH, allow_dirty: bool = False) -> LoopSession:
    """Validate the protocol, prepare the worktree, finish or undo an interrupted round.

    Args:
        experiment_dir: The experiment directory (holds the protocol).
        max_rounds: This run's cap on the rounds (None: the protocol's).
        kind: The loop kind.
        allow_dirty: Run although the person's checkout has uncommitted changes to files
            the loop runs (they are left out, and logged).

    Raises:
        ProtocolError: the protocol is invalid, a locked field changed since the loop began,
            or the directory holds another loop kind.
        GitStateError: the directory is not in a git repository with a commit, or files the
            loop runs have uncommitted changes (without ``allow_dirty``).
    """
    experiment = Experiment.locate(experiment_dir, kind.protocol_filename)
    refuse_other_kinds(kind, experiment.exp_dir)
    _move_flat_state(experiment)
    protocol = kind.load_protocol(experiment.protocol_path)
    previous = accepted_protocol(experiment, kind)
    if previous is not None:
        refuse_locked_edits(kind, previous, protocol)
    if max_rounds is not None and max_rounds < 0:
        raise ProtocolError(f"max_rounds must be >= 0, got {max_rounds!r} (command line).")
    check_checkout(experiment, protocol, kind, allow_dirty)
    experiment = experiment.claim()
    ensure_excluded(experiment.repo_root, ".spml/")
    workspace = Workspace.open_or_create(experiment.repo_root,
                                         experiment.worktree_dir(kind.name),
                                         experiment.branch(kind.name))
    session = LoopSession(experiment, protocol, workspace, max_rounds, kind)
    preflight(session)
    spec = parallel_spec(protocol)
    gpu_slices(spec, spec.candidates)  # a batch needs its GPUs: say so before the baseline
    check_batch_sandbox(session)
    save_session(experiment, protocol, max_rounds)
    if control.stop_requested(experiment):
        log.info("clearing a stop request left from before this run")
        control.clear_stop(experiment)
    session = _recover(session)
    _open_ledger(session)
    generation.finish_new_ledger(session.experiment)
    _refuse_a_ledger_behind_the_branch(session)
    return session


def _recover(session: LoopSession) -> LoopSession:
    """Finish or undo the round a killed supervisor left in flight; then, if experiences.md was
    deleted while no loop ran, archive its generation (see `generation`)."""
    experiment = session.experiment
    new_ledger = generation.new_ledger_pending(experiment)
    if new_ledger:
        generation.rebuild_for_recovery(experiment)
    else:
        adopt_ledger(experiment)  # while no loop ran, every edit was a person's
    if not recover_batch(session):
        recover_unfinished_round(session)
    if not new_ledger:
        return session
    return replace(session, experiment=generation.start_generation(experiment))


def _refuse_a_ledger_behind_the_branch(session: LoopSession) -> None:
    """A round committed on the branch but missing from experiences.md would be redone under
    the same number, and its records overwritten."""
    ledger = read_ledger(session.experiment)
    committed = session.workspace.round_trailers(having=generation_lines(session.experiment))
    if ledger is not None and committed and max(committed) > ledger.rounds_done:
        raise ProtocolError(
            f"experiences.md records {ledger.rounds_done} round(s) but branch "
            f"{session.workspace.branch} has the commit of round {max(committed)}: the ledger "
            "lost rows. Restore experiences.md (its rows are in the Prefect artifacts and the "
            "commit messages), or delete it to start a new ledger on this branch.")


# Before loop kinds, Auto Research kept its state directly in `.spml/`.
_FLAT_STATE = ("session.json", "round.json", "rounds", "notes", "optuna.db", "stop-requested",
               "supervisor-run.txt", "train.pid", "eval.pid")


def _move_flat_state(experiment: Experiment) -> None:
    root = experiment.state_root
    if experiment.stage != AUTORESEARCH.name or not (root / "session.json").is_file():
        return
    experiment.state_dir.mkdir(parents=True, exist_ok=True)
    for name in _FLAT_STATE:
        if (root / name).exists() and not (experiment.state_dir / name).exists():
            (root / name).rename(experiment.state_dir / name)
    log.info("moved the loop state of an older spml into %s", experiment.state_dir)


def refuse_locked_edits(kind: LoopKind, previous: Any, protocol: Any) -> None:
    """Refuse a protocol whose locked fields differ from the accepted one.

    Raises:
        ProtocolError: naming the changed fields.
    """
    changed = kind.locked_changes(previous, protocol)
    if changed:
        raise ProtocolError(
            f"{kind.protocol_filename}: {', '.join(changed)} changed since this loop started; "
            "these fields cannot change mid-run because the recorded best would no longer be "
            "comparable. Restore them, or start a new experiment directory."
        )


def _open_ledger(session: LoopSession) -> None:
    p = session.protocol
    metric = p.metric or "criteria"
    ledger = read_ledger(session.experiment)
    if ledger is None:
        # A baseline given in the protocol is still measured as round 0 (and checked against
        # it there): a number nobody measured is no yardstick.
        ledger = Experiences(metric=metric, max_rounds=session.max_rounds,
                             direction=p.direction, columns=session.kind.columns(p))
    elif ("Result" in ledger.columns) != (session.kind is AUTORESEARCH):
        raise ProtocolError("experiences.md is the ledger of another loop kind (its columns: "
                            f"{', '.join(ledger.columns)}). Use a new experiment directory.")
    elif ledger.metric != metric:
        raise ProtocolError(f"experiences.md tracks metric {ledger.metric!r} but the protocol "
                            f"says {metric!r}. Use a new experiment directory.")
    elif ledger.direction is not None and p.direction is not None and \
            ledger.direction != p.direction:
        raise ProtocolError(f"experiences.md records direction {ledger.direction} but the "
                            f"protocol says {p.direction}. Use a new experiment directory.")
    write_ledger(session.experiment, ledger.model_copy(update={
        "max_rounds": session.max_rounds, "status": "running",
        "direction": ledger.direction or p.direction, "sandbox": sandbox_status(session),
        "holdout": None,  # the last end's measurement: this run ends anew
        "columns": merge_columns(ledger.columns, session.kind.columns(p))}))


def next_step(session: LoopSession) -> NextStep:
    """Decide whether to run another round, and which, or how the loop ends."""
    ledger = load_ledger(session.experiment)
    if not ledger.has_round(0):
        return NextStep("round", 0)
    if control.stop_requested(session.experiment):
        return NextStep("end", status="stopped", reason="stop requested")
    best = ledger.best
    p = session.protocol
    if session.kind is AUTORESEARCH:
        if best is not None and target_reached(ledger.best_value, p.target, p.eval.direction):
            return NextStep("end", status="target_reached",
                            reason=f"target {p.target:g} reached in round {best.round}")
    elif _all_criteria_pass(session):
        return NextStep("end", status="target_reached", reason="every review criterion passes "
                        f"at {session.workspace.head()[:7]}")
    if ledger.rounds_done >= session.max_rounds:
        return NextStep("end", status="completed",
                        reason=f"{ledger.rounds_done} of {session.max_rounds} rounds done")
    return NextStep("round", ledger.rounds_done + 1,
                    candidates=batch_size(session, ledger.rounds_done + 1))


def _all_criteria_pass(session: LoopSession) -> bool:
    incumbent = find_incumbent(session)
    if incumbent is None:
        return False
    decision = session.kind.make_policy(session.protocol, Noise(0.0, 0)).judge(incumbent, None)
    return decision.stop


def close_loop(session: LoopSession, step: NextStep) -> Experiences:
    """Write the final status; acknowledge a stop request."""
    ledger = load_ledger(session.experiment)
    ledger = ledger.model_copy(update={"status": step.status, "max_rounds": session.max_rounds})
    write_ledger(session.experiment, ledger)
    control.clear_stop(session.experiment)
    return ledger
