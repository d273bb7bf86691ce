"""`spml iteration ...`: exit codes, messages, queued controls, and the demo end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import iteration_experiment
from typer.testing import CliRunner

from spml.cli import app
from spml.protocols.experiences import parse_experiences

runner = CliRunner()


def test_schema_iteration_prints_the_protocol_schema() -> None:
    result = runner.invoke(app, ["schema", "iteration"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "spml ml-iteration protocol (YAML front matter)"
    assert "review_criteria" in schema["required"]
    assert runner.invoke(app, ["schema", "nonsense"]).exit_code == 2


def test_bad_criterion_exits_2_naming_field_line_and_fix(tmp_path: Path) -> None:
    exp = iteration_experiment(tmp_path, {})
    path = exp / "iteration-protocol.md"
    text = path.read_text().replace("  - name: acc", "  - loss / grad_norm\n  - name: acc")
    path.write_text(text)
    result = runner.invoke(app, ["iteration", "run", str(exp)])
    assert result.exit_code == 2, result.output
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "loss / grad_norm" in t)
    assert f"review_criteria.metrics.0 (line {line})" in result.output
    assert "name op value" in result.output
    assert "Traceback" not in result.output


def test_two_loop_kinds_in_one_directory_are_refused(tmp_path: Path, toy_experiment) -> None:
    exp = toy_experiment()
    (exp / "iteration-protocol.md").write_text("---\ngoal: x\n---\n")
    result = runner.invoke(app, ["iteration", "run", str(exp)])
    assert result.exit_code == 2
    assert "already holds an Auto Research experiment" in " ".join(result.output.split())


def test_override_note_and_stop_are_queued_and_shown(tmp_path: Path) -> None:
    exp = iteration_experiment(tmp_path, {})
    assert runner.invoke(app, ["iteration", "override", str(exp), "--round", "2",
                               "--verdict", "rollback"]).exit_code == 0
    assert runner.invoke(app, ["iteration", "note", str(exp), "log mfu"]).exit_code == 0
    bad = runner.invoke(app, ["iteration", "override", str(exp), "--round", "2",
                              "--verdict", "maybe"])
    assert bad.exit_code == 2
    assert "--verdict must be commit or rollback, got 'maybe'" in bad.output
    zero = runner.invoke(app, ["iteration", "override", str(exp), "--round", "0",
                               "--verdict", "commit"])
    assert zero.exit_code == 2
    state = exp / ".spml" / "ml-iteration"
    assert len(list((state / "overrides" / "inbox").glob("*.json"))) == 1
    assert len(list((state / "notes" / "inbox").glob("*.txt"))) == 1
    status = runner.invoke(app, ["iteration", "status", str(exp)])
    assert status.exit_code == 0
    assert "not started" in status.output


@pytest.mark.slow
def test_iteration_demo_reaches_its_target_after_a_rollback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), COLUMNS="160")
    spml = Path(sys.executable).with_name("spml")
    done = subprocess.run([str(spml), "iteration", "demo", str(tmp_path / "demo")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    ledger = parse_experiences((tmp_path / "demo" / "experiences.md").read_text())
    story = done.stdout + (tmp_path / "demo" / "experiences.md").read_text()
    assert ledger.status == "target_reached", story  # the rounds' table says why not
    assert [r.verdict for r in ledger.rows] == ["committed", "committed", "rolled_back",
                                                "committed"], story
    assert ledger.best_commit is not None
    assert "target_reached" in done.stdout


def test_locked_edit_is_refused_before_prefect_starts(tmp_path: Path) -> None:
    from helpers import drive

    exp = iteration_experiment(tmp_path, {}, max_rounds=0)
    drive(exp, kind="ml-iteration")
    path = exp / "iteration-protocol.md"
    path.write_text(path.read_text().replace("evaluate.py\n  -", "evaluate.py\n  - train.py\n  -"))
    result = runner.invoke(app, ["iteration", "run", str(exp)])
    assert result.exit_code == 2
    assert "fixed changed since this loop started" in " ".join(result.output.split())
    assert "Traceback" not in result.output
