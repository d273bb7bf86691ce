"""The autoresearch flow on a real Prefect server: subflow rounds, artifacts, failure states."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)

from spml.errors import BaselineFailed
from spml.flows.autoresearch import autoresearch_flow
from spml.tasks.artifacts import EXPERIENCES_KEY, SUMMARY_KEY


def _latest_artifact(key: str):
    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key}"
    return found[0]


def test_flow_runs_rounds_as_subflows_and_publishes_artifacts(toy_experiment) -> None:
    exp = toy_experiment({"default": "good", "2": "crash"}, max_rounds=3)
    state = autoresearch_flow(str(exp), return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary.status == "completed"
    assert (summary.rounds_done, summary.commits, summary.best_round) == (3, 2, 3)
    assert summary.baseline == pytest.approx(9.0)

    table = json.loads(_latest_artifact(EXPERIENCES_KEY).data)
    assert [r["Round"] for r in table] == [0, 1, 2, 3]
    assert table[2]["Verdict"] == "rolled_back"
    assert table[2]["Insight"].startswith("researcher crashed: exit 3")
    assert "completed" in _latest_artifact(SUMMARY_KEY).data

    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(state.state_details.flow_run_id)
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])))
    assert sorted(c.name for c in children) == ["round-0", "round-1", "round-2", "round-3"]
    assert all(c.state.is_completed() for c in children)


def test_flow_fails_clearly_when_the_baseline_cannot_be_measured(toy_experiment) -> None:
    exp = toy_experiment(eval={"command": "python -c 'print(42)'"})
    state = autoresearch_flow(str(exp), return_state=True)
    assert state.is_failed()
    with pytest.raises(BaselineFailed, match="eval printed no loss value on stdout"):
        state.result()


def test_max_rounds_parameter_caps_the_run(toy_experiment) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=5)
    summary = autoresearch_flow(str(exp), max_rounds=1)
    assert (summary.rounds_done, summary.max_rounds, summary.status) == (1, 1, "completed")
    summary = autoresearch_flow(str(exp), max_rounds=2)  # resuming continues the same ledger
    assert (summary.rounds_done, summary.commits) == (2, 2)


def test_notes_and_stop_from_prefect_variables(toy_experiment) -> None:
    from prefect.variables import Variable

    exp = toy_experiment({"default": "good"}, max_rounds=4)
    Variable.set("spml-note-exp", ["from the UI", "second note"], overwrite=True)
    Variable.set("spml-stop-exp", True, overwrite=True)
    summary = autoresearch_flow(str(exp))
    assert summary.status == "stopped"
    assert Variable.get("spml-stop-exp") is None  # acted on once
    assert Variable.get("spml-note-exp") is None
    Variable.set("spml-note-exp", "third", overwrite=True)
    summary = autoresearch_flow(str(exp), max_rounds=1)
    from spml.protocols.experiences import parse_experiences

    rows = parse_experiences((exp / "experiences.md").read_text()).rows
    assert [r.round for r in rows] == [0, 1]
    assert rows[1].note == "from the UI; second note; third"
