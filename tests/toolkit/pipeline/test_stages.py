"""The stages' shared preconditions on real git repositories: what a subtask commits, when a
plan is stale, which file is the plan."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml
from helpers import git

from spml.errors import ProtocolError
from spml.protocols.plan import parse_plan
from spml.toolkit.git.checkout import commit_paths, dirty_snapshot
from spml.toolkit.pipeline.brainstorm import write_design
from spml.toolkit.pipeline.planner import find_plan, new_plan_text
from spml.toolkit.pipeline.stages import require_plan_current, subtask_files

BRIEF = Path(__file__).resolve().parents[3] / "examples" / "pipeline" / "brief.yaml"
DAY = date(2026, 12, 5)


def repo(tmp_path: Path) -> Path:
    exp = tmp_path / "repo"
    exp.mkdir()
    git(exp, "init", "-q", "-b", "main")
    git(exp, "config", "user.name", "Person")
    git(exp, "config", "user.email", "person@example.invalid")
    return exp


def planned(exp: Path) -> tuple[Path, Path]:
    brief = yaml.safe_load(BRIEF.read_text())
    design = write_design(exp, brief, {}, DAY).path
    from spml.protocols.design import load_design

    plan = exp / "plans" / "2026-12-05-x.md"
    plan.write_text(new_plan_text(exp, ".", load_design(design), None))
    commit_paths(exp, "design and plan", ["plans/" + design.name, "plans/" + plan.name])
    return design, plan


def test_a_subtask_commits_the_files_it_names_and_what_changed(tmp_path):
    exp = repo(tmp_path)
    design, plan = planned(exp)
    subtask = parse_plan(plan.read_text()).subtasks[0]  # Model core: model.py, tests/test_model.py
    (exp / "model.py").write_text("stub left by an earlier, stuck run\n")
    (exp / "notes.txt").write_text("the person's pending notes\n")
    before = dirty_snapshot(exp)
    (exp / "tests").mkdir()
    (exp / "tests" / "test_model.py").write_text("def test_x():\n    pass\n")
    (exp / "helper.py").write_text("x = 1\n")
    after = dirty_snapshot(exp)
    assert subtask_files(exp, subtask, before, after) == [
        "helper.py", "model.py", "tests/test_model.py"]


def test_develop_refuses_only_a_design_change_the_plan_derives_from(tmp_path):
    exp = repo(tmp_path)
    design, plan = planned(exp)
    require_plan_current(exp, plan, design)
    design.write_text(design.read_text() + "\nA note in the prose.\n")
    commit_paths(exp, "prose", ["plans/" + design.name])
    require_plan_current(exp, plan, design)  # prose moves nothing in the plan
    design.write_text(design.read_text().replace("every 200 steps", "every 100 steps"))
    with pytest.raises(ProtocolError, match="changed after .* was written .*Subtask 3"):
        require_plan_current(exp, plan, design)


def test_the_plan_named_after_the_design_is_the_plan_whatever_it_holds(tmp_path):
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "2026-12-05-x-design.md").write_text("d")
    (plans / "notes.md").write_text("# notes\n")
    (plans / "2026-12-05-x.md").write_text("# a plan mid-edit, no subtask heading yet\n")
    assert find_plan(tmp_path) == plans / "2026-12-05-x.md"
    (plans / "2026-12-05-x.md").unlink()
    (plans / "other.md").write_bytes("## [x] Subtask 1: caf\xe9".encode("latin-1"))
    assert find_plan(tmp_path) == plans / "other.md"  # unreadable: shown, never overwritten
