"""Batches of candidates (`parallel: {candidates: K}`): K rounds against one incumbent at once.

A batch numbers its candidates as consecutive rounds (R5..R8) and runs them as:

1. `begin_batch` (once): protocol edits, overrides and notes as a round's begin does; the base
   is HEAD; the batch journal (`.spml/<kind>/batch.json`) lists the rounds; each candidate gets
   its own worktree (`.git/spml/candidates/<kind>-<name>/<slot>`, on a branch of its own) reset
   to the base, its git snapshot and its brief. The loop's branch is watched from every
   candidate's worktree.
2. `top_up_batch`: the incumbent's extra runs, once, in the loop's worktree.
3. per candidate, concurrently: the researcher (`research_candidate`); then, all together once
   every researcher is done, compliance (`comply_batch`); then, concurrently, training and
   evaluation (`measure_candidate`), each with its own pid files and GPU slice.
4. `settle_batch`: each candidate is judged against the incumbent measured before the batch
   (never its siblings), at the protocol's confidence Bonferroni-corrected for the K
   comparisons; the best one that is kept wins; every other one is archived as an attempt. The
   decided rows and the candidates' trees go into the journal first (`settling`); then each
   other candidate's tree is archived straight from the journal and its row recorded, and last
   the winner's files are loaded into the loop's worktree and committed there by the one-round
   `settle` (so the base stays HEAD until then).

Recovery (`recover_batch`, when a killed supervisor resumes): a batch killed while `settling`
settles its remaining candidates from the journal; one killed earlier is discarded (its round
directories kept as `NNNN.discarded`, its Optuna trials failed) and run again from its first
round, so every round is recorded exactly once.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from spml.errors import ProtocolError
from spml.protocols.experiences import KEPT, ExperienceRow, format_value
from spml.protocols.parallel import ParallelSpec
from spml.toolkit.files import write_atomic
from spml.toolkit.git.workspace import GitSnapshot, Workspace
from spml.toolkit.loop import control
from spml.toolkit.loop.begin import (
    BATCH_FILENAME,
    SNAPSHOT_FILENAME,
    RoundPlan,
    protect_supervisor_files,
    read_all,
    round_brief,
    supervisor_files,
)
from spml.toolkit.loop.compliance import (
    Violation,
    check_changes,
    check_shared_state,
    restore_supervisor_files,
)
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.faults import crash_point
from spml.toolkit.loop.handedits import load_ledger, reconcile_ledger
from spml.toolkit.loop.incumbent import find_incumbent, measured_runs, top_up_seeds
from spml.toolkit.loop.kind import BATCH_COLUMN
from spml.toolkit.loop.ledger import (
    Journal,
    clear_journal,
    read_journal,
    read_json,
    write_journal,
)
from spml.toolkit.loop.measure import Measurement, measure, top_up_incumbent
from spml.toolkit.loop.overrides import apply_overrides, pending_overrides
from spml.toolkit.loop.record import attempt_message, record
from spml.toolkit.loop.recovery import recover_unfinished_round, saved_snapshot, tip_is_round
from spml.toolkit.loop.researchers import Proposal
from spml.toolkit.loop.researchers.dispatch import run_researcher
from spml.toolkit.loop.sandboxing import confines, sandbox_spec, sandbox_status
from spml.toolkit.loop.session import LoopSession, reload_protocol
from spml.toolkit.loop.settle import RoundOutcome, decide, settle
from spml.toolkit.profiling.gpuinfo import visible_gpus

log = logging.getLogger(__name__)
Item = TypeVar("Item")
Result = TypeVar("Result")


class BatchJournal(BaseModel):
    """A batch in flight: its rounds and base; once decided, each round's row and tree."""

    model_config = ConfigDict(frozen=True)

    rounds: tuple[int, ...]
    base: str
    phase: Literal["running", "settling"] = "running"
    rows: dict[int, dict[str, Any]] = {}
    trees: dict[int, str] = {}
    winner: int | None = None


def read_batch(experiment: Experiment) -> BatchJournal | None:
    """The batch in flight, if any."""
    data = read_json(experiment.state_dir / BATCH_FILENAME, None)
    return None if data is None else BatchJournal.model_validate(data)


def write_batch(experiment: Experiment, journal: BatchJournal) -> None:
    """Save the batch journal atomically."""
    write_atomic(experiment.state_dir / BATCH_FILENAME, journal.model_dump_json(indent=2))


