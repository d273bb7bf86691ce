"""kill -9 of the supervisor at several points, then a restart: every round exactly once.

The supervisor here is `tests/helpers.py` run as a real subprocess (the flow's steps without
Prefect); `tests/flows/test_cli_resume.py` repeats the key case through the real CLI + flow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import attempt_ref, git

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


def researcher_runs(tmp_path: Path) -> Counter:
    """How many times the fixture researcher ran each round (it appends one `=== round N` line
    per run to briefs.log beside the plan)."""
    log = (tmp_path / "briefs.log").read_text()
    return Counter(int(n) for n in re.findall(r"^=== round (\d+)$", log, flags=re.MULTILINE))


def round_commits(exp: Path) -> dict[int, str]:
    """{round: sha} of the loop's commits on the branch ({} before the branch exists)."""
    found: dict[int, str] = {}
    if git(exp, "rev-parse", "--verify", "--quiet", BRANCH, check=False) != 0:
        return found
    for line in git(exp, "log", "--format=%H %s", BRANCH).splitlines():
        sha, _, subject = line.partition(" ")
        if match := re.match(r"autoresearch: round (\d+) — ", subject):
            found[int(match[1])] = sha
    return found


@pytest.mark.parametrize(("point", "committed_at_crash", "redone"), [
    # Killed before the commit: nothing to keep, so round 2 is rolled back and redone.
    ("before-commit@2", [1], [2]),
    # The commit happened: recovery must record it, not redo the round (one researcher run).
    ("after-commit@2", [1, 2], []),
    ("after-ledger@2", [1, 2], []),
    ("after-ledger@0", [], []),
])
def test_resume_after_crash_point(toy_experiment, tmp_path, point, committed_at_crash,
                                  redone) -> None:
    exp = toy_experiment({"default": "good"})
    assert finish(start(exp, crash_at=point)) == -signal.SIGKILL
    at_crash = round_commits(exp)  # the branch right after the supervisor died
    assert sorted(at_crash) == committed_at_crash
    assert finish(start(exp)) == 0
    assert_exactly_once(exp, 3)
    runs = Counter({1: 1, 2: 1, 3: 1}) + Counter(redone)
    assert researcher_runs(tmp_path) == runs, "a round's researcher ran too often or not at all"
    after = round_commits(exp)
    assert sorted(after) == [1, 2, 3]
    # A commit made before the crash stays on the branch as it was: the same sha for its round.
    assert {r: after[r] for r in at_crash} == at_crash
    for sha in at_crash.values():
        assert git(exp, "merge-base", "--is-ancestor", sha, BRANCH, check=False) == 0


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
    assert git(exp, "show", f"{attempt_ref(exp, 2)}:exp/params.yaml") == "x: -5.0"


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
    # unconfined: bwrap would take the training down with its supervisor (its own pid
    # namespace; tests/toolkit/loop/test_crashes.py), and this is the path without it
    exp = toy_experiment({"default": "good", "2": "slow_train"}, sandbox={"mode": "off"})
    proc = start(exp)
    pid_file = Experiment.locate(exp, "x").state_dir / "train.pid"
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and _round_two_training(exp)):
        assert proc.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.05)
    record = json.loads(pid_file.read_text())
    trainer = record["pid"]
    # train.py's long-lived child (`time.sleep(300)`, same process group): wait until it runs.
    deadline = time.monotonic() + 60
    while not (sleepers := _sleepers(record["pgid"])):
        assert proc.poll() is None, "the supervisor ended before train.py started its child"
        assert time.monotonic() < deadline, "train.py's child never started (60 s)"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert Path(f"/proc/{trainer}").exists()
    assert all(not _is_zombie(pid) for pid in sleepers)  # both outlived their supervisor
    (tmp_path / "plan.json").write_text(json.dumps({"default": "good"}))
    assert finish(start(exp)) == 0
    assert not Path(f"/proc/{trainer}").exists() or _is_zombie(trainer)
    assert all(_is_zombie(pid) for pid in sleepers), "train.py's orphaned child survived"
    assert_exactly_once(exp, 3)


def _round_two_training(exp: Path) -> bool:
    return (Experiment.locate(exp, "x").round_dir(2) / "train-0.stdout.log").exists()


def _sleepers(pgid: int) -> list[int]:
    """Live `time.sleep(300)` processes (train.py's child) in process group ``pgid``."""
    found = []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            group = int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[2])
            if group == pgid and b"time.sleep(300)" in (proc_dir / "cmdline").read_bytes():
                found.append(int(proc_dir.name))
        except (OSError, IndexError, ValueError):
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
