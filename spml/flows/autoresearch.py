"""The `autoresearch` flow: rounds of researcher -> compliance -> train -> eval -> commit/rollback.

Deployment name `autoresearch/default` (see prefect.yaml). Each round is a subflow run named
`round-<n>`. The flow only orchestrates: every decision is made by `spml.toolkit`.
"""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from spml.flows._interrupt import guarding
from spml.flows._loop import batch_ended, loop_ended, round_ended, run_loop, untagged
from spml.tasks.batch import TaskBatchSteps
from spml.tasks.loop import TaskSteps
from spml.toolkit.loop.round import run_batch, run_round

STEPS = TaskSteps("autoresearch")
BATCH_STEPS = TaskBatchSteps("autoresearch")


@flow(name="autoresearch-round", flow_run_name="round-{round_no}")
def autoresearch_round(experiment_dir: str, round_no: int) -> State:
    """One round (round 0 measures the baseline). Its state is named after the verdict; the
    caller gets the verdict, or 'aborted'."""
    # guarding: the subflow's engine put Prefect's SIGTERM handler back
    with guarding(), untagged():
        verdict = run_round(STEPS, experiment_dir, round_no)
    return round_ended(STEPS.kind, experiment_dir, round_no, verdict)


@flow(name="autoresearch-batch", flow_run_name="batch-R{first}x{candidates}")
def autoresearch_batch(experiment_dir: str, first: int, candidates: int) -> State:
    """A batch of ``candidates`` from round ``first`` (`parallel:`; the task runners are
    `spml.tasks.batch`'s). Its state is named after the round it kept; the caller gets the
    verdicts, or None when HEAD's code needs measuring first (a round alone then runs)."""
    with guarding(), untagged():
        verdicts = run_batch(BATCH_STEPS, experiment_dir, first)
    return batch_ended(STEPS.kind, experiment_dir, verdicts, first)


@flow(name="autoresearch")
def autoresearch_flow(experiment_dir: str, max_rounds: int | None = None,
                      allow_dirty: bool = False) -> State:
    """Run (or resume) the Auto Research loop of the experiment in ``experiment_dir``.

    Args:
        experiment_dir: directory holding `autoresearch-protocol.md`, inside a git repository.
        max_rounds: cap on rounds for this run (default: the protocol's `max_rounds`).
        allow_dirty: run although fixed or variable files have uncommitted changes (the
            loop runs the committed code; the ignored files are logged).

    Returns:
        A Completed state named after how the loop ended (`Target reached`, `Stopped`...)
        with the result in its message; calling the flow gives its `LoopSummary`.
    """
    return loop_ended(run_loop("autoresearch", experiment_dir, max_rounds, autoresearch_round,
                               allow_dirty, autoresearch_batch))
