"""The autoresearch flow on a real Prefect server: subflow rounds, artifacts, failure states."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

from spml.errors import BaselineFailed
from spml.flows.autoresearch import autoresearch_flow
from spml.protocols.autoresearch import PROTOCOL_FILENAME
from spml.tasks.ui_controls import variable_names
from spml.toolkit.loop.experiment import Experiment

# Every test builds its experiment with `unique_experiment` (tests/flows/conftest.py): the server
# is shared, and an experiment named "exp" in two tests would share its Prefect Variables.


def test_flow_runs_rounds_as_subflows_and_publishes_artifacts(unique_experiment,
                                                              run_artifact) -> None:
    exp = unique_experiment({"default": "good", "2": "crash"}, max_rounds=3)
    state = autoresearch_flow(str(exp), return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary.status == "completed"
    assert (summary.rounds_done, summary.commits, summary.best_round) == (3, 2, 3)
    assert summary.baseline == pytest.approx(9.0)

    run_id = state.state_details.flow_run_id
    name = Experiment.locate(exp, PROTOCOL_FILENAME).name
    table = json.loads(run_artifact(run_id, f"autoresearch-experiences-{name}").data)
    assert [r["Round"] for r in table] == [0, 1, 2, 3]
    assert table[2]["Verdict"] == "rolled_back"
    assert table[2]["Insight"].startswith("researcher crashed: exit 3")
    assert "completed" in run_artifact(run_id, f"autoresearch-summary-{name}").data

    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(run_id)
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])))
    assert sorted(c.name for c in children) == ["round-0", "round-1", "round-2", "round-3"]
    assert all(c.state.is_completed() for c in children)


def test_flow_fails_clearly_when_the_baseline_cannot_be_measured(unique_experiment) -> None:
    exp = unique_experiment(eval={"command": "python -c 'print(42)'"})
    state = autoresearch_flow(str(exp), return_state=True)
    assert state.is_failed()
    with pytest.raises(BaselineFailed, match="eval printed no loss value on stdout"):
        state.result()


def test_max_rounds_parameter_caps_the_run(unique_experiment) -> None:
    exp = unique_experiment({"default": "good"}, max_rounds=5)
    summary = autoresearch_flow(str(exp), max_rounds=1)
    assert (summary.rounds_done, summary.max_rounds, summary.status) == (1, 1, "completed")
    summary = autoresearch_flow(str(exp), max_rounds=2)  # resuming continues the same ledger
    assert (summary.rounds_done, summary.commits) == (2, 2)


def test_notes_and_stop_from_prefect_variables(unique_experiment) -> None:
    from prefect.variables import Variable

    from spml.protocols.experiences import parse_experiences

    exp = unique_experiment({"default": "good"}, max_rounds=4)
    name = Experiment.locate(exp, PROTOCOL_FILENAME).name
    note, stop = variable_names(Experiment.locate(exp, PROTOCOL_FILENAME))[:2]
    assert (note, stop) == (f"spml-note-{name}", f"spml-stop-{name}")  # this test's
    # its directory name, made a unique slug (the "_" of pytest's folder makes it hashed)
    assert name.startswith(exp.name.lower().replace("_", "-") + "-")
    Variable.set(note, ["from the UI", "second note"], overwrite=True)
    Variable.set(stop, True, overwrite=True)
    summary = autoresearch_flow(str(exp))
    assert summary.status == "stopped"
    assert Variable.get(stop) is None  # acted on once
    assert Variable.get(note) is None
    Variable.set(note, "third", overwrite=True)
    summary = autoresearch_flow(str(exp), max_rounds=1)

    rows = parse_experiences((exp / "experiences.md").read_text()).rows
    assert [r.round for r in rows] == [0, 1]
    assert rows[1].note == "from the UI; second note; third"


def test_the_default_acceptance_tops_up_and_confirms_as_prefect_tasks(tmp_path,
                                                                       run_artifact) -> None:
    from fixtures.canary.project import make_canary
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    exp = make_canary(tmp_path / f"canary-{tmp_path.name}", {1: 5}, max_rounds=2)
    state = autoresearch_flow(str(exp), return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary.commits == 1
    assert summary.best_estimate.startswith(f"{summary.best:.6g} ± ")
    assert "(n=5, R1)" in summary.best_estimate  # round 1's 2 runs + 3 top-ups in round 2
    assert summary.confirmed.endswith(", confirmed")

    run_id = state.state_details.flow_run_id
    name = Experiment.locate(exp, PROTOCOL_FILENAME).name
    page = run_artifact(run_id, f"autoresearch-summary-{name}").data
    assert f"**Confirmed on fresh seeds:** {summary.confirmed}" in page
    with get_client(sync_client=True) as client:
        rounds = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
        names = {t.name for t in client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[r.id for r in rounds] + [run_id])))}
    assert "R2 S0: more runs of the incumbent" in names
    assert "confirm the best on fresh seeds" in names


def test_round_subflows_run_without_a_heartbeat_of_their_own() -> None:
    """Prefect reads the heartbeat interval from the run's settings when a flow run starts: a
    round started inside `subflows_without_heartbeat` has none (no thread to join at its end),
    while the loop's own run keeps Prefect's default."""
    from prefect import flow
    from prefect.settings import get_current_settings

    from spml.flows._loop import subflows_without_heartbeat

    @flow
    def round_probe() -> int | None:
        return get_current_settings().flows.heartbeat_frequency

    @flow
    def loop_probe() -> tuple[int | None, int | None, int | None]:
        with subflows_without_heartbeat():
            inside = round_probe()
        return get_current_settings().flows.heartbeat_frequency, inside, round_probe()

    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None
    assert loop_probe() == (default, None, default)
