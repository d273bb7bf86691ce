"""What a Prefect user sees, read back through the API of a real local server: runs named and
tagged after their experiment, rounds whose states say their verdict and metric, one artifact
timeline per experiment, a round artifact on each round's page, INFO logs on the server while
the terminal stays quiet."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import ArtifactSort

from spml.flows.autoresearch import autoresearch_flow
from spml.protocols.autoresearch import PROTOCOL_FILENAME
from spml.toolkit.loop.experiment import Experiment

PLAN = {"default": "good", "2": "worse", "3": "edit_fixed"}  # R1 kept, R2 worse, R3 cheats


def name_of(exp: Path) -> str:
    return Experiment.locate(exp, PROTOCOL_FILENAME).name


def rounds_of(parent: UUID) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])))
    return {c.name: c for c in children}


def versions(key: str, flow_run: UUID | None = None) -> list[Any]:
    run = None if flow_run is None else ArtifactFilterFlowRunId(any_=[flow_run])
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]), flow_run_id=run),
            sort=ArtifactSort.CREATED_DESC)


def test_runs_rounds_and_artifacts_tell_the_story(unique_experiment) -> None:
    exp = unique_experiment(PLAN, max_rounds=3)
    name = name_of(exp)
    state = autoresearch_flow(str(exp), return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id

    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(run_id)
    assert parent.name == f"autoresearch-{name}-1"
    assert (parent.state.type.value, parent.state.name) == ("COMPLETED", "Completed")
    assert parent.state.message == ("loss: baseline 9 -> best 1 (R1) (-88.9%); 1 commit(s) in "
                                    "3 round(s)")
    assert {"spml", "autoresearch", f"experiment:{name}"} <= set(parent.tags)

    rounds = rounds_of(run_id)
    assert sorted(rounds) == ["round-0", "round-1", "round-2", "round-3"]
    assert all(f"experiment:{name}" in r.tags for r in rounds.values())
    with get_client(sync_client=True) as client:  # tasks carry none: a tag costs a server
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(  # call per task
            id={"any_": [r.id for r in rounds.values()]}))
    assert tasks
    assert all(t.tags == [] for t in tasks), {t.name: t.tags for t in tasks}
    states = {n: (r.state.type.value, r.state.name) for n, r in rounds.items()}
    assert states == {"round-0": ("COMPLETED", "Baseline"), "round-1": ("COMPLETED", "Committed"),
                      "round-2": ("COMPLETED", "Rolled back"),
                      "round-3": ("COMPLETED", "Failed compliance")}
    assert rounds["round-0"].state.message == "loss 9"
    assert rounds["round-1"].state.message.startswith("loss 1 (-8 vs best 9 (round 0))")
    assert "best unchanged" in rounds["round-2"].state.message
    assert "evaluate.py" in rounds["round-3"].state.message  # the fixed file it edited

    # each round's own artifact is on its own page
    for round_name, run in rounds.items():
        [page] = versions(f"autoresearch-round-{name}", run.id)
        assert page.data.startswith(f"# Round {round_name[6:]} of {name}: {run.state.name}")
    assert "## Change" in versions(f"autoresearch-round-{name}", rounds["round-1"].id)[0].data

    table = versions(f"autoresearch-experiences-{name}", run_id)
    assert len(table) == 4  # one version per round: no empty one before round 0
    assert table[0].description.startswith(f"{name}: after round 3 of 3; best loss = 1 (round 1)")
    assert table[-1].description.startswith(f"{name}: after round 0 of 3")
    [progress] = versions(f"autoresearch-progress-{name}", run_id)
    assert progress.type == "progress"
    assert progress.data == 100
    [summary] = versions(f"autoresearch-summary-{name}", run_id)
    assert f"**Experiment:** {name}" in summary.data
    assert f"`spml/autoresearch/{name}`, best commit `" in summary.data
    # the plot, beside the ledger and in the summary
    png = (exp / "experiences.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert f"![loss per round](data:image/png;base64,{base64.b64encode(png).decode()})" in \
        summary.data


def test_two_experiments_on_one_server_keep_separate_timelines(unique_experiment, tmp_path
                                                              ) -> None:
    first = unique_experiment({"default": "good"}, max_rounds=1)
    autoresearch_flow(str(first))
    before = [a.id for a in versions(f"autoresearch-experiences-{name_of(first)}")]
    second = first.parent / "second"
    second.mkdir()
    for item in first.iterdir():
        if item.is_file() and item.name != "experiences.md":
            (second / item.name).write_bytes(item.read_bytes())
    subprocess.run(["git", "add", "second"], cwd=first.parent, check=True)
    subprocess.run(["git", "commit", "-qm", "second experiment"], cwd=first.parent, check=True)
    autoresearch_flow(str(second), max_rounds=2)
    autoresearch_flow(str(first), max_rounds=2)  # the first one's second run

    assert name_of(second) != name_of(first)
    mine = versions(f"autoresearch-experiences-{name_of(first)}")
    theirs = versions(f"autoresearch-experiences-{name_of(second)}")
    assert [a.id for a in mine][-len(before):] == before  # untouched by the second experiment
    # run 1: after rounds 0, 1; run 2: the table it resumed from (on its own page), round 2
    assert [a.description.split("; ")[0].split(": ")[1] for a in mine] == [
        "after round 2 of 2", "after round 1 of 2", "after round 1 of 1", "after round 0 of 1"]
    assert len(theirs) == 3
    assert all(a.description.startswith(f"{name_of(second)}: ") for a in theirs)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            id={"any_": [a.flow_run_id for a in mine]}))
    assert sorted({r.name for r in runs}) == [f"autoresearch-{name_of(first)}-1",
                                             f"autoresearch-{name_of(first)}-2"]


def test_the_cli_sends_info_logs_to_the_server_and_keeps_the_terminal_quiet(
        unique_experiment, prefect_api_url) -> None:
    exp = unique_experiment({"default": "good"}, max_rounds=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING")}
    done = subprocess.run([sys.executable, "-m", "spml", "autoresearch", "run", str(exp)],
                          env={**env, "PREFECT_API_URL": prefect_api_url}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " | INFO " not in done.stdout + done.stderr  # Prefect's INFO stays off the terminal

    name = name_of(exp)
    with get_client(sync_client=True) as client:
        [parent] = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name={"any_": [f"autoresearch-{name}-1"]}))
        round_1 = rounds_of(parent.id)["round-1"]
        parent_logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[parent.id])))
        round_logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[round_1.id])))
    assert any(log.message.startswith("loop open on branch") for log in parent_logs)
    messages = [log.message for log in round_logs if log.level == 20]  # INFO
    assert any(m.startswith("R1 committed: loss = 1.0; strategy: ") for m in messages), messages
    assert f"{prefect_api_url.removesuffix('/api')}" in done.stdout  # the run's UI address
