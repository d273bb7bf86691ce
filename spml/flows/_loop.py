"""The body both loop flows share: open, rounds as subflows, publish, close."""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_run_logger

from spml.flows._interrupt import guarding, loop_recorder
from spml.tasks.artifacts import (
    publish_experiences,
    publish_review,
    publish_summary,
    start_progress,
)
from spml.tasks.loop import close_experiment, open_experiment, plan_next_step
from spml.tasks.stale_runs import crash_stale_runs
from spml.tasks.ui_controls import pull_controls
from spml.toolkit.loop.experiment import hold_experiment
from spml.toolkit.loop.kind import kind_named
from spml.toolkit.loop.summary import LoopSummary


def run_loop(kind: str, experiment_dir: str, max_rounds: int | None,
             round_flow: Callable[[str, int], str], allow_dirty: bool = False) -> LoopSummary:
    """Run (or resume) a loop of ``kind``; each round is ``round_flow`` (a subflow). Ctrl-C or
    SIGTERM ends it within seconds with the ledger `interrupted` (see `_interrupt`)."""
    logger = get_run_logger()
    # The lock is held until an interrupted supervisor has recorded and exited (`status` then
    # sees it free); the guard re-installs the signal handlers Prefect's engine replaced.
    with hold_experiment(experiment_dir, kind_named(kind).protocol_filename), \
            guarding(loop_recorder(experiment_dir, kind, max_rounds, allow_dirty)):
        limit = open_experiment(experiment_dir, max_rounds, kind, allow_dirty)
        crash_stale_runs(experiment_dir, kind)
        progress = start_progress(experiment_dir, kind)
        publish_experiences(experiment_dir, progress, kind)
        while True:
            pull_controls(experiment_dir, kind)  # notes / stop / overrides from the UI
            step = plan_next_step(experiment_dir, kind)
            if step.kind == "end":
                break
            logger.info("round %d of %d", step.round_no, limit)
            round_flow(experiment_dir, step.round_no)
            publish_experiences(experiment_dir, progress, kind)
            if kind != "autoresearch":
                publish_review(experiment_dir, step.round_no, kind)
        summary = close_experiment(experiment_dir, step, kind)
        publish_summary(experiment_dir, summary, kind)
    logger.info("%s — %s", summary.status, summary.headline())
    return summary
