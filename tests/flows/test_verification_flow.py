"""The verification flow and the experiment flow on a real Prefect server, real loops, real git.

The toy experiment (tests/fixtures/toy) trains ``loss = (x - 3)^2``: the baseline x=0 gives 9,
the scripted researcher's first "good" change gives 1, so the verdict is known in advance.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from helpers import FIXTURES, git

from spml.errors import ProtocolError
from spml.flows.autoresearch import autoresearch_flow
from spml.flows.experiment import experiment_flow
from spml.flows.verification import ARTIFACT_KEY, verification_flow
from spml.protocols.autoresearch import PROTOCOL_FILENAME
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.pipeline.reentry import next_stage
from spml.toolkit.verification import experiment as verifying
from spml.toolkit.verification.report import read_report
from spml.toolkit.verification.subject import find_subject

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _finished_loop(unique_experiment, **overrides):
    exp = unique_experiment({"default": "good"}, max_rounds=1, **overrides)
    assert autoresearch_flow(str(exp), return_state=True).is_completed()
    return exp


def test_verification_re_measures_both_arms_and_commits_its_report(unique_experiment,
                                                                   run_artifact):
    exp = _finished_loop(unique_experiment)
    state = verification_flow(str(exp), runs=3, return_state=True)
    result = state.result()
    assert result["verdict"] == "effective"
    front = read_report(exp / "verification.md")
    assert front["verdict"] == "effective"
    assert front["estimate"] == pytest.approx(8.0)  # 9 - 1, oriented: positive is better
    assert front["interval"] == [pytest.approx(8.0), pytest.approx(8.0)]  # no noise at all
    assert front["n"] == {"baseline": 3, "chosen": 3}
    assert front["baseline_commit"] != front["chosen_commit"]
    assert set(front["checklist"].values()) <= {"pass", "unknown"}
    assert (exp / "verification.png").read_bytes().startswith(PNG_MAGIC)
    text = (exp / "verification.md").read_text()
    assert "| chosen | " in text
    assert "| 20001 | 1 |" in text
    log = git(exp, "log", "-1", "--format=%s%n%b", "--name-only")
    assert log.startswith("experiment: verification — effective")
    assert "verification.md" in log
    assert "verification.png" in log
    artifact = run_artifact(state.state_details.flow_run_id, ARTIFACT_KEY)
    assert "# Verification — effective" in artifact.data
    assert "data:image/png;base64," in artifact.data
    assert next_stage(exp).stage == "done"
    assert "autoresearch-verify" not in git(exp, "worktree", "list")  # the bench is removed

    # The fresh runs are saved: measuring an arm again reuses them (no new training).
    # A second verification with fewer runs measures (and reports) fewer, tampering nothing.
    again = verification_flow(str(exp), runs=2)
    assert again["verdict"] == "effective"
    assert read_report(exp / "verification.md")["n"] == {"baseline": 2, "chosen": 2}


FORGE = """import json, os, pathlib, runpy, sys
runpy.run_path("train.py")
saved = pathlib.Path({saved!r})
if os.environ["SPML_SEED"] == "20001" and "x: 0" not in open("params.yaml").read():
    data = json.loads(saved.read_text())  # the chosen arm makes the baseline look terrible
    for seed in data["seeds"]:
        seed["metrics"]["loss"] = 999.0
    saved.write_text(json.dumps(data))
