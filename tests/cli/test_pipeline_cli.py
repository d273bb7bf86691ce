"""`spml design check`, `spml plan check`, `spml schema design|plan` and the stages' bad
input: exit 0 on a pass, exit 2 with one line per problem and no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from spml.cli import app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BRIEF = Path(__file__).resolve().parents[2] / "examples" / "pipeline" / "brief.yaml"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_design_check_passes_a_good_design_and_lists_each_problem(tmp_path):
    good = FIXTURES / "design" / "good-design.md"
    assert run("design", "check", str(good)).exit_code == 0
    bad = tmp_path / "2026-12-05-x-design.md"
    text = good.read_text()
    bad.write_text(text.replace("cadence: every 200 steps", "cadence: final epoch").replace(
        "  Doing a search", "  TBD: a search"))
    result = run("design", "check", str(bad))
    assert result.exit_code == 2
    assert "fails the design check (" in result.output
    assert "evaluation.cadence (line" in result.output
    assert "hypothesis (line" in result.output
    assert "Traceback" not in result.output


def test_plan_check_is_the_plan_gate(tmp_path):
    good = FIXTURES / "plan" / "good-plan.md"
    result = run("plan", "check", str(good))
    assert result.exit_code == 0
    assert "plan gate passed" in result.output
    bad = tmp_path / "plan.md"
    bad.write_text(good.read_text().replace(" [INTEGRATION]", ""))
    result = run("plan", "check", str(bad))
    assert result.exit_code == 2
    assert "[INTEGRATION]" in result.output
    assert "Traceback" not in result.output


def test_a_malformed_brief_exits_2_before_any_stage_runs(tmp_path):
    (tmp_path / "exp").mkdir()
    brief = tmp_path / "brief.yaml"
    brief.write_text(BRIEF.read_text().replace("scale: cpu", "scale: tpu").replace(
        "direction: minimize\n  cadence", "direction: down\n  cadence"))
    result = run("design", "new", str(tmp_path / "exp"), "--from", str(brief))
    assert result.exit_code == 2, result.output
    assert "brief.yaml is not a valid brief (2 problems" in result.output
    assert "scale (line" in result.output
    assert "evaluation.direction (line" in result.output
    assert not (tmp_path / "exp" / "plans").exists()
    result = run("design", "new", str(tmp_path / "missing"), "--from", str(BRIEF))
    assert result.exit_code == 2
    assert "experiment directory must exist" in result.output


def test_schema_prints_the_design_and_plan_schemas():
    design = json.loads(run("schema", "design").output)
    assert {"hypothesis", "review_criteria", "evaluation"} <= set(design["properties"])
    plan = json.loads(run("schema", "plan").output)
    assert "subtasks" in plan["properties"]


def test_handoff_refuses_an_unknown_loop(tmp_path):
    shutil.copytree(FIXTURES / "design", tmp_path / "exp")
    result = run("handoff", str(tmp_path / "exp"), "--to", "nightly")
    assert result.exit_code == 2
    assert "--to must be watchdog, iteration or autoresearch" in \
        result.output


def test_experiment_next_prints_the_stage_first(tmp_path):
    result = run("experiment", "next", str(tmp_path))
    assert result.exit_code == 0
    assert result.output.splitlines() == ["brainstorm", "no design doc in plans/"]
    assert run("experiment", "next", str(tmp_path / "missing")).exit_code == 2


def test_experiment_verify_and_run_refuse_bad_input_before_prefect_starts(tmp_path):
    result = run("experiment", "verify", str(tmp_path))
    assert result.exit_code == 2
    assert "holds no loop protocol" in result.output
    assert "spml experiment next" in result.output
    (tmp_path / "experiment-context.md").write_text("# context\n")
    result = run("experiment", "verify", str(tmp_path))
    assert result.exit_code == 2
    assert "ran under the watchdog" in result.output
    assert run("experiment", "verify", str(tmp_path), "--runs", "1").exit_code == 2
    assert run("experiment", "run", str(tmp_path / "missing")).exit_code == 2
    result = run("experiment", "run", str(tmp_path), "--until", "lunch")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
