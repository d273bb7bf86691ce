"""A batch of candidates as a Prefect subflow on a real server: the candidates' task runs at
once on the thread-pool runner, one kept, the batch run named after it."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)

from spml.flows.autoresearch import autoresearch_flow
from spml.protocols.autoresearch import PROTOCOL_FILENAME
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.process.sandbox import unavailable_reason

pytestmark = pytest.mark.skipif(bool(unavailable_reason()),
                                reason=f"no sandbox here: {unavailable_reason()}")


def test_a_batch_is_one_subflow_whose_candidates_train_at_once(unique_experiment,
                                                               tmp_path) -> None:
    mine = tmp_path / "researcher"  # outside the repository: the sandbox's writable folder
    spans = mine / "spans.txt"
    plan = {str(n): f"set:x={x},train_s=1.5,spans={spans}"
            for n, x in ((1, 1.0), (2, 2.9), (3, 2.0), (4, -5.0))}
    exp = unique_experiment(plan, plan_dir=mine, max_rounds=4, parallel={"candidates": 4})
    state = autoresearch_flow(str(exp), return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert (summary.rounds_done, summary.commits, summary.best_round) == (4, 1, 2)
    rows = read_ledger(Experiment.locate(exp, PROTOCOL_FILENAME)).rows
    assert [r.extra.get("Batch") or "" for r in rows] == ["", "1", "1", "1", "1"]

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(
                any_=[state.state_details.flow_run_id])))
        [batch] = [c for c in children if c.name.startswith("batch-")]
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[batch.id])))
    assert sorted(c.name for c in children) == ["batch-R1x4", "round-0"]
    assert (batch.state.name, batch.state.is_completed()) == ("Kept R2", True)
    trainings = [t for t in tasks if "S3+S4" in t.name]
    assert sorted(t.name for t in trainings) == [
        f"R{n} S3+S4: train, evaluate" for n in (1, 2, 3, 4)]
    # Each training task started before any of them ended: they ran at once.
    assert max(t.start_time for t in trainings) < min(t.end_time for t in trainings)
