"""Publishing the ledger to Prefect: a table artifact per round, progress, a final summary."""

from __future__ import annotations

from uuid import UUID

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.loop.summary import LoopSummary, render_summary

EXPERIENCES_KEY = "autoresearch-experiences"
SUMMARY_KEY = "autoresearch-summary"


@task(name="publish-experiences", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def publish_experiences(experiment_dir: str, progress_id: UUID | None) -> None:
    """The ledger rows as a table artifact (a new version per call) and the progress bar."""
    session = LoopSession.load(experiment_dir)
    ledger = read_ledger(session.experiment)
    assert ledger is not None
    rows = [{"Round": r.round, "Compliance": r.compliance, "Result": r.result,
             "Verdict": r.verdict, "Strategy": r.strategy, "Insight": r.insight,
             "Note": r.note} for r in ledger.rows]
    create_table_artifact(key=EXPERIENCES_KEY, table=rows,
                          description=f"experiences.md of {session.experiment.exp_dir}")
    if progress_id is not None and ledger.max_rounds > 0:
        done = min(ledger.rounds_done, ledger.max_rounds)
        update_progress_artifact(progress_id, progress=100.0 * done / ledger.max_rounds)


@task(name="create-progress", cache_policy=NO_CACHE)
def start_progress(experiment_dir: str) -> UUID:
    """A progress artifact for the loop (0..100 % of max rounds)."""
    return create_progress_artifact(progress=0.0,
                                    description=f"Auto Research rounds in {experiment_dir}")


@task(name="publish-summary", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def publish_summary(experiment_dir: str, summary: LoopSummary) -> None:
    """The final report as a markdown artifact."""
    session = LoopSession.load(experiment_dir)
    ledger = read_ledger(session.experiment)
    assert ledger is not None
    create_markdown_artifact(key=SUMMARY_KEY, markdown=render_summary(summary, ledger),
                             description=summary.headline())
