"""The pipeline stages as Prefect flows on the bundled example: design -> plan -> develop
(with the scripted implementer and the fix loop) -> handoff; revision mode; the refusals;
the pause after five failures. Real git, real subprocesses, Prefect's test harness."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import git
from typer.testing import CliRunner

from spml.cli import app
from spml.errors import ProtocolError
from spml.flows.design import brainstorm_flow
from spml.flows.develop import develop_flow
from spml.flows.experiment import experiment_flow
from spml.flows.handoff import handoff_flow
from spml.flows.plan import plan_flow
from spml.protocols.autoresearch import load_protocol
from spml.protocols.design import find_design
from spml.protocols.plan import load_plan
from spml.toolkit.pipeline.brief import load_brief
from spml.toolkit.pipeline.planner import find_plan
from spml.toolkit.pipeline.questions import QUESTIONS
from spml.toolkit.pipeline.reentry import next_stage

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pipeline"
IMPLEMENTER = (f"{sys.executable} {EXAMPLE / 'implementer' / 'implement.py'} --subtask "
               "{subtask} --attempt {attempt} --workdir {workdir} --prompt-file {prompt_file}")
FIXTURES = ROOT / "tests" / "fixtures"


def new_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    exp = repo / "exp"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("implementer", "__pycache__"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Person")
    git(repo, "config", "user.email", "person@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the example")
    return exp


def subjects(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s").splitlines()


def test_brief_to_handoff_on_the_example_then_a_revision(tmp_path):
    exp = new_repo(tmp_path)
    brief = load_brief(exp / "brief.yaml")
    # The experiment flow walks brainstorm -> plan -> develop -> handoff, then stops before the
    # loop runs (`until="run"`: the handoff writes the protocol without starting it).
    walked = experiment_flow(str(exp), brief, IMPLEMENTER, "stop", "autoresearch",
                             until="run", return_state=True)
    assert walked.is_completed(), walked.message
    record = walked.result()
    assert [s["stage"] for s in record["stages"]] == ["brainstorm", "plan", "develop", "handoff"]
    assert (record["next"], next_stage(exp).stage) == ("run", "run")
    design = {"design": str(find_design(exp))}
    plan = {"plan": str(find_plan(exp))}
    check_developed(exp, Path(plan["plan"]), brief["topic"])
    check_handoff(exp)
    check_revision(exp, brief, design, plan)


def check_developed(exp: Path, plan: Path, topic: str) -> None:
    doc = load_plan(plan)
    assert [s.status for s in doc.subtasks] == ["done", "done", "done"]
    assert [s.title for s in doc.subtasks if s.integration] == ["Training pipeline [INTEGRATION]"]
    integration = doc.integration.conclusion
    assert integration["Result"] in ("effective", "inconclusive")
    assert integration["Evidence"].startswith("val_mse: ")
    assert "(expected: <= 0.05)" in integration["Evidence"]
    assert "L1: PASS (6/6 stages)" in integration["Evidence"]
    assert doc.subtasks[0].conclusion["Result"] == "implemented"
    # the scripted implementer's first integration draft failed L0; the fix loop sent it back
    second = exp / ".spml" / "develop" / "subtask-3-attempt-2.md"
    assert "L0-20 [critical]" in second.read_text()
    assert subjects(exp.parent)[1:6] == [  # under the handoff's commit
        "experiment: Training pipeline", "experiment: Evaluator core",
        "experiment: Model core", f"experiment: plan — {topic}",
        f"experiment: design — {topic}"]


def check_handoff(exp: Path) -> None:
    assert load_protocol(exp / "autoresearch-protocol.md").train_command == "python train.py"
    assert subjects(exp.parent)[0] == "experiment: handoff — autoresearch"
    assert git(exp.parent, "status", "--porcelain") == "?? exp/experiences.md"


def check_revision(exp: Path, brief: dict, design: dict, plan: dict) -> None:
    # revision mode: a new cadence edits the design and the plan in place, re-runs L0 + L1
    revised = {**brief, "evaluation": {**brief["evaluation"], "cadence": "every 100 steps"}}
    again = brainstorm_flow(str(exp), revised, "brief.yaml")
    assert again["design"] == design["design"]
    assert again["changed"] == ["evaluation"]
    replanned = plan_flow(str(exp))
    assert replanned["plan"] == plan["plan"]
    assert len(list((exp / "plans").glob("*.md"))) == 2
    doc = load_plan(Path(plan["plan"]))
    assert [s.status for s in doc.subtasks] == ["done", "done", "revised"]
    assert "## [ ] REVISED Subtask 3: Training pipeline [INTEGRATION]" in doc.render()
    state = develop_flow(str(exp), None, "stop", return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["outcomes"] == {"Subtask 3": "done"}
    assert load_plan(Path(plan["plan"])).subtask(3).status == "done"
    changes = "; ".join(replanned["changes"])
    assert subjects(exp.parent)[:3] == [
        "experiment: Training pipeline", f"experiment: revise plan — {changes}",
        "experiment: revise design — evaluation"]


def test_each_stage_refuses_to_start_without_its_input(tmp_path):
    exp = new_repo(tmp_path)
    with pytest.raises(ProtocolError, match="no design doc.*spml design new"):
        plan_flow(str(exp))
    (exp / "plans").mkdir()
    shutil.copy(FIXTURES / "design" / "good-design.md", exp / "plans" / "2026-12-05-x-design.md")
    with pytest.raises(ProtocolError, match="no plan.*spml plan new"):
        develop_flow(str(exp))
    plan = exp / "plans" / "2026-12-05-x.md"
    shutil.copy(FIXTURES / "plan" / "good-plan.md", plan)
    with pytest.raises(ProtocolError, match=r"\[INTEGRATION\] subtask is not ticked.*develop"):
        handoff_flow(str(exp))
    plan.write_text(plan.read_text().replace("[INTEGRATION]", ""))
    with pytest.raises(ProtocolError, match="fails the plan gate"):
        develop_flow(str(exp))
    assert find_plan(exp) == plan


def _resume_when_paused(run_input: dict, found: list[str]) -> None:
    """Resume the first paused flow run (within 2 minutes) with ``run_input``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
            runs = [r for r in runs if r.name and r.id not in found]
            if runs:
                found.append(str(runs[0].id))
                resume_flow_run(runs[0].id, run_input=run_input)
                return
            time.sleep(0.5)