def clear_batch(experiment: Experiment) -> None:
    """The batch is recorded: forget it."""
    (experiment.state_dir / BATCH_FILENAME).unlink(missing_ok=True)


def parallel_spec(protocol: Any) -> ParallelSpec:
    """The protocol's `parallel:` section (one candidate for a kind without one)."""
    return getattr(protocol, "parallel", None) or ParallelSpec()


def batch_size(session: LoopSession, round_no: int) -> int:
    """How many candidates the batch starting at ``round_no`` tries (1: a round alone). The
    baseline is always alone, and a batch never runs past the round budget."""
    spec = parallel_spec(session.protocol)
    if round_no == 0 or not spec.batched:
        return 1
    return max(1, min(spec.candidates, session.max_rounds - round_no + 1))


def gpu_slices(spec: ParallelSpec, count: int) -> list[tuple[str, ...] | None]:
    """Each candidate's `CUDA_VISIBLE_DEVICES` entries on this machine (None: no GPU asked
    for, or the candidates train on Dask workers, whose GPUs Dask hands out).

    Raises:
        ProtocolError: the machine has fewer GPUs than ``count`` x gpus_per_candidate.
    """
    per = spec.gpus_per_candidate
    if per == 0 or spec.runner != "local":  # Dask: the workers' GPUs (worker resources)
        return [None] * count
    gpus = visible_gpus()
    if len(gpus) < per * count:
        raise ProtocolError(
            f"parallel: {count} candidates x {per} GPU(s) need {per * count} GPUs but this "
            f"machine shows {len(gpus)} ({', '.join(gpus) or 'none'}). Lower "
            "parallel.candidates or parallel.gpus_per_candidate.")
    return [tuple(gpus[slot * per:(slot + 1) * per]) for slot in range(count)]


def check_batch_sandbox(session: LoopSession) -> None:
    """Candidates that run at once are kept apart by the sandbox alone: each may write only its
    own worktree. Without it, or with a writable grant over the repository, one could edit a
    sibling's files or branch unseen, and its idea be credited to the sibling.

    Raises:
        ProtocolError: `parallel.candidates > 1` without that separation.
    """
    count = parallel_spec(session.protocol).candidates
    if count <= 1:
        return
    box = sandbox_spec(session.protocol)
    if not confines(box):
        raise ProtocolError(
            f"parallel.candidates {count}: candidates that run at once must be kept out of "
            f"each other's worktrees, and only the sandbox does that (here: "
            f"{sandbox_status(session)}). Run where bubblewrap works with sandbox: auto or "
            "on, or set parallel.candidates to 1")
    experiment = session.experiment
    kept = {"git directory": experiment.git_dir.resolve(),
            "checkout": experiment.repo_root.resolve()}
    for path in box.writable:
        granted = Path(path).expanduser().resolve()
        for what, place in kept.items():
            if place.is_relative_to(granted) or granted.is_relative_to(place):
                raise ProtocolError(
                    f"sandbox.writable {path!r} overlaps the repository's {what} {place}: with "
                    f"parallel.candidates {count} each candidate could write its siblings' "
                    "worktrees, branches, logs or the loop's state. Grant a folder outside the "
                    "repository, or set parallel.candidates to 1")


def corrected(protocol: Any, count: int) -> Any:
    """The protocol a batch's candidates are judged under: each of ``count`` comparisons at
    ``1 - (1 - confidence) / count`` (Bonferroni), so that the best of K noisy candidates is
    no likelier to be a false win than one candidate alone."""
    acceptance = getattr(protocol, "acceptance", None)
    # ml-iteration's review has no confidence: its margins are two standard errors.
    if getattr(acceptance, "confidence", None) is None or acceptance.greedy or count <= 1:
        return protocol
    confidence = 1.0 - (1.0 - acceptance.confidence) / count
    return protocol.model_copy(update={
        "acceptance": acceptance.model_copy(update={"confidence": confidence})})


