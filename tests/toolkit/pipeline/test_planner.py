"""The plan stage's content: SPML's minimum split from a design, and revision mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from spml.protocols.design import DesignDoc
from spml.protocols.plan import parse_plan
from spml.protocols.plan_gate import check_plan
from spml.toolkit.pipeline.planner import find_plan, new_plan_text, plan_filename, revise_plan

BRIEF = Path(__file__).resolve().parents[3] / "examples" / "pipeline" / "brief.yaml"
RUNTIME = {"train-command": "python trainer.py --fast",
           "eval-command": "python score.py {checkpoint}", "max-steps": 40}


def design(**changes: Any) -> DesignDoc:
    data = yaml.safe_load(BRIEF.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return DesignDoc.model_validate(data)


def test_the_minimum_split_with_evaluation_passes_the_gate(tmp_path):
    plan = parse_plan(new_plan_text(tmp_path, "exp", design(), RUNTIME))
    assert [s.title for s in plan.subtasks] == [
        "Model core", "Evaluator core", "Training pipeline [INTEGRATION]"]
    assert check_plan(plan) == []
    integration = plan.integration
    assert "`trainer.py`" in integration.fields["Implementation"]
    assert "`score.py` (Subtask 2)" in integration.fields["Evaluation Contract"]
    assert "40 steps" in integration.fields["Validation Pyramid"]
    assert "val_mse <= 0.05" in integration.fields["Validation Pyramid"]
    assert plan.subtasks[0].tests == ["tests/test_model.py"]


def test_without_evaluation_there_is_no_evaluator_and_the_gate_still_passes(tmp_path):
    plain = design(evaluation={"required": False}, review_criteria={
        "performance": [{"name": "first_step_time_s", "op": "<=", "threshold": 30}]},
        dependent_variables=["first_step_time_s"], autoresearch=None)
    plan = parse_plan(new_plan_text(tmp_path, ".", plain, None))
    assert [s.title for s in plan.subtasks] == ["Model core", "Training pipeline [INTEGRATION]"]
    assert plan.header["Evaluation design"].startswith("none")
    assert "Evaluation Contract" not in plan.integration.fields
    assert check_plan(plan) == []


def done(plan_text: str) -> Any:
    plan = parse_plan(plan_text)
    for sub in plan.subtasks:
        plan = plan.mark(sub.number, "done")
    return plan


def test_an_unchanged_design_changes_nothing(tmp_path):
    plan = done(new_plan_text(tmp_path, ".", design(), None))
    revised, changes = revise_plan(plan, ".", design(), design(), None)
    assert changes == []
    assert revised.render() == plan.render()


def test_a_new_cadence_revises_the_integration_subtask_only(tmp_path):
    plan = done(new_plan_text(tmp_path, ".", design(), None))
    new = design(evaluation__cadence="every 100 steps")
    revised, changes = revise_plan(plan, ".", design(), new, None)
    statuses = {s.number: s.status for s in revised.subtasks}
    assert statuses == {1: "done", 2: "done", 3: "revised"}
    assert "## [ ] REVISED Subtask 3: Training pipeline [INTEGRATION]" in revised.render()
    assert "- cadence: every 100 steps" in revised.subtask(3).fields["Evaluation Contract"]
    assert any(c.startswith("header Evaluation design") for c in changes)


def test_a_changed_component_re_flags_the_integration_subtask(tmp_path):
    plan = done(new_plan_text(tmp_path, ".", design(), None))
    revised, changes = revise_plan(plan, ".", design(), design(architecture="A two-layer MLP."),
                                   None)
    statuses = {s.number: s.status for s in revised.subtasks}
    assert statuses[1] == "revised"
    assert statuses[3] == "revised"
    assert "re-flagged Subtask 3 (a component changed)" in changes
    assert check_plan(revised) == []


def test_what_a_person_wrote_survives_a_revision(tmp_path):
    plan = done(new_plan_text(tmp_path, ".", design(), None))
    plan = plan.update_header("Goal", "Our own goal, in our words.")
    plan = plan.revise(1, {"Implementation": "`model.py`: our own notes on the MLP."})
    plan = plan.add_subtask("Data loader", {
        "Role": "r", "Implementation": "`data.py`", "Unit Tests": "- `tests/test_data.py`",
        "Expected Conclusion": "implemented"})
    revised, changes = revise_plan(plan, ".", design(),
                                   design(evaluation__cadence="every 100 steps"), None)
    assert revised.header["Goal"] == "Our own goal, in our words."
    assert revised.subtask(1).fields["Implementation"] == "`model.py`: our own notes on the MLP."
    assert [s.title for s in revised.subtasks if s.title == "Data loader"] == ["Data loader"]
    assert not revised.removed
    assert all("Subtask 4" not in c for c in changes)


def test_dropping_evaluation_removes_the_evaluator_and_its_contract(tmp_path):
    plan = done(new_plan_text(tmp_path, ".", design(), None))
    no_eval = design(evaluation={"required": False}, review_criteria={
        "performance": [{"name": "first_step_time_s", "op": "<=", "threshold": 30}]},
        autoresearch=None)
    revised, _ = revise_plan(plan, ".", design(), no_eval, None)
    assert [r.number for r in revised.removed] == [2]
    assert "## REMOVED: Subtask 2: Evaluator core — no longer in the design" in revised.render()
    assert "Evaluation Contract" not in revised.subtask(3).fields
    assert revised.subtask(3).fields["Components"].startswith("Subtask 1 (")
    assert check_plan(revised) == []
    again, _ = revise_plan(revised, ".", no_eval, design(), None)
    new = [s for s in again.subtasks if s.status == "new"]
    assert [(s.number, s.title) for s in new] == [(4, "Evaluator core")]
    assert "Subtask 4" in again.subtask(3).fields["Components"]
    assert check_plan(again) == []


def test_find_plan_ignores_the_design_and_notes_and_refuses_two_plans(tmp_path):
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "2026-12-05-x-design.md").write_text("d")
    (plans / "notes.md").write_text("# Meeting notes\n\n- try SGD\n")
    assert find_plan(tmp_path) is None
    plan_text = new_plan_text(tmp_path, ".", design(), None)
    (plans / "2026-12-05-x.md").write_text(plan_text)
    assert find_plan(tmp_path) == plans / "2026-12-05-x.md"
    (plans / "2026-12-06-y.md").write_text(plan_text)
    with pytest.raises(ValueError, match="several plans"):
        find_plan(tmp_path)
    assert plan_filename(plans / "2026-12-05-x-design.md") == "2026-12-05-x.md"


def test_a_multi_line_design_value_becomes_one_plan_line(tmp_path):
    block = design(evaluation__failure_handling="checkpoint mode:\n  exits 1\n\nin_memory "
                                                "mode:\n  raises")
    plan = parse_plan(new_plan_text(tmp_path, ".", block, None))
    assert "checkpoint mode: exits 1 in_memory mode: raises" in plan.header["Evaluation design"]
    assert check_plan(plan) == []
