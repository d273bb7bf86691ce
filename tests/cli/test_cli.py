"""The CLI's exit codes and messages (typer CliRunner, real repos; no Prefect needed here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spml.cli import app

runner = CliRunner()


def test_bad_protocol_exits_2_naming_field_and_line(toy_experiment) -> None:
    exp = toy_experiment()
    path = exp / "autoresearch-protocol.md"
    path.write_text(path.read_text().replace("max_rounds: 3", "max_rounds: three"))
    result = runner.invoke(app, ["autoresearch", "run", str(exp)])
    assert result.exit_code == 2
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1)
                if text.startswith("max_rounds"))
    assert f"max_rounds (line {line})" in result.output
    assert "Traceback" not in result.output


def test_run_outside_git_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["autoresearch", "run", str(tmp_path)])
    assert result.exit_code == 2
    assert "must be inside a git repository" in result.output


def test_note_stop_and_status(toy_experiment) -> None:
    exp = toy_experiment()
    assert runner.invoke(app, ["autoresearch", "status", str(exp)]).output.splitlines() == [
        "experiment: exp", "not started"]
    assert runner.invoke(app, ["autoresearch", "note", str(exp), "use x near 3"]).exit_code == 0
    assert runner.invoke(app, ["autoresearch", "stop", str(exp)]).exit_code == 0
    (exp / "experiences.md").write_text(
        "# Experiences\n\nbest: loss = 9 (R0)\nrounds: 0 / 3\nstatus: running\n\n"
        "| Round | Compliance | Result | Verdict | Strategy | Insight | Note |\n"
        "|---|---|---|---|---|---|---|\n| 0 | pass | 9 | committed | baseline | b |  |\n")
    status = runner.invoke(app, ["autoresearch", "status", str(exp)], terminal_width=200)
    assert status.exit_code == 0
    assert "best loss = 9 (R0)" in status.output
    assert "queued note: use x near 3" in status.output
    assert "stop requested" in status.output


def test_create_scaffolds_a_valid_protocol(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "params.yaml").write_text("lr: 0.01\nwidth: 32\n")
    args = ["autoresearch", "create", str(exp), "--question", "Best lr?",
            "--train-command", "python train.py", "--eval-command", "python eval.py",
            "--metric", "acc", "--direction", "maximize", "--fixed", "train.py, eval.py",
            "--variable", "params.yaml", "--time-limit", "5min", "--researcher", "optuna",
            "--params-file", "params.yaml"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    from spml.protocols.autoresearch import load_protocol

    protocol = load_protocol(exp / "autoresearch-protocol.md")
    assert protocol.fixed.time_limit == 300
    assert protocol.researcher.space["lr"].log is True
    assert runner.invoke(app, args).exit_code == 2  # never overwrites


def test_create_prompts_for_missing_fields(tmp_path: Path) -> None:
    answers = "\n".join(["Q?", "python t.py", "python e.py", "acc", "sideways", "t.py",
                         "p.yaml", "60"]) + "\n"
    result = runner.invoke(app, ["autoresearch", "create", str(tmp_path), "--researcher-command",
                                 "agent {prompt_file}"], input=answers)
    assert result.exit_code == 2
    assert "eval.direction" in result.output


def test_schema_prints_json_schema() -> None:
    result = runner.invoke(app, ["schema", "autoresearch"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "research_question" in schema["properties"]


@pytest.mark.slow
def test_demo_improves_on_its_baseline(tmp_path: Path) -> None:
    # The user's path: the console script, Prefect's embedded server, a fresh PREFECT_HOME.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), COLUMNS="160")
    spml = Path(sys.executable).with_name("spml")
    # 3 rounds: the default acceptance runs each version up to 3 times, and round 3 is the
    # first to beat the baseline beyond that noise (then the best and the baseline are
    # re-measured on fresh seeds).
    done = subprocess.run([str(spml), "demo", str(tmp_path / "demo"), "--rounds", "3"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    from spml.protocols.experiences import parse_experiences

    ledger = parse_experiences((tmp_path / "demo" / "experiences.md").read_text())
    assert [r.round for r in ledger.rows] == [0, 1, 2, 3]
    assert ledger.status == "completed"
    assert ledger.best is not None
    assert ledger.best.result < ledger.rows[0].result
    assert ledger.incumbent is not None
    assert ledger.incumbent.n >= 2
    out = " ".join(done.stdout.split())
    assert "completed: val_mse: baseline" in out
    # After 3 rounds the kept version has 2 runs: on 3 fresh seeds it may or may not hold up.
    assert re.search(r"confirmed on fresh seeds: best \S+ ± \S+ \(n=3\) vs baseline \S+ ± "
                     r"\S+ \(n=3\): gain [-+]\S+, 95% interval \[\S+, \S+\], "
                     r"(confirmed|NOT confirmed)", out), out