def candidate_session(session: LoopSession, plan: RoundPlan) -> LoopSession:
    """The session of the candidate ``plan`` is: its own worktree (reattached on every call),
    pid files, GPU slice and the corrected confidence."""
    slot = plan.round_no - plan.batch[0]
    experiment, kind = session.experiment, session.kind.name
    workspace = Workspace.open_or_create(experiment.repo_root,
                                         experiment.candidate_worktree_dir(kind, slot),
                                         experiment.candidate_branch(kind, slot), plan.base)
    # The loop's branch and every sibling's: a move of one cannot be pinned on its owner.
    workspace.also_watched = (f"refs/heads/{session.workspace.branch}", *(
        f"refs/heads/{experiment.candidate_branch(kind, other)}"
        for other in range(len(plan.batch)) if other != slot))
    gpus = gpu_slices(parallel_spec(session.protocol), len(plan.batch))[slot]
    siblings = [n for n in plan.batch if n != plan.round_no]
    sealed = (*(experiment.candidate_worktree_dir(kind, n - plan.batch[0]) for n in siblings),
              *(experiment.round_dir(n) for n in siblings))
    return replace(session, workspace=workspace, slot=slot, gpus=gpus, sealed_extra=sealed,
                   protocol=corrected(session.protocol, len(plan.batch)))


def each_candidate(work: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """``work`` on every candidate's item at once, results in order (the first error raised):
    each works in its own worktree, and its git commands, being processes, overlap."""
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(work, items))


def begin_batch(session: LoopSession, first: int) -> tuple[RoundPlan, ...] | None:
    """Begin the batch starting at round ``first``; None when it cannot run as a batch (HEAD's
    code was never measured, or the protocol now asks for one candidate): then a round alone
    runs, which re-measures HEAD first where needed."""
    experiment = session.experiment
    reconcile_ledger(experiment)
    session, protocol_note = reload_protocol(session)
    apply_overrides(session)
    size = batch_size(session, first)
    try:  # a protocol edit may ask for what this machine cannot give: go on one at a time
        check_batch_sandbox(session)
        gpu_slices(parallel_spec(session.protocol), size)
    except ProtocolError as exc:
        log.warning("R%d runs alone, not as a batch: %s", first, exc)
        return None
    base = session.workspace.head()
    session.workspace.rollback(base)
    runs = measured_runs(experiment, first)
    incumbent = find_incumbent(session, runs)
    if size == 1 or incumbent is None:
        return None
    notes = control.take_notes(experiment, first) + ([protocol_note] if protocol_note else [])
    rounds = tuple(range(first, first + size))
    write_batch(experiment, BatchJournal(rounds=rounds, base=base))
    crash_point("batch-begun", first)
    main_snapshot = session.workspace.snapshot().to_json()
    queued = tuple(o.id for o in pending_overrides(experiment))
    top_up = top_up_seeds(session, incumbent, runs)
    plans = []
    for slot, round_no in enumerate(rounds):
        round_dir = experiment.round_dir(round_no)
        round_dir.mkdir(parents=True, exist_ok=True)
        # On disk, the loop worktree's snapshot: what recovery and the settle restore.
        write_atomic(round_dir / SNAPSHOT_FILENAME, main_snapshot)
        plans.append(RoundPlan(round_no, base, GitSnapshot.from_json(main_snapshot),
                               tuple(notes), read_all(supervisor_files(session, round_no, first)),
                               queued, top_up=top_up if slot == 0 else (), batch=rounds))

    def reset(plan: RoundPlan) -> LoopSession:
        candidate = candidate_session(session, plan)  # creates its worktree the first time
        candidate.workspace.rollback(base)
        candidate.workspace.clean_ignored()  # no outputs of an earlier candidate carried over
        return candidate

    candidates = each_candidate(reset, plans)
    # Only once every candidate branch is at the base: each snapshot watches its siblings'.
    snapshots = each_candidate(lambda candidate: candidate.workspace.snapshot(), candidates)
    plans = [replace(plan, snapshot=snapshot)
             for plan, snapshot in zip(plans, snapshots, strict=True)]
    for plan in plans:
        write_atomic(experiment.round_dir(plan.round_no) / "brief.md",
                     round_brief(session, plan))
    return tuple(plans)


def top_up_batch(session: LoopSession, plans: tuple[RoundPlan, ...]) -> tuple[RoundPlan, ...]:
    """The incumbent's extra runs, once for the whole batch (in the loop's worktree)."""
    if not plans[0].top_up:
        return plans
    top_up_incumbent(session, plans[0])
    return tuple(protect_supervisor_files(session, plan) for plan in plans)


def research_candidate(session: LoopSession, plan: RoundPlan) -> Proposal:
    """S1 for one candidate, in its own worktree."""
    return run_researcher(candidate_session(session, plan), plan)


