"""Publishing the ledger to Prefect: a table artifact per round, progress, a final summary, and
for ml-iteration the per-criterion review of each round."""

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

from spml.tasks.loop import _session
from spml.toolkit.loop.kind import kind_named
from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.loop.summary import LoopSummary, render_summary

EXPERIENCES_KEY = "autoresearch-experiences"
SUMMARY_KEY = "autoresearch-summary"


@task(name="publish-experiences", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def publish_experiences(experiment_dir: str, progress_id: UUID | None,
                        kind: str = "autoresearch") -> None:
    """The ledger rows as a table artifact (a new version per call) and the progress bar."""
    session = _session(experiment_dir, kind)
    ledger = read_ledger(session.experiment)
    assert ledger is not None
    rows = [_typed(dict(zip(ledger.columns, r.cells(ledger.columns), strict=True)), r.round,
                   r.result) for r in ledger.rows]
    create_table_artifact(key=session.kind.artifact_key("experiences"), table=rows,
                          description=f"experiences.md of {session.experiment.exp_dir}")
    if progress_id is not None and ledger.max_rounds > 0:
        done = min(ledger.rounds_done, ledger.max_rounds)
        update_progress_artifact(progress_id, progress=100.0 * done / ledger.max_rounds)


def _typed(cells: dict[str, object], round_no: int, result: float | None) -> dict[str, object]:
    """Numbers stay numbers in the artifact (the UI sorts them)."""
    cells["Round"] = round_no
    if "Result" in cells:
        cells["Result"] = result
    return cells


@task(name="create-progress", cache_policy=NO_CACHE)
def start_progress(experiment_dir: str, kind: str = "autoresearch") -> UUID:
    """A progress artifact for the loop (0..100 % of max rounds)."""
    return create_progress_artifact(progress=0.0, description=f"{kind_named(kind).title} "
                                    f"rounds in {experiment_dir}")


@task(name="publish-summary", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def publish_summary(experiment_dir: str, summary: LoopSummary,
                    kind: str = "autoresearch") -> None:
    """The final report as a markdown artifact."""
    session = _session(experiment_dir, kind)
    ledger = read_ledger(session.experiment)
    assert ledger is not None
    create_markdown_artifact(key=session.kind.artifact_key("summary"),
                             markdown=render_summary(summary, ledger, session.kind.title),
                             description=summary.headline())


@task(name="publish-review", task_run_name="R{round_no} review", cache_policy=NO_CACHE,
      retries=2, retry_delay_seconds=1)
def publish_review(experiment_dir: str, round_no: int, kind: str) -> None:
    """ml-iteration: a round's review per dimension, its verdict and rationale, as a table."""
    session = _session(experiment_dir, kind)
    ledger = read_ledger(session.experiment)
    row = next((r for r in reversed(ledger.rows) if r.round == round_no and not r.is_override),
               None) if ledger is not None else None
    if row is None:  # the round was aborted by a stop request
        return
    table = [{"Dimension": column, "Review": cell} for column, cell in row.extra.items()]
    table += [{"Dimension": "Verdict", "Review": row.verdict},
              {"Dimension": "Rationale", "Review": row.insight}]
    create_table_artifact(key=session.kind.artifact_key("review"), table=table,
                          description=f"round {round_no} of {session.experiment.exp_dir}: "
                          f"{row.verdict}")
