"""kill -9 of a Prefect-free supervisor (`tests/helpers.py` as a subprocess) at the moments
`test_resume.py` does not cover, then a rerun: every round exactly once, nothing left behind.
Also a stop request while the researcher works: the round is aborted, not recorded."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from fixtures.loop_steps.stepkit import (
    BRANCH,
    PROJECT,
    experiment,
    ledger,
    make_experiment,
    status,
    tip,
)
from helpers import attempt_ref, drive, git
from optuna.trial import TrialState

from spml.toolkit.loop import control
from spml.toolkit.loop.ledger import read_journal
from spml.toolkit.loop.measurement import load_measurement
from spml.toolkit.loop.researchers.optuna_search import STUDY_NAME
from spml.toolkit.process.sandbox import unavailable_reason

HELPERS = Path(__file__).parents[2] / "helpers.py"


def start(exp: Path, crash_at: str = "") -> subprocess.Popen:
    env = {**os.environ, "SPML_CRASH_AT": crash_at}
    return subprocess.Popen([sys.executable, str(HELPERS), str(exp)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen) -> int:
    out, _ = proc.communicate(timeout=120)
    if proc.returncode not in (0, -signal.SIGKILL):
        print(out.decode(errors="replace"))
    return proc.returncode


def committed_rounds(exp: Path) -> Counter:
    """Round number -> how many loop commits on the branch name it."""
    subjects = str(git(exp, "log", "--format=%s", BRANCH)).splitlines()
    found = (re.match(r"autoresearch: round (\d+) — ", s) for s in subjects)
    return Counter(int(m[1]) for m in found if m)


def assert_exactly_once(exp: Path, max_rounds: int = 2) -> None:
    rows = ledger(exp).rows
    assert [r.round for r in rows] == list(range(max_rounds + 1))
    assert ledger(exp).status == "completed"
    kept = {r.round for r in rows if r.verdict == "committed" and r.round > 0}
    assert committed_rounds(exp) == Counter(kept)
    assert status(exp) == ""
    assert read_journal(experiment(exp)) is None
    assert git(exp, "diff", "--quiet", "main", BRANCH, "--", "exp/train.py", "exp/evaluate.py",
               check=False) == 0


def researcher_runs(tmp_path: Path) -> Counter:
    """Runs of the scripted researcher per round (one `=== round N` line each in briefs.log)."""
    log = (tmp_path / "briefs.log").read_text()
    return Counter(int(n) for n in re.findall(r"^=== round (\d+)$", log, flags=re.MULTILINE))


def is_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_kill_before_the_snapshot_redoes_the_round(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, max_rounds=2)

    assert finish(start(exp, "begin-before-snapshot@2")) == -signal.SIGKILL

    journal = read_journal(experiment(exp))
    assert journal is not None
    assert (journal.round, journal.phase, journal.base) == (2, "started", tip(exp))
    assert not (experiment(exp).round_dir(2) / "git-snapshot.json").exists()
    assert [r.round for r in ledger(exp).rows] == [0, 1]
    assert finish(start(exp)) == 0
    assert_exactly_once(exp)
    assert researcher_runs(tmp_path) == Counter({1: 1, 2: 1})


def test_kill_after_measuring_redoes_the_round(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, max_rounds=2)

    assert finish(start(exp, "after-measure@2")) == -signal.SIGKILL

    measured = load_measurement(experiment(exp).round_dir(2))
    assert measured is not None
    assert measured.ok  # measured, not decided
    assert read_journal(experiment(exp)).phase == "started"
    assert [r.round for r in ledger(exp).rows] == [0, 1]
    assert committed_rounds(exp) == Counter({1: 1})
    assert finish(start(exp)) == 0
    assert_exactly_once(exp)
    assert researcher_runs(tmp_path) == Counter({1: 1, 2: 2})  # round 2 was redone


def _group_gone(pgid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sandbox", ["off", "auto"])
def test_kill_during_evaluation_kills_the_orphaned_eval(tmp_path: Path, sandbox: str) -> None:
    if sandbox == "auto" and unavailable_reason():
        pytest.skip(f"no sandbox here: {unavailable_reason()}")
    exp = make_experiment(tmp_path, max_rounds=2, eval_plan={"2": {"eval_sleep": 60}},
                          sandbox={"mode": sandbox})
    eval_pid = experiment(exp).state_dir / "eval.pid"
    eval_log = experiment(exp).round_dir(2) / "eval-0.stdout.log"
    proc = start(exp)
    deadline = time.monotonic() + 60
    while not (eval_log.exists() and eval_pid.exists()):
        assert proc.poll() is None, "the supervisor ended before round 2 evaluated"
        assert time.monotonic() < deadline, "round 2's eval never started (60 s)"
        time.sleep(0.05)
    orphan = json.loads(eval_pid.read_text())["pid"]
    proc.kill()
    proc.wait()
    if sandbox == "off":
        assert not is_gone(orphan)  # the eval outlived its supervisor
    else:  # bwrap (--die-with-parent) takes its whole group down with the supervisor
        assert _group_gone(orphan)
    (tmp_path / "eval-plan.json").write_text("{}")

    assert finish(start(exp)) == 0

    assert is_gone(orphan)
    assert not eval_pid.exists()
    assert_exactly_once(exp)
    assert researcher_runs(tmp_path) == Counter({1: 1, 2: 2})


def test_kill_after_the_commit_with_the_optuna_researcher(tmp_path: Path) -> None:
    space = {"x": {"type": "float", "low": 0.0, "high": 6.0}}
    exp = make_experiment(tmp_path, max_rounds=2,
                          researcher={"kind": "optuna", "params_file": "params.yaml",
                                      "sampler": "random", "seed": 0, "space": space})
    storage = f"sqlite:///{experiment(exp).state_dir / 'optuna.db'}"

    assert finish(start(exp, "after-commit@1")) == -signal.SIGKILL

    assert committed_rounds(exp) == Counter({1: 1})  # any x in (0, 6) beats x = 0
    at_crash = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    assert [t.state for t in at_crash.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert finish(start(exp)) == 0

    assert_exactly_once(exp)
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert [t.user_attrs["round"] for t in study.trials] == [0, 1, 2]
    results = {r.round: r.result for r in ledger(exp).rows}
    assert {t.user_attrs["round"]: t.value for t in study.trials} == results
    assert study.trials[0].params == {"x": 0.0}  # the baseline seeded the study


def test_a_stop_request_while_the_researcher_works_aborts_the_round(tmp_path: Path) -> None:
    marker = tmp_path / "researcher-working"
    command = f"{sys.executable} {PROJECT / 'wait_for_stop.py'} {marker} 2"
    exp = make_experiment(tmp_path, researcher={"kind": "command", "command": command,
                                                "timeout": 60})

    def stop_when_working() -> None:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        control.request_stop(experiment(exp), "stop requested by the test")

    stopper = threading.Thread(target=stop_when_working, daemon=True)
    stopper.start()
    final = drive(exp)
    stopper.join(timeout=5)

    assert marker.read_text() == "2"
    assert final.status == "stopped"
    assert [r.round for r in final.rows] == [0, 1]  # round 2 was aborted, not recorded
    assert ledger(exp).status == "stopped"
    assert committed_rounds(exp) == Counter({1: 1})
    assert git(exp, "show", f"{BRANCH}:exp/params.yaml") == "x: 2.0"
    assert git(exp, "rev-parse", "--verify", "--quiet", attempt_ref(exp, 2),
               check=False) != 0
    assert status(exp) == ""
    # The researcher's stash is undone with the round (refs restored from the snapshot).
    assert git(exp, "rev-parse", "--verify", "--quiet", "refs/stash", check=False) != 0
    assert read_journal(experiment(exp)) is None
    assert control.stop_requested(experiment(exp)) is None  # acknowledged