def test_five_failures_at_one_level_pause_the_flow_and_stop_ends_it(tmp_path):
    exp = new_repo(tmp_path)
    (exp / "plans").mkdir()
    shutil.copy(FIXTURES / "design" / "good-design.md", exp / "plans" / "2026-12-05-x-design.md")
    shutil.copy(FIXTURES / "plan" / "good-plan.md", exp / "plans" / "2026-12-05-x.md")
    (exp / "tests").mkdir()
    (exp / "tests" / "test_model.py").write_text("def test_never():\n    assert False\n")
    git(exp.parent, "add", "-A")
    git(exp.parent, "commit", "-qm", "a plan whose first subtask never passes")
    calls = exp / "calls.txt"
    implementer = f"{sys.executable} -c \"open('{calls}', 'a').write('{{level}} ')\""
    found: list[str] = []
    resumer = threading.Thread(target=_resume_when_paused, args=({"decision": "stop"}, found))
    resumer.start()
    state = develop_flow(str(exp), implementer, "pause", return_state=True)
    resumer.join()
    assert found, "the flow never paused"
    assert state.is_failed()
    assert "Subtask 1 'Model core' is stuck at tests" in state.message
    assert "5 consecutive failures" in state.message
    assert calls.read_text().split() == ["implement", "tests", "tests", "tests", "tests"]
    assert load_plan(exp / "plans" / "2026-12-05-x.md").subtask(1).status == "todo"