def comply_batch(session: LoopSession,
                 plans: tuple[RoundPlan, ...]) -> list[list[Violation]]:
    """S2 for every candidate, once all researchers are done. A supervisor file changed
    meanwhile is restored, and fails every candidate: which one wrote it cannot be told."""
    protocol = str(session.experiment.protocol_path)
    shared = {v.reason: v for plan in plans
              for v in restore_supervisor_files(plan, skip=(protocol,))}

    def check(plan: RoundPlan) -> tuple[LoopSession, list[Violation]]:
        candidate = candidate_session(session, plan)
        return candidate, check_changes(candidate, plan)

    return [check_shared_state(candidate, plan, violations) + list(shared.values())
            for plan, (candidate, violations) in zip(plans, each_candidate(check, plans),
                                                     strict=True)]


def measure_candidate(session: LoopSession, plan: RoundPlan) -> Measurement:
    """S3+S4 for one candidate, in its own worktree, with its own pid files and GPUs."""
    return measure(candidate_session(session, plan), plan)


def proposes_concurrently(session: LoopSession) -> bool:
    """Whether the candidates' researchers may run at once: a command researcher works in its
    candidate's worktree; the Optuna researcher asks its study one trial after another (each
    ask sees its siblings' running trials)."""
    return session.protocol.researcher.kind == "command"


def discard_current(session: LoopSession, reason: str) -> None:
    """Discard the batch in flight (a stop request came while its researchers ran)."""
    journal = read_batch(session.experiment)
    if journal is not None:
        discard_batch(session, journal, reason)


def discard_batch(session: LoopSession, journal: BatchJournal, reason: str) -> None:
    """Undo a batch that will not be recorded (a stop request, or a supervisor killed before
    it settled): its rounds run again from the first."""
    experiment = session.experiment
    ledger = load_ledger(experiment)
    researcher = session.researcher()
    saved = saved_snapshot(session, journal.rounds[0])
    session.workspace.rollback(journal.base, restore_refs=saved)
    for round_no in journal.rounds:
        if ledger.has_round(round_no):
            continue
        researcher.abandon(round_no)
        round_dir = experiment.round_dir(round_no)
        if round_dir.is_dir():  # kept for a look, out of every later round's evidence
            kept = round_dir.with_name(round_dir.name + ".discarded")
            shutil.rmtree(kept, ignore_errors=True)
            round_dir.rename(kept)
    clear_batch(experiment)
    log.warning("batch R%d-R%d discarded (%s); its rounds run again", journal.rounds[0],
                journal.rounds[-1], reason)


def settle_batch(session: LoopSession, plans: tuple[RoundPlan, ...],
                 proposals: list[Proposal | None], violations: list[list[Violation]],
                 measurements: list[Measurement | None]) -> list[RoundOutcome]:
    """S5 for the batch: judge every candidate, keep at most the best, record every row
    (the outcomes in round order)."""
    ledger = load_ledger(session.experiment)
    number = 1 + len({r.extra[BATCH_COLUMN] for r in ledger.rows if r.extra.get(BATCH_COLUMN)})
    candidates = each_candidate(lambda plan: candidate_session(session, plan), plans)
    rows = []
    for candidate, plan, proposal, broke, measured in zip(candidates, plans, proposals,
                                                          violations, measurements, strict=True):
        row = decide(candidate, plan, proposal, broke, measured)
        rows.append(row.model_copy(update={"extra": {**row.extra, BATCH_COLUMN: str(number)}}))
    winner = best_row(session, rows)
    rows = [row if winner is None or row is winner or row.verdict not in KEPT
            else _not_the_best(session, row, winner) for row in rows]
    trees = dict(zip((plan.round_no for plan in plans), each_candidate(
        lambda candidate: candidate.workspace.state_tree(), candidates), strict=True))
    journal = BatchJournal(rounds=plans[0].batch, base=plans[0].base, phase="settling",
                           rows={r.round: r.model_dump() for r in rows}, trees=trees,
                           winner=winner.round if winner else None)
    write_batch(session.experiment, journal)
    crash_point("batch-decided", plans[0].round_no)
    return finish_settling(session, journal)


