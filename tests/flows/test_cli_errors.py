"""Errors raised inside the loop flow reach the terminal as one message, without Prefect's
tracebacks (`spml autoresearch run` as a real process against the test harness's server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spml.toolkit.examples import DEMO_EXAMPLE, copy_example


def spml(api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api_url}
    return subprocess.run([sys.executable, "-m", "spml", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def assert_one_clean_error(done: subprocess.CompletedProcess[str], code: int,
                           start: str) -> None:
    """Exit ``code``; stderr is the one ``error:`` line; no traceback anywhere."""
    everything = done.stdout + done.stderr
    assert done.returncode == code, everything
    assert "Traceback" not in everything, everything
    assert done.stdout.splitlines()[0].startswith("Auto Research in ")
    assert done.stderr.splitlines() == [done.stderr.strip()], everything
    assert done.stderr.startswith(start), everything


@pytest.mark.parametrize(("overrides", "code", "start"), [
    ({"variable": {"files": ["train.py"]}}, 2,
     "error: 'train.py' matches both fixed.files and variable.files; a file is either fixed or "
     "variable."),
    ({"eval": {"command": "echo loss=0x10"}}, 1,
     "error: the baseline (round 0) could not be measured: eval printed no loss value"),
    ({"train_command": "pyhton train.py"}, 1,
     "error: the baseline (round 0) could not be measured: train crashed: exit 127 (command "
     "not found): "),
], ids=["fixed-variable-overlap", "baseline-without-metric", "mistyped-train-command"])
def test_errors_inside_the_flow_print_one_line(toy_experiment, prefect_api_url: str,
                                               overrides: dict, code: int, start: str) -> None:
    exp = toy_experiment(**overrides)

    assert_one_clean_error(spml(prefect_api_url, "autoresearch", "run", str(exp)), code, start)


def test_a_ledger_of_another_metric_is_refused_in_one_line(toy_experiment,
                                                           prefect_api_url: str) -> None:
    exp = toy_experiment()
    (exp / "experiences.md").write_text(
        "# Experiences\n\nbest: acc = 9 (R0)\nrounds: 0 / 3\nstatus: running\n\n"
        "| Round | Compliance | Result | Verdict | Strategy | Insight | Note |\n"
        "|---|---|---|---|---|---|---|\n| 0 | pass | 9 | committed | baseline | b |  |\n")

    assert_one_clean_error(spml(prefect_api_url, "autoresearch", "run", str(exp)), 2,
                           "error: experiences.md tracks metric 'acc' but the protocol says "
                           "'loss'.")


def test_verbose_shows_prefects_traceback_and_the_same_message(toy_experiment,
                                                               prefect_api_url: str) -> None:
    exp = toy_experiment(variable={"files": ["train.py"]})

    done = spml(prefect_api_url, "-v", "autoresearch", "run", str(exp))

    assert done.returncode == 2
    assert "Traceback (most recent call last):" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: 'train.py' matches both")


def test_a_failed_demo_runs_again_in_its_own_directory(tmp_path: Path,
                                                       prefect_api_url: str) -> None:
    leftover = copy_example(DEMO_EXAMPLE, tmp_path / "demo")  # what a failed demo left behind

    done = spml(prefect_api_url, "demo", str(leftover), "--rounds", "0")

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"resuming the {DEMO_EXAMPLE} demo in {leftover}"
    assert (leftover / "experiences.md").is_file()