UI_ANSWERS = {
    "topic": "Ridge regression", "task_type": "regression",
    "architecture": "A linear model with an L2 penalty.", "scale": "cpu",
    "evaluation__required": "yes", "evaluation__metrics": "val_mse",
    "evaluation__direction": "minimize", "evaluation__failure_handling":
        "checkpoint mode exits 1 naming the file; in_memory mode raises on a non-finite metric",
    "hypothesis": "Doing a sweep over the penalty is expected to cause val_mse to fall",
    "independent_variables": "penalty", "dependent_variables": "val_mse",
    "control_variables": "data, seed", "review_criteria": "val_mse <= 0.5"}


def test_the_design_questions_in_the_ui_form_and_on_the_terminal(tmp_path):
    exp = new_repo(tmp_path)
    found: list[str] = []
    resumer = threading.Thread(target=_resume_when_paused, args=(UI_ANSWERS, found))
    resumer.start()
    result = brainstorm_flow(str(exp))  # no brief: the run pauses for the form
    resumer.join()
    assert found, "the flow never paused for the form"
    assert result["design"].endswith("-ridge-regression-design.md")
    assert subjects(exp.parent)[0] == "experiment: design — Ridge regression"

    terminal = new_repo(tmp_path / "terminal")
    keys = [q.key for q in QUESTIONS]
    typed = [UI_ANSWERS.get(k.replace(".", "__"), "") for k in keys]
    typed[keys.index("scale")] = "tpu\ncpu"  # not a choice: asked again
    run = CliRunner().invoke(app, ["design", "new", str(terminal)], input="\n".join(typed) + "\n")
    assert run.exit_code == 0, run.output
    assert "choose one of cpu, single_gpu, multi_gpu, multi_node" in run.output
    assert "design written:" in run.output


def test_start_via_deployment_creates_a_run_of_the_loops_deployment(tmp_path):
    from prefect.client.orchestration import get_client

    from spml.flows.autoresearch import autoresearch_flow
    from spml.flows.handoff import _start

    autoresearch_flow.to_deployment(name="default").apply()  # registered; no worker needed
    started = _start("autoresearch", str(tmp_path), via_deployment=True)
    assert started.endswith("of autoresearch/default")
    run_id = started.split()[2]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert run.parameters == {"experiment_dir": str(tmp_path)}
    assert run.state is not None
    assert run.state.is_scheduled()


def test_a_drafter_may_rewrite_the_prose_and_the_gate_judges_it(tmp_path):
    exp = new_repo(tmp_path)
    brainstorm_flow(str(exp), load_brief(exp / "brief.yaml"), "brief.yaml")
    drafter = tmp_path / "drafter.py"
    drafter.write_text("import pathlib, sys\np = pathlib.Path(sys.argv[1])\n"
                       "p.write_text(p.read_text().replace('Needs setup:', "
                       "'Drafted by the agent.\\nNeeds setup:'))\n")
    result = plan_flow(str(exp), f"{sys.executable} {drafter} {{plan_file}}")
    assert "Drafted by the agent." in Path(result["plan"]).read_text()
    assert git(exp.parent, "status", "--porcelain") == ""
    breaker = tmp_path / "breaker.py"
    breaker.write_text("import pathlib, sys\np = pathlib.Path(sys.argv[1])\n"
                       "p.write_text(p.read_text().replace(' [INTEGRATION]', ''))\n")
    (exp / "plans" / Path(result["plan"]).name).unlink()
    git(exp.parent, "commit", "-qam", "start the plan over")
    with pytest.raises(ProtocolError, match="fails the plan gate"):
        plan_flow(str(exp), f"{sys.executable} {breaker} {{plan_file}}")
    assert subjects(exp.parent)[0] == "start the plan over"  # the failed plan is not committed


def test_a_refusal_on_the_command_line_exits_2_with_one_message(tmp_path):
    exp = new_repo(tmp_path)
    result = CliRunner().invoke(app, ["develop", str(exp)])
    assert result.exit_code == 2, result.output
    assert "no plan (plans/*.md)" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["handoff", str(exp)])
    assert result.exit_code == 2
    assert "no design doc" in result.output
