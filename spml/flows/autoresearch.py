"""The `autoresearch` flow: rounds of researcher -> compliance -> train -> eval -> commit/rollback.

Deployment name `autoresearch/default` (see prefect.yaml). Each round is a subflow run named
`round-<n>`. The flow only orchestrates: every decision is made by `spml.toolkit`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from spml.tasks.artifacts import publish_experiences, publish_summary, start_progress
from spml.tasks.autoresearch import (
    abort,
    check_compliance,
    close_experiment,
    dispatch_researcher,
    open_experiment,
    plan_next_step,
    settle_round,
    start_round,
    stop_requested,
    train_and_evaluate,
)
from spml.tasks.stale_runs import crash_stale_runs
from spml.tasks.ui_controls import pull_controls
from spml.toolkit.loop.experiment import hold_experiment
from spml.toolkit.loop.summary import LoopSummary


@flow(name="autoresearch-round", flow_run_name="round-{round_no}")
def autoresearch_round(experiment_dir: str, round_no: int) -> str:
    """One round (round 0 measures the baseline). Returns the verdict or 'aborted'."""
    plan = start_round(experiment_dir, round_no)
    proposal = None
    violations = []
    if round_no > 0:
        proposal = dispatch_researcher(experiment_dir, plan)
        # Checked even after a failed researcher: what it touched must be reported and undone.
        violations = check_compliance(experiment_dir, plan)
        if reason := stop_requested(experiment_dir):
            abort(experiment_dir, plan, reason)
            return "aborted"
    measurement = None
    if (proposal is None or proposal.ok) and not violations:
        measurement = train_and_evaluate(experiment_dir, plan)
    outcome = settle_round(experiment_dir, plan, proposal, violations, measurement)
    return outcome.row.verdict


@flow(name="autoresearch")
def autoresearch_flow(experiment_dir: str, max_rounds: int | None = None) -> LoopSummary:
    """Run (or resume) the Auto Research loop of the experiment in ``experiment_dir``.

    Args:
        experiment_dir: directory holding `autoresearch-protocol.md`, inside a git repository.
        max_rounds: cap on rounds for this run (default: the protocol's `max_rounds`).
    """
    logger = get_run_logger()
    with hold_experiment(experiment_dir):
        limit = open_experiment(experiment_dir, max_rounds)
        crash_stale_runs(experiment_dir)
        progress = start_progress(experiment_dir)
        publish_experiences(experiment_dir, progress)
        while True:
            pull_controls(experiment_dir)  # notes / stop set as Prefect Variables in the UI
            step = plan_next_step(experiment_dir)
            if step.kind == "end":
                break
            logger.info("round %d of %d", step.round_no, limit)
            autoresearch_round(experiment_dir, step.round_no)
            publish_experiences(experiment_dir, progress)
        summary = close_experiment(experiment_dir, step)
        publish_summary(experiment_dir, summary)
    logger.info("%s — %s", summary.status, summary.headline())
    return summary
