"""The ml-iteration flow on a real Prefect server: subflow rounds, the review artifact, and a
person on the loop steering through Prefect Variables (note and verdict override)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import git, iteration_experiment
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.variables import Variable

from spml.flows.iteration import iteration_flow
from spml.protocols.experiences import parse_experiences
from spml.tasks.ui_controls import variable_names
from spml.toolkit.loop.experiment import Experiment


def test_rounds_are_subflows_reviewed_per_criterion(tmp_path: Path, run_artifact) -> None:
    exp = iteration_experiment(tmp_path, {"1": {"log_grad_norm": True},
                                          "2": {"acc": 0.5},
                                          "3": {"acc": 0.95}},
                               name=f"exp-{tmp_path.name}", max_rounds=5)
    state = iteration_flow(str(exp), return_state=True)
    assert state.is_completed()
    assert state.name == "Target reached"  # the run's state says how the loop ended
    summary = state.result()
    assert (summary.status, summary.rounds_done, summary.commits) == ("target_reached", 3, 2)

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
    assert sorted(c.name for c in children) == ["round-0", "round-1", "round-2", "round-3"]
    name = Experiment.locate(exp, "iteration-protocol.md").name
    review = json.loads(run_artifact(run_id, f"iteration-review-{name}").data)
    assert {r["Dimension"]: r["Review"] for r in review}["Verdict"] == "committed"
    assert {r["Dimension"] for r in review} >= {"Metrics", "Speed", "Observability",
                                                  "Stability", "Rationale"}
    table = json.loads(run_artifact(run_id, f"iteration-experiences-{name}").data)
    assert [(r["Round"], r["Verdict"]) for r in table] == [
        (0, "committed"), (1, "committed"), (2, "rolled_back"), (3, "committed")]
    assert "target_reached" in run_artifact(run_id, f"iteration-summary-{name}").data


def test_note_and_override_from_prefect_variables(tmp_path: Path) -> None:
    exp = iteration_experiment(tmp_path, {"1": {"log_grad_norm": True}, "2": {"acc": 0.81}},
                               name=f"exp-{tmp_path.name}", max_rounds=1)
    iteration_flow(str(exp))
    experiment = Experiment.locate(exp, "iteration-protocol.md")
    note, _stop, override = variable_names(experiment)
    assert override.endswith(experiment.name)
    assert experiment.name.startswith(exp.name.lower().replace("_", "-"))
    Variable.set(note, "keep the logging")
    Variable.set(override, {"round": 1, "verdict": "rollback"})
    iteration_flow(str(exp), max_rounds=2)

    ledger = parse_experiences(experiment.ledger_path.read_text())
    rows = [(r.round, r.verdict) for r in ledger.rows]
    assert rows == [(0, "committed"), (1, "committed"), (1, "override: rollback"),
                    (2, "committed")]
    assert ledger.rows[-1].note == "keep the logging"
    branch = experiment.branch("ml-iteration")
    subjects = str(git(exp, "log", "--format=%s", branch)).splitlines()
    assert subjects[1] == "ml-iteration: override — revert round 1"
    assert Variable.get(override, default=None) is None  # acted on once
