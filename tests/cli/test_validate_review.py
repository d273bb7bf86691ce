"""`spml validate static` after the second review on public code: the severity on each finding
line, `--exclude` for modules reached by import, and JSON for a file that does not parse."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from spml.cli import app

runner = CliRunner()
BAD = "from torch.utils.data import DataLoader\nloader = DataLoader(ds, num_workers=0)\n"


def test_no_summary_lines_say_which_findings_are_critical(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "train.py").write_text(BAD)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "static", "train.py", "--select", "L0-06,L0-09",
                                 "--profile", "spml", "--no-summary"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if not line.startswith("  ")]
    assert lines == [
        "train.py:1:1 L0-09 [warning] torch is imported but its RNG is never seeded",
        "train.py:2:10 L0-06 [critical] DataLoader loads in the main process (num_workers is "
        "0)"]
    warning = runner.invoke(app, ["validate", "static", "train.py", "--select", "L0-06",
                                  "--no-summary"])
    assert warning.exit_code == 0
    assert warning.output.startswith("train.py:2:10 L0-06 [warning] DataLoader loads")
    data = json.loads(runner.invoke(app, ["validate", "static", "train.py", "--select",
                                          "L0-06", "--format", "json"]).output)
    assert data["findings"][0]["message"].startswith("DataLoader loads")
    assert data["findings"][0]["severity"] == "warning"


def test_a_single_unparsable_file_gives_a_json_error_object(tmp_path: Path,
                                                           monkeypatch) -> None:
    (tmp_path / "bad.py").write_text("def f(:\n")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "static", "bad.py", "--format", "json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["error"]["exit_code"] == 2
    assert "bad.py:1:" in data["error"]["message"]
    assert "syntax error" in data["error"]["message"]


def test_exclude_silences_a_module_reached_through_an_import(tmp_path: Path,
                                                            monkeypatch) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("from .data import *\n")
    (tmp_path / "models" / "data.py").write_text(BAD)
    (tmp_path / "main.py").write_text("from models import *\nprint(loader)\n")
    monkeypatch.chdir(tmp_path)
    args = ["validate", "static", ".", "--select", "L0-06", "--profile", "spml",
            "--format", "json"]
    reported = runner.invoke(app, args)
    assert reported.exit_code == 1
    assert [f["path"] for f in json.loads(reported.output)["findings"]] == ["models/data.py"]
    excluded = runner.invoke(app, [*args, "--exclude", "models/*"])
    assert excluded.exit_code == 0
    assert json.loads(excluded.output)["findings"] == []
