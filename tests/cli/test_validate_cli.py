"""`spml validate`: exit codes 0/1/2, text and JSON output, explain, list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from spml.cli import app
from spml.toolkit.checks import CHECKS

runner = CliRunner()
BAD = "from torch.utils.data import DataLoader\nloader = DataLoader(ds, num_workers=0)\n"
GOOD = "from torch.utils.data import DataLoader\nloader = DataLoader(ds, num_workers=4)\n"


def test_exit_1_on_a_critical_finding_with_the_finding_line(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(BAD)
    result = runner.invoke(app, ["validate", "static", str(tmp_path), "--select", "L0-06"])
    assert result.exit_code == 1
    assert f"{tmp_path / 'train.py'}:2:10 L0-06 DataLoader loads" in result.output
    assert "Verdict: REQUEST_CHANGES" in result.output


def test_exit_0_without_critical_findings_and_json_fields(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(GOOD)
    result = runner.invoke(app, ["validate", "static", str(tmp_path), "--format", "json",
                                 "--select", "L0-06,L0-09"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [c["id"] for c in data["checks"]] == ["L0-06", "L0-09"]
    assert data["critical"] == 0


def test_exit_2_on_usage_errors(tmp_path: Path) -> None:
    assert runner.invoke(app, ["validate", "static", str(tmp_path / "nope")]).exit_code == 2
    (tmp_path / "t.py").write_text("x = 1\n")
    unknown = runner.invoke(app, ["validate", "static", str(tmp_path), "--ignore", "L0-77"])
    assert unknown.exit_code == 2
    assert "unknown check id 'L0-77'" in unknown.output
    (tmp_path / "t.py").write_text("def f(:\n")
    broken = runner.invoke(app, ["validate", "static", str(tmp_path)])
    assert broken.exit_code == 2
    assert "syntax error" in broken.output
    assert "Traceback" not in broken.output
    assert runner.invoke(app, ["validate", "static", str(tmp_path), "--format", "xml"]
                         ).exit_code == 2


def test_explain_prints_the_doc_and_list_shows_every_check() -> None:
    result = runner.invoke(app, ["validate", "explain", "l0-06"])
    assert result.exit_code == 0
    assert result.output.startswith("L0-06 dataloader-workers (critical)")
    assert "## Use instead" in result.output
    assert runner.invoke(app, ["validate", "explain", "L0-00"]).exit_code == 2
    listing = runner.invoke(app, ["validate", "list"], terminal_width=200).output
    assert all(check.id in listing for check in CHECKS)


def test_console_script_runs_as_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(BAD)
    done = subprocess.run([sys.executable, "-m", "spml", "validate", "static", "train.py",
                           "--select", "L0-06"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stdout.startswith("train.py:2:10 L0-06 ")


def test_pre_commit_hook_entry_runs_on_staged_file_names(tmp_path: Path) -> None:
    import shlex

    import yaml

    (hook,) = yaml.safe_load((Path(__file__).parents[2] / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "spml-validate"
    assert hook["types"] == ["python"]
    (tmp_path / "train.py").write_text(BAD)
    argv = shlex.split(hook["entry"])
    assert argv[0] == "spml"
    result = runner.invoke(app, [*argv[1:], "--select", "L0-06", str(tmp_path / "train.py")])
    assert result.exit_code == 1
    assert "Verdict" not in result.output
    assert result.output.count(" L0-06 ") == 1
