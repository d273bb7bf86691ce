"""The body both loop flows share: open, rounds as subflows, publish, close."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect import Flow, get_run_logger, tags
from prefect.context import TagsContext
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import Completed, State

from spml.flows._interrupt import guarding, loop_recorder
from spml.protocols.experiences import KEPT
from spml.tasks.artifacts import publish_summary, start_progress
from spml.tasks.flow_run import claim_flow_run
from spml.tasks.loop import (
    between_rounds,
    close_experiment,
    confirm_best,
    holdout_best,
    needs_confirmation,
    needs_holdout,
    open_experiment,
)
from spml.toolkit.loop.experiment import Experiment, hold_experiment
from spml.toolkit.loop.kind import kind_named
from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.loop.lifecycle import NextStep
from spml.toolkit.loop.narrate import round_label
from spml.toolkit.loop.summary import LoopSummary


def run_loop(kind: str, experiment_dir: str, max_rounds: int | None,
             round_flow: Callable[[str, int], str], allow_dirty: bool = False,
             batch_flow: Flow | None = None) -> LoopSummary:
    """Run (or resume) a loop of ``kind``; each round is ``round_flow`` (a subflow), each batch
    of candidates (`parallel:`) ``batch_flow``. Ctrl-C or
    SIGTERM ends it within seconds with the ledger `interrupted` (see `_interrupt`)."""
    logger = get_run_logger()
    # The lock is held until an interrupted supervisor has recorded and exited (`status` then
    # sees it free); the guard re-installs the signal handlers Prefect's engine replaced.
    with hold_experiment(experiment_dir, kind_named(kind).protocol_filename), \
            guarding(loop_recorder(experiment_dir, kind, max_rounds, allow_dirty)):
        limit = open_experiment(experiment_dir, max_rounds, kind, allow_dirty)
        run = claim_flow_run(experiment_dir, kind)  # `<kind>-<experiment>-<n>`, tags
        progress = start_progress(experiment_dir, kind)
        step = between_rounds(experiment_dir, kind, progress, None)
        while step.kind != "end":
            logger.info("round %d of %d", step.round_no, limit)
            # The round's run carries the tags (its tasks do not: `untagged`).
            with tags(*run.tags), subflows_without_heartbeat():
                if step.candidates == 1 or batch_flow is None or _run_batch(
                        batch_flow, experiment_dir, step) is None:
                    round_flow(experiment_dir, step.round_no)
            step = between_rounds(experiment_dir, kind, progress, step.round_no)
        if needs_confirmation(experiment_dir, kind, step):
            confirm_best(experiment_dir, step, kind)
        if needs_holdout(experiment_dir, kind, step):
            holdout_best(experiment_dir, step, kind)
        summary = close_experiment(experiment_dir, step, kind)
        publish_summary(experiment_dir, summary, kind)
    logger.info("%s — %s", summary.status, summary.headline())
    return summary


@contextmanager
def subflows_without_heartbeat() -> Iterator[None]:
    """Round and batch runs started inside send no heartbeats of their own. Prefect 3.9 gives
    every flow run a heartbeat thread that sleeps in 1 s steps and is joined when the run ends:
    0 to 1 s lost per round (0.45 s per batch of 4, measured). A subflow runs in its parent's
    process, whose run keeps its heartbeat (its thread holds its own copy of the settings), so
    a lost host is still seen; a resumed loop marks the dead run's subflows Crashed
    (`claim_flow_run`)."""
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _run_batch(batch_flow: Flow, experiment_dir: str, step: NextStep) -> list[str] | None:
    """The batch of ``step.candidates`` from ``step.round_no``; None when it could not begin
    as a batch."""
    return batch_flow(experiment_dir, step.round_no, step.candidates)


def batch_ended(kind: str, experiment_dir: str, verdicts: list[str] | None,
                first: int) -> State:
    """The batch run's final state: named after the round it kept (`Kept R6`, `None kept`,
    `Aborted`), its result the verdicts (None: it ran no batch)."""
    if verdicts is None:
        return Completed(name="Not a batch", message=f"R{first} runs alone", data=None)
    if verdicts == ["aborted"]:
        return Completed(name="Aborted", message="a stop request", data=verdicts)
    kept = [first + i for i, verdict in enumerate(verdicts) if verdict in KEPT]
    name = f"Kept R{kept[0]}" if kept else "None kept"
    message = ", ".join(f"R{first + i} {v}" for i, v in enumerate(verdicts))
    return Completed(name=name, message=message, data=verdicts)


def loop_ended(summary: LoopSummary) -> State:
    """The loop run's final state: Completed, named after how the loop ended (`Target
    reached`, `Stopped`...) with the result in the message; its result is the summary."""
    name = summary.status.replace("_", " ").capitalize()
    message = (f"{summary.headline()}; {summary.commits} commit(s) in {summary.rounds_done} "
               f"round(s)")
    return Completed(name=name, message=message, data=summary)


@contextmanager
def untagged() -> Iterator[None]:
    """Tasks started inside carry no tags. Prefect asks the server for a concurrency slot
    before every task with a tag (one more blocking call per task, which also fails the task
    when the server is briefly gone), so the loop tags its runs, never its tasks."""
    with TagsContext(current_tags=set()):
        yield


def round_ended(kind: str, experiment_dir: str, round_no: int, verdict: str) -> State:
    """The round run's final state: Completed, named after the verdict in words (`Committed`,
    `Rolled back`, `Failed compliance`, `Aborted`...) with the metric and its change in the
    message; its result is still the verdict."""
    experiment = Experiment.locate(experiment_dir, kind_named(kind).protocol_filename)
    ledger = read_ledger(experiment)
    if ledger is None:
        return Completed(data=verdict)
    label = round_label(ledger, round_no)
    return Completed(name=label.name, message=label.message, data=verdict)
