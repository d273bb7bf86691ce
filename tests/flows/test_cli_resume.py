"""`spml autoresearch run` as a real process against a Prefect server, killed -9 and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import git
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName

from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_journal, read_ledger

BRANCH = "spml/autoresearch/exp"


def cli(exp: Path, api_url: str, *args: str, crash_at: str = "") -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api_url, "SPML_CRASH_AT": crash_at}
    return subprocess.Popen([sys.executable, "-m", "spml", "autoresearch", "run", str(exp),
                             *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_cli_run_killed_mid_round_resumes_exactly_once(toy_experiment, prefect_api_url,
                                                       tmp_path) -> None:
    exp = toy_experiment({"default": "good", "2": "marker_sleep"}, max_rounds=3)
    proc = cli(exp, prefect_api_url)
    marker = tmp_path / "researcher-2.started"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (tmp_path / "plan.json").write_text(json.dumps({"default": "good"}))

    proc = cli(exp, prefect_api_url)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "completed" in out
    experiment = Experiment.locate(exp, "autoresearch-protocol.md")
    ledger = read_ledger(experiment)
    assert [r.round for r in ledger.rows] == [0, 1, 2, 3]
    assert [r.verdict for r in ledger.rows] == ["committed"] * 4
    subjects = git(exp, "log", "--format=%s", BRANCH).splitlines()
    assert [s.split(" — ")[0] for s in subjects[:3]] == [
        "autoresearch: round 3", "autoresearch: round 2", "autoresearch: round 1"]
    assert read_journal(experiment) is None
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(
            name=FlowFilterName(any_=["autoresearch"])))
    mine = [r for r in runs if r.parameters.get("experiment_dir") == str(exp)]
    assert sorted(r.state.type.value for r in mine) == ["COMPLETED", "CRASHED"]
    worktree = experiment.worktree_dir("autoresearch")
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""


def test_cli_crash_after_commit_is_recorded_not_recommitted(toy_experiment,
                                                            prefect_api_url) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=2)
    proc = cli(exp, prefect_api_url, crash_at="after-commit@1")
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    proc = cli(exp, prefect_api_url)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    subjects = git(exp, "log", "--format=%s", BRANCH).splitlines()
    assert sum(s.startswith("autoresearch: round 1 ") for s in subjects) == 1
    ledger = read_ledger(Experiment.locate(exp, "autoresearch-protocol.md"))
    assert [r.round for r in ledger.rows] == [0, 1, 2]
