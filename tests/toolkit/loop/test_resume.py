"""kill -9 of the supervisor at several points, then a restart: every round exactly once.

The supervisor here is `tests/helpers.py` run as a real subprocess (the flow's steps without
Prefect); `tests/flows/test_cli_resume.py` repeats the key case through the real CLI + flow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import git

from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_journal, read_ledger

HELPERS = Path(__file__).parents[2] / "helpers.py"
BRANCH = "spml/autoresearch/exp"


def start(exp: Path, crash_at: str = "") -> subprocess.Popen:
    env = {**os.environ, "SPML_CRASH_AT": crash_at}
    return subprocess.Popen([sys.executable, str(HELPERS), str(exp)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen) -> int:
    out, _ = proc.communicate(timeout=120)
    if proc.returncode not in (0, -signal.SIGKILL):
        print(out.decode(errors="replace"))
    return proc.returncode


def assert_exactly_once(exp: Path, max_rounds: int) -> None:
    ledger = read_ledger(Experiment.locate(exp, "autoresearch-protocol.md"))
    assert ledger is not None
    assert [r.round for r in ledger.rows] == list(range(max_rounds + 1))
    assert ledger.status == "completed"
    subjects = git(exp, "log", "--format=%s", BRANCH).splitlines()
    rounds = Counter(s.split(" — ")[0] for s in subjects if s.startswith("autoresearch:"))
    assert all(n == 1 for n in rounds.values()), rounds
    committed = {f"autoresearch: round {r.round}" for r in ledger.rows
                 if r.verdict == "committed" and r.round > 0}
    assert set(rounds) == committed
    wt = Experiment.locate(exp, "autoresearch-protocol.md").worktree_dir("autoresearch")
    assert git(wt, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(wt, "diff", "--quiet", "main", "HEAD", "--", "exp/train.py",
               "exp/evaluate.py", check=False) == 0
    assert read_journal(Experiment.locate(exp, "autoresearch-protocol.md")) is None


@pytest.mark.parametrize("point", ["before-commit@2", "after-commit@2", "after-ledger@2",
                                   "after-ledger@0"])
def test_resume_after_crash_point(toy_experiment, point) -> None:
    exp = toy_experiment({"default": "good"})
    assert finish(start(exp, crash_at=point)) == -signal.SIGKILL
    assert finish(start(exp)) == 0
    assert_exactly_once(exp, 3)


@pytest.mark.parametrize("point", ["before-rollback@2", "after-rollback@2"])
def test_resume_after_crash_during_rollback(toy_experiment, tmp_path, point) -> None:
    exp = toy_experiment({"default": "good", "2": "worse"})
    assert finish(start(exp, crash_at=point)) == -signal.SIGKILL
    assert finish(start(exp)) == 0
    assert_exactly_once(exp, 3)
    ledger = read_ledger(Experiment.locate(exp, "autoresearch-protocol.md"))
    assert next(r for r in ledger.rows if r.round == 2).verdict == "rolled_back"
    # The decided round was finished, not redone: one researcher run, the attempt archived.
    assert (tmp_path / "briefs.log").read_text().count("=== round 2\n") == 1
    assert git(exp, "show", "refs/spml/attempts/2:exp/params.yaml") == "x: -5.0"


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, "supervisor ended before the marker appeared"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_external_kill_during_researcher_kills_orphan_and_redoes_round(toy_experiment,
                                                                       tmp_path) -> None:
    exp = toy_experiment({"default": "good", "2": "marker_sleep"})
    proc = start(exp)
    _wait_for(tmp_path / "researcher-2.started", proc)
    pid_file = Experiment.locate(exp, "x").round_dir(2) / "researcher.pid"
    orphan = json.loads(pid_file.read_text())["pid"]
    proc.kill()  # kill -9 while the researcher is mid-edit
    proc.wait()
    assert Path(f"/proc/{orphan}").exists()  # the researcher survived its supervisor
    (tmp_path / "plan.json").write_text(json.dumps({"default": "good"}))
    assert finish(start(exp)) == 0
    assert not Path(f"/proc/{orphan}").exists() or _is_zombie(orphan)
    assert_exactly_once(exp, 3)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_external_kill_during_training_kills_orphaned_training(toy_experiment, tmp_path) -> None:
    exp = toy_experiment({"default": "good", "2": "slow_train"})
    proc = start(exp)
    pid_file = Experiment.locate(exp, "x").state_dir / "train.pid"
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and _round_two_training(exp)):
        assert proc.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.05)
    trainer = json.loads(pid_file.read_text())["pid"]
    time.sleep(0.5)  # let train.py spawn its long-lived child
    proc.kill()
    proc.wait()
    assert Path(f"/proc/{trainer}").exists()
    (tmp_path / "plan.json").write_text(json.dumps({"default": "good"}))
    assert finish(start(exp)) == 0
    assert not Path(f"/proc/{trainer}").exists() or _is_zombie(trainer)
    assert not _sleepers()
    assert_exactly_once(exp, 3)


def _round_two_training(exp: Path) -> bool:
    return (Experiment.locate(exp, "x").round_dir(2) / "train-0.stdout.log").exists()


def _sleepers() -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"time.sleep(300)" in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in found if not _is_zombie(pid)]


def test_git_config_tampering_is_undone_by_recovery_after_a_crash(toy_experiment,
                                                                  tmp_path) -> None:
    exp = toy_experiment({"default": "good", "2": "config_then_die"})
    config = exp.parent / ".git" / "config"
    before = config.read_text()
    proc = start(exp)
    _wait_for(tmp_path / "researcher-2.started", proc)
    proc.kill()  # the supervisor dies before it could check the round
    proc.wait()
    assert "hide" in config.read_text()
    (tmp_path / "plan.json").write_text(json.dumps({"default": "good"}))
    assert finish(start(exp)) == 0
    assert config.read_text() == before
    assert_exactly_once(exp, 3)
