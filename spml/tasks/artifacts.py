"""Publishing the ledger to Prefect: one timeline of artifacts per experiment.

Keys carry the experiment's name (`autoresearch-experiences-<experiment>`, `-round-`,
`-progress-`, `-summary-`; `iteration-...` for ml-iteration), so two experiments on one server
never mix their versions. Each version's description says after which round it was written and
the best so far. Publishing never fails a round: a server hiccup costs a version, not the work.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from uuid import UUID

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from spml.protocols.experiences import Experiences
from spml.toolkit.files import write_atomic
from spml.toolkit.loop.begin import RoundPlan
from spml.toolkit.loop.kind import kind_named
from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.loop.narrate import round_markdown, round_note, version_note
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.loop.settle import RoundOutcome
from spml.toolkit.loop.summary import LoopSummary, render_summary

log = logging.getLogger(__name__)


def artifact_key(session: LoopSession, what: str) -> str:
    """The key of one of the experiment's artifacts (`experiences`, `round`, `summary`...)."""
    return session.kind.artifact_key(what, session.experiment.name)


def publish_ledger(session: LoopSession, ledger: Experiences | None,
                   progress_id: UUID | None) -> None:
    """The ledger rows as a table artifact (a new version per call; none before a row exists)
    and the progress bar. Never raises: it runs between rounds."""
    try:
        if ledger is None or not ledger.rows or not _changed(session, ledger):
            return
        create_table_artifact(key=artifact_key(session, "experiences"), table=ledger_table(ledger),
                              description=version_note(ledger, session.experiment.name))
        if progress_id is not None and ledger.max_rounds > 0:
            done = min(ledger.rounds_done, ledger.max_rounds)
            update_progress_artifact(progress_id, progress=100.0 * done / ledger.max_rounds)
    except Exception as exc:  # noqa: BLE001 - a missed version must not stop the loop
        log.warning("the experiences artifact was not published: %s", exc)


def _changed(session: LoopSession, ledger: Experiences) -> bool:
    """Whether this version would say something new: a changed ledger, or the first version of
    this run (its page then shows the table it resumed from). An aborted round or a retried
    step adds no copy. Records the version as published."""
    record = session.experiment.state_dir / "published-experiences.json"
    now = {"run": str(flow_run.id), "rows": hashlib.sha256(
        ledger.model_dump_json(include={"rows", "status"}).encode()).hexdigest()}
    try:
        if json.loads(record.read_text()) == now:
            return False
    except (OSError, ValueError):
        pass  # never published, or an unreadable record: publish
    write_atomic(record, json.dumps(now))
    return True


def ledger_table(ledger: Experiences) -> list[dict[str, object]]:
    """The rows with numbers kept numeric (the UI sorts them) and the Result column named after
    the metric it holds."""
    named = {"Result": ledger.metric}
    rows = []
    for row in ledger.rows:
        cells: dict[str, object] = {named.get(column, column): cell for column, cell in
                                    zip(ledger.columns, row.cells(ledger.columns), strict=True)}
        cells["Round"] = row.round
        if "Result" in ledger.columns and row.result is not None:
            cells[ledger.metric] = row.result
        rows.append(cells)
    return rows


def publish_round(session: LoopSession, plan: RoundPlan, outcome: RoundOutcome | None) -> None:
    """The round's markdown artifact (strategy, diff stat, result, verdict, insight), linked
    to the round's run; ``outcome`` None: a stop request aborted it. Never raises: the round
    is already settled."""
    try:
        ledger = read_ledger(session.experiment)
        if ledger is None:
            return
        commit = outcome.commit if outcome else None
        attempt = outcome.attempt_ref if outcome else None
        changed = commit or attempt
        diff_stat = session.workspace.diff_stat(plan.base, changed) if changed else ""
        branch = session.workspace.branch
        where = (f"commit `{commit[:12]}` on `{branch}`" if commit else
                 f"rolled back; the attempt is kept as "
                 f"`{session.experiment.attempt_ref(plan.round_no)}`" if attempt
                 else f"no change to `{branch}`")
        create_markdown_artifact(
            key=artifact_key(session, "round"),
            markdown=round_markdown(ledger, plan.round_no, session.experiment.name, where,
                                    diff_stat),
            description=round_note(ledger, plan.round_no, session.experiment.name))
    except Exception as exc:  # noqa: BLE001 - the round is settled; only its page misses it
        log.warning("the round %d artifact was not published: %s", plan.round_no, exc)


@task(name="create-progress", cache_policy=NO_CACHE)
def start_progress(experiment_dir: str, kind: str = "autoresearch") -> UUID:
    """A progress artifact for the loop (0..100 % of max rounds), listed under its key."""
    session = LoopSession.load(experiment_dir, kind_named(kind))
    return create_progress_artifact(
        progress=0.0, key=artifact_key(session, "progress"),
        description=f"{session.kind.title} rounds of {session.experiment.name}")


@task(name="publish-summary", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def publish_summary(experiment_dir: str, summary: LoopSummary,
                    kind: str = "autoresearch") -> None:
    """The final report as a markdown artifact."""
    session = LoopSession.load(experiment_dir, kind_named(kind))
    ledger = read_ledger(session.experiment)
    assert ledger is not None
    # ml-iteration records its best commit (a commit with a note may follow it); every Auto
    # Research commit beat the best before it, so there the best is the branch's head.
    best_commit = ledger.best_commit or session.workspace.head()
    markdown = render_summary(summary, ledger, session.kind.title,
                              experiment=session.experiment.name,
                              branch=session.workspace.branch, best_commit=best_commit)
    create_markdown_artifact(
        key=artifact_key(session, "summary"),
        markdown=markdown + _plot_section(session, ledger),
        description=f"{session.experiment.name} on {session.workspace.branch}: "
                    f"{summary.headline()}")


def _plot_section(session: LoopSession, ledger: Experiences) -> str:
    """The ledger drawn (`experiences.png`, written beside `experiences.md`), embedded in the
    summary so the UI shows it; '' when it cannot be drawn (the summary still goes out)."""
    try:
        from spml.toolkit.loop.plot import PLOT_FILENAME, plot_ledger  # matplotlib: here only

        path = plot_ledger(ledger, session.experiment.exp_dir / PLOT_FILENAME)
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    except Exception as exc:  # noqa: BLE001 - a missing plot must not cost the summary
        log.warning("the plot was not drawn: %s", exc)
        return ""
    return (f"\n## {ledger.metric} per round\n\n"
            f"![{ledger.metric} per round](data:image/png;base64,{encoded})\n\n"
            f"(also in `{path}`)\n")


def publish_review(session: LoopSession, ledger: Experiences | None, round_no: int) -> None:
    """ml-iteration: a round's review per dimension, its verdict and rationale, as a table.
    Never raises: it runs between rounds."""
    try:
        row = next((r for r in reversed(ledger.rows)
                    if r.round == round_no and not r.is_override),
                   None) if ledger is not None else None
        if row is None:  # the round was aborted by a stop request
            return
        table = [{"Dimension": column, "Review": cell} for column, cell in row.extra.items()]
        table += [{"Dimension": "Verdict", "Review": row.verdict},
                  {"Dimension": "Rationale", "Review": row.insight}]
        create_table_artifact(key=artifact_key(session, "review"), table=table,
                              description=f"{session.experiment.name}: round {round_no}, "
                              f"{row.verdict}")
    except Exception as exc:  # noqa: BLE001
        log.warning("the review of round %d was not published: %s", round_no, exc)