"""


def test_trained_code_that_rewrites_the_other_arms_runs_is_caught(unique_experiment):
    exp = unique_experiment({"default": "good"}, max_rounds=1,
                            train_command=f"{sys.executable} forge.py")
    state_dir = Experiment.locate(exp, PROTOCOL_FILENAME).state_dir
    (exp / "forge.py").write_text(FORGE.format(saved=str(state_dir / "verify" /
                                                         "baseline.json")))
    git(exp, "add", "forge.py")
    git(exp, "commit", "-qm", "a training wrapper")
    assert autoresearch_flow(str(exp), return_state=True).is_completed()
    result = verification_flow(str(exp), runs=2)
    assert result["verdict"] == "inconclusive"  # the statistics alone say effective
    assert result["checklist"]["anomalies reviewed"] == "fail"
    text = (exp / "verification.md").read_text()
    assert "the baseline arm's saved runs were rewritten while the code ran" in text
    assert "| baseline | " in text
    assert "999.0" not in text  # the report used the supervisor's own copy
    saved = json.loads((state_dir / "verify" / "baseline.json").read_text())
    # put back: the saved runs say what the report says
    assert [seed["metrics"]["loss"] for seed in saved["seeds"]] == [9.0, 9.0]


def test_a_stale_or_uncommitted_report_is_not_done(unique_experiment):
    exp = unique_experiment({"default": "good"}, max_rounds=2)
    autoresearch_flow(str(exp), max_rounds=1)
    verification_flow(str(exp), runs=2)
    assert next_stage(exp).stage == "done"
    autoresearch_flow(str(exp), max_rounds=2)  # the loop runs on: its best moves
    nxt = next_stage(exp)
    assert nxt.stage == "verify"
    assert "verification.md judged" in nxt.why
    assert "but the loop's best is now" in nxt.why
    verification_flow(str(exp), runs=2)
    assert next_stage(exp).stage == "done"
    (exp / "verification.md").write_text((exp / "verification.md").read_text() + "\nnote\n")
    assert next_stage(exp).stage == "done"  # a person's note on a committed report is theirs
    first = git(exp, "rev-list", "HEAD", "--", "verification.md").split()[-1]
    git(exp, "reset", "-q", "--mixed", f"{first}~1")  # as if killed before the first commit
    nxt = next_stage(exp)
    assert nxt.stage == "verify"
    assert nxt.why.startswith("verification.md is not committed")


def test_a_deleted_loop_branch_is_refused_not_read_as_no_change(unique_experiment):
    exp = _finished_loop(unique_experiment)
    branch = Experiment.locate(exp, PROTOCOL_FILENAME).branch("autoresearch")
    worktree = next(line.split()[0] for line in git(exp, "worktree", "list").splitlines()
                    if branch in line)
    git(exp, "worktree", "remove", "--force", worktree)
    git(exp, "branch", "-D", branch)
    with pytest.raises(ProtocolError, match=f"the loop's branch {branch} is gone"):
        find_subject(exp)


def test_a_loop_that_kept_nothing_is_ineffective(unique_experiment):
    exp = unique_experiment({"default": "worse"}, max_rounds=1)
    autoresearch_flow(str(exp))
    result = verification_flow(str(exp), runs=2)
    assert result["verdict"] == "ineffective"
    assert "kept no change" in result["reason"]


def test_verification_refuses_what_it_cannot_judge(unique_experiment, tmp_path):
    exp = unique_experiment({"default": "good"}, max_rounds=1)
    with pytest.raises(ProtocolError, match="no loop was opened in .*run `spml autoresearch "
                                            "run` first"):
        find_subject(exp)
    watchdog = tmp_path / "watched"
    watchdog.mkdir()
    (watchdog / "experiment-context.md").write_text("# context\n")
    with pytest.raises(ProtocolError, match="ran under the watchdog.*spml verify --baseline"):
        find_subject(watchdog)
    with pytest.raises(ProtocolError, match="runs must be >= 2"):
        verification_flow(str(exp), runs=1)


def test_verification_waits_for_the_loop_to_finish(unique_experiment):
    exp = _finished_loop(unique_experiment)
    ledger = exp / "experiences.md"
    ledger.write_text(ledger.read_text().replace("status: completed", "status: interrupted"))
    with pytest.raises(ProtocolError, match="loop in .* is interrupted: verification judges "
                                            "a finished loop; run `spml autoresearch run"):
        find_subject(exp)


def test_experiment_flow_continues_from_the_loop_to_done(unique_experiment):
    exp = unique_experiment({"default": "good"}, max_rounds=1)
    state = experiment_flow(str(exp), verify_runs=2, until="verify", return_state=True)
    assert state.is_completed()
    data = state.result()
    assert [s["stage"] for s in data["stages"]] == ["run"]
    assert data["next"] == "verify"
    # Continuing: the loop's lock was released by its own flow, verification takes it again.
    state = experiment_flow(str(exp), verify_runs=2, return_state=True)
    data = state.result()
    assert [s["stage"] for s in data["stages"]] == ["verify"]
    assert data["stages"][0]["outcome"].startswith("effective")
    assert data["next"] == "done"
    assert state.message.startswith("next: done")


def test_experiment_flow_stops_for_a_person_at_revise(tmp_path):
    (tmp_path / "plans").mkdir()
    plans = tmp_path / "plans"
    shutil.copy(FIXTURES / "design" / "good-design.md", plans / "2026-12-05-x-design.md")
    shutil.copy(FIXTURES / "plan" / "good-plan.md", plans / "2026-12-05-x.md")
    (tmp_path / "train.py").write_text("print('code that predates the plan')\n")
    state = experiment_flow(str(tmp_path), return_state=True)
    assert state.is_failed()
    assert "a person revises the design first" in state.message
    assert state.result(raise_on_failure=False)["stages"] == []


def test_cli_verify_killed_mid_run_starts_over_and_commits_once(unique_experiment,
                                                               prefect_api_url):
    exp = _finished_loop(unique_experiment)
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url,
           "SPML_CRASH_AT": "chosen-before-seed-20001"}
    command = [sys.executable, "-m", "spml", "experiment", "verify", str(exp), "--runs", "2"]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    subject = find_subject(exp)
    saved = {p.name for p in verifying.verify_dir(subject).glob("*.json")}
    assert saved == {"baseline.json", "chosen.json"}  # both runs of baseline, one of chosen
    assert not (exp / "verification.md").exists()
    assert "verification" not in git(exp, "log", "--format=%s")
    assert "autoresearch-verify" in git(exp, "worktree", "list")  # the kill left the bench
    # What the trained code could have written meanwhile is no evidence: forge a saved file.
    forged = verifying.verify_dir(subject) / "baseline.json"
    forged.write_text(forged.read_text().replace('"loss": 9.0', '"loss": 999.0'))

    del env["SPML_CRASH_AT"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[:2] == ["effective", "improvement: +8 (positive is better)"]
    front = read_report(exp / "verification.md")
    assert front["n"] == {"baseline": 2, "chosen": 2}  # every run measured again
    subjects = git(exp, "log", "--format=%s").splitlines()
    assert subjects.count("experiment: verification — effective") == 1
    assert git(exp, "status", "--porcelain", "--", ".") == ""
    assert "autoresearch-verify" not in git(exp, "worktree", "list")
    assert "autoresearch-verify" not in git(exp, "branch", "--list", "--all")