def best_row(session: LoopSession, rows: list[ExperienceRow]) -> ExperienceRow | None:
    """The candidate the batch keeps: the best value among those kept (Auto Research), or the
    kept one with the most criteria passing (ml-iteration); the earlier round on a tie."""
    kept = [r for r in rows if r.verdict in KEPT]
    if not kept:
        return None
    if session.kind.name == "autoresearch":
        sign = 1.0 if session.protocol.direction == "maximize" else -1.0
        valued = [r for r in kept if r.result is not None]
        return max(valued, key=lambda r: (sign * r.result, -r.round)) if valued else None

    def rank(row: ExperienceRow) -> tuple[bool, int, int]:
        passing = sum(cell.count("pass:") for cell in row.extra.values())
        return (row.verdict == "committed", passing, -row.round)
    return max(kept, key=rank)


def _not_the_best(session: LoopSession, row: ExperienceRow,
                  winner: ExperienceRow) -> ExperienceRow:
    if session.kind.name == "autoresearch" and row.result is not None and \
            winner.result is not None:
        why = (f"kept R{winner.round} of this batch instead "
               f"({format_value(winner.result)} vs {format_value(row.result)})")
    else:
        why = f"kept R{winner.round} of this batch instead (more criteria passing)"
    return row.model_copy(update={"verdict": "rolled_back", "insight": f"{row.insight}; {why}"})


def finish_settling(session: LoopSession, journal: BatchJournal) -> list[RoundOutcome]:
    """Settle every decided candidate not yet in the ledger, the winner last (idempotent);
    the outcomes of those it settled, in round order."""
    ledger = load_ledger(session.experiment)
    unsettled = [r for r in journal.rounds if not ledger.has_round(r)]
    if not unsettled:  # all recorded: the winner's commit is past the base, left as it is
        clear_batch(session.experiment)
        return []
    outcomes = [_settle_loser(session, journal, round_no) for round_no in unsettled
                if round_no != journal.winner]
    # The loop's git state as the batch began (hooks, config, watched refs), restored.
    saved = saved_snapshot(session, journal.rounds[0])
    session.workspace.rollback(journal.base, restore_refs=saved)
    if journal.winner in unsettled:
        round_no = journal.winner
        row = ExperienceRow.model_validate(journal.rows[round_no])
        session.workspace.load_tree(journal.trees[round_no])
        crash_point("batch-loaded", round_no)
        plan = RoundPlan(round_no, journal.base, saved, batch=journal.rounds)
        outcomes.append(settle(session, plan, row))
    clear_batch(session.experiment)
    return sorted(outcomes, key=lambda outcome: outcome.row.round)


def _settle_loser(session: LoopSession, journal: BatchJournal, round_no: int) -> RoundOutcome:
    """A candidate the batch did not keep: its tree archived as its attempt straight from the
    journal (it never enters the loop's worktree), then its row recorded."""
    experiment = session.experiment
    row = ExperienceRow.model_validate(journal.rows[round_no])
    attempt = session.workspace.archive_tree(
        experiment.attempt_ref(round_no), journal.base, journal.trees[round_no],
        attempt_message(row))
    crash_point("batch-archived", round_no)
    # Journaled once archived: the one-round recovery then finishes the row and the
    # researcher's feedback exactly once (it archives only changes in the loop's worktree).
    write_journal(experiment, Journal(round=round_no, base=journal.base, phase="rolling_back",
                                      row=row.model_dump()))
    crash_point("before-rollback", round_no)
    record(session, row)
    return RoundOutcome(row, None, attempt)


def recover_batch(session: LoopSession) -> bool:
    """Finish (settling) or discard (earlier) the batch a killed supervisor left; False when
    there is none (then the one-round recovery applies)."""
    experiment = session.experiment
    journal = read_batch(experiment)
    if journal is None:
        return False
    if journal.phase == "settling":
        main = read_journal(experiment)
        if main is not None and main.round in journal.rounds and main.phase == "committing" \
                and not tip_is_round(session, main):
            clear_journal(experiment)  # killed before the winner's commit: settled again below
        if main is not None and main.phase == "rolling_back" and main.round != journal.winner:
            # A loser is archived before it is journaled, and never enters the loop's
            # worktree: whatever is there now (a person's edit) must not become its attempt.
            session.workspace.rollback(session.workspace.head())
        recover_unfinished_round(session)
        finish_settling(session, journal)
        log.warning("finished settling batch R%d-R%d (supervisor killed or stopped)",
                    journal.rounds[0], journal.rounds[-1])
    else:
        recover_unfinished_round(session)
        discard_batch(session, journal, "supervisor killed or stopped before it was decided")
    return True
