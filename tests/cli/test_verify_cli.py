"""`spml verify` from CSVs: the verdict word alone on the first line; bad CSVs exit 2 naming
the file and row, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spml.cli import app


def csv(path: Path, rows: list[str], header: str = "seed,acc") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def run(*args: str):
    return CliRunner().invoke(app, ["verify", *args])


def test_the_first_line_is_the_verdict(tmp_path):
    base = csv(tmp_path / "a.csv", ["0,0.800", "1,0.812", "2,0.791", "3,0.805"])
    treat = csv(tmp_path / "b.csv", ["0,0.851", "1,0.862", "2,0.844", "3,0.858"])
    result = run("--baseline", str(base), "--treatment", str(treat), "--metric", "acc",
                 "--direction", "maximize")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "effective"
    assert lines[1].startswith("improvement: +0.05")
    assert lines[2].startswith("interval: [+")
    assert lines[3] == "n: baseline 4, treatment 4"
    assert "Welch" in lines[4]
    result = run("--baseline", str(base), "--treatment", str(treat), "--metric", "acc",
                 "--direction", "maximize", "--min-effect", "0.2", "--method", "bootstrap")
    assert result.output.splitlines()[0] == "ineffective"


@pytest.mark.parametrize(("rows", "header", "message"), [
    (["0,0.8", "1,high"], "seed,acc", "b.csv (row 3): acc must be a number, got 'high'"),
    (["0,0.8", "1,nan"], "seed,acc", "b.csv (row 3): acc must be finite"),
    (["0,0.8"], "seed,loss", "b.csv: no column 'acc' (columns: seed, loss)"),
    ([], "seed,acc", "b.csv: no runs"),
])
def test_bad_csvs_exit_2_naming_file_and_row(tmp_path, rows, header, message):
    base = csv(tmp_path / "a.csv", ["0,0.8", "1,0.81"])
    bad = csv(tmp_path / "b.csv", rows, header)
    result = run("--baseline", str(base), "--treatment", str(bad), "--metric", "acc",
                 "--direction", "maximize")
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_empty_file_and_a_bad_direction_exit_2(tmp_path):
    base = csv(tmp_path / "a.csv", ["0,0.8", "1,0.81"])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = run("--baseline", str(base), "--treatment", str(empty), "--metric", "acc",
                 "--direction", "maximize")
    assert result.exit_code == 2
    assert "empty.csv: not a readable CSV" in result.output
    result = run("--baseline", str(base), "--treatment", str(base), "--metric", "acc",
                 "--direction", "up")
    assert result.exit_code == 2
    assert "--direction must be maximize or minimize" in result.output
