"""ml-iteration end to end on real git repos and real subprocesses (no Prefect, no torch).

The fake project (`tests/fixtures/iteration/`) trains in a few milliseconds: `train.py` prints
`step=N loss=...` lines (plus `grad_norm=...` when `config.json` says so), sleeps, emits NaN
or a warning on request and writes `outputs/state.json`; the fixed `evaluate.py` prints
`acc: <value>` from it. The scripted researcher (kept outside the repo) merges a per-round plan
into `config.json` and appends its round number to a file outside the repo, so every test can
count researcher runs per round.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    attempt_ref,
    drive,
    git,
    iteration_experiment,
    iteration_protocol_fields,
    write_iteration_protocol,
)

from spml.errors import ProtocolError
from spml.protocols.experiences import ExperienceRow, Experiences
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.kind import ITERATION
from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.loop.lifecycle import open_loop
from spml.toolkit.loop.overrides import queue_override

TESTS = Path(__file__).parents[2]
FIXTURE = TESTS / "fixtures" / "iteration"
HELPERS = TESTS / "helpers.py"
PROTOCOL = "iteration-protocol.md"
KIND = "ml-iteration"
BRANCH = "spml/ml-iteration/exp"
BASE_CONFIG = json.loads((FIXTURE / "config.json").read_text())


def protocol_fields(tmp_path: Path, **protocol: Any) -> dict[str, Any]:
    return iteration_protocol_fields(tmp_path, **protocol)


def write_protocol(exp: Path, fields: dict[str, Any]) -> Path:
    return write_iteration_protocol(exp, fields)


@pytest.fixture
def make_experiment(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a git repo with the fake project in `exp/` (see `helpers.iteration_experiment`)."""

    def make(plan: dict[str, dict[str, Any]], config: dict[str, Any] | None = None,
             **protocol: Any) -> Path:
        return iteration_experiment(tmp_path, plan, config, **protocol)

    return make


def experiment(exp: Path) -> Experiment:
    return Experiment.locate(exp, PROTOCOL)


def ledger_of(exp: Path) -> Experiences:
    ledger = read_ledger(experiment(exp))
    assert ledger is not None
    return ledger


def row(exp: Path, round_no: int) -> ExperienceRow:
    """The round's own row (not a person's override row)."""
    rows = [r for r in ledger_of(exp).rows if r.round == round_no and not r.is_override]
    assert len(rows) == 1, rows
    return rows[0]


def verdicts(exp: Path) -> list[tuple[int, str]]:
    return [(r.round, r.verdict) for r in ledger_of(exp).rows]


def subjects(exp: Path) -> list[str]:
    return str(git(exp, "log", "--format=%s", BRANCH)).splitlines()


def branch_config(exp: Path, rev: str = BRANCH) -> dict[str, Any]:
    return json.loads(str(git(exp, "show", f"{rev}:exp/config.json")))


def researcher_runs(tmp_path: Path) -> Counter:
    path = tmp_path / "researcher-runs.txt"
    text = path.read_text() if path.exists() else ""
    return Counter(int(line) for line in text.split())


def worktree(exp: Path) -> Path:
    return experiment(exp).worktree_dir(KIND)


def assert_clean(exp: Path) -> None:
    wt = worktree(exp)
    assert git(wt, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(wt, "symbolic-ref", "HEAD") == f"refs/heads/{BRANCH}"
    assert not (experiment(exp).state_dir / "round.json").exists()
    assert git(exp, "rev-list", "--count", "main") == "1"  # the user's branch is untouched
    assert git(exp, "diff", "--quiet", "main", BRANCH, "--", "exp/evaluate.py",
               "exp/check.py", "exp/.gitignore", "exp/iteration-protocol.md", check=False) == 0


def is_ancestor(exp: Path, rev: str) -> bool:
    return git(exp, "merge-base", "--is-ancestor", rev, BRANCH, check=False) == 0


# --- 1..8: verdicts of single rounds -------------------------------------------------------


def test_fixing_observability_while_keeping_the_metric_is_committed(make_experiment,
                                                                   tmp_path) -> None:
    exp = make_experiment({"1": {"log_grad_norm": True}})
    ledger = drive(exp, kind=KIND)
    assert ledger.status == "completed"
    assert verdicts(exp) == [(0, "committed"), (1, "committed")]
    base, fixed = row(exp, 0), row(exp, 1)
    assert base.extra["Observability"] == "fail: missing per-step grad_norm"
    assert fixed.extra["Observability"] == "pass: per-step lines carry loss, grad_norm"
    assert fixed.extra["Metrics"] == "fail: acc=0.8 vs incumbent 0.8, noise margin 0.008; " \
        "needs acc >= 0.9"
    assert fixed.insight == "improved: now passing: observability; still failing: metrics.acc"
    assert fixed.strategy == "set log_grad_norm=True"
    assert subjects(exp) == ["ml-iteration: round 1 — set log_grad_norm=True", "fake project"]
    message = str(git(exp, "log", "-1", "--format=%B", BRANCH))
    assert "Spml-Round: 1" in message
    assert git(exp, "diff", "--name-only", f"{BRANCH}~1", BRANCH) == "exp/config.json"
    assert branch_config(exp)["log_grad_norm"] is True
    assert ledger.best_commit == str(git(exp, "rev-parse", BRANCH))[:12]
    assert researcher_runs(tmp_path) == Counter({1: 1})
    assert_clean(exp)


def test_faster_training_that_drops_the_metric_is_rolled_back(make_experiment) -> None:
    # The baseline is slow (fails train_time_s <= 1.2); round 1 is fast but acc 0.8 -> 0.5.
    exp = make_experiment({"1": {"sleep": 0, "acc": 0.5}}, config={"sleep": 1.6},
                          train_time_s=1.2)
    drive(exp, kind=KIND)
    assert verdicts(exp) == [(0, "committed"), (1, "rolled_back")]
    assert row(exp, 0).extra["Speed"].startswith("fail: train_time_s=")
    bad = row(exp, 1)
    assert bad.extra["Speed"].startswith("pass: train_time_s=")  # the speed-up was real
    assert bad.extra["Metrics"].startswith("regressed: acc=0.5 vs incumbent 0.8")
    assert bad.insight.startswith("regressed: metrics.acc (acc=0.5 vs incumbent 0.8")
    assert subjects(exp) == ["fake project"]
    assert branch_config(exp) == BASE_CONFIG | {"sleep": 1.6}
    attempt = attempt_ref(exp, 1, PROTOCOL)
    assert branch_config(exp, attempt)["acc"] == 0.5
    assert not is_ancestor(exp, attempt)
    assert_clean(exp)


def test_breaking_the_time_criterion_is_rolled_back(make_experiment) -> None:
    exp = make_experiment({"1": {"sleep": 2.5}}, train_time_s=1.5)
    drive(exp, kind=KIND)
    assert verdicts(exp) == [(0, "committed"), (1, "rolled_back")]
    assert row(exp, 0).extra["Speed"].startswith("pass: train_time_s=")
    slow = row(exp, 1)
    assert slow.extra["Speed"].startswith("regressed: train_time_s=")
    assert "no longer meets train_time_s <= 1.5" in slow.extra["Speed"]
    assert slow.insight.startswith("regressed: performance.train_time_s (train_time_s=")
    assert subjects(exp) == ["fake project"]
    assert branch_config(exp, attempt_ref(exp, 1, PROTOCOL))["sleep"] == 2.5
    assert_clean(exp)


def test_noise_level_change_is_committed_with_a_note(make_experiment) -> None:
    exp = make_experiment({"1": {"acc": 0.803}})
    drive(exp, kind=KIND)
    assert verdicts(exp) == [(0, "committed"), (1, "committed_with_note")]
    noisy = row(exp, 1)
    assert noisy.extra["Metrics"] == ("fail: acc=0.803 vs incumbent 0.8, noise margin 0.008; "
                                      "needs acc >= 0.9")
    assert noisy.insight == ("no criterion moved beyond noise; still failing: metrics.acc, "
                             "observability")
    assert noisy.result == pytest.approx(0.803)
    assert subjects(exp)[0] == "ml-iteration: round 1 — set acc=0.803"
    assert branch_config(exp)["acc"] == 0.803
    assert_clean(exp)


def test_touching_a_locked_file_is_a_compliance_violation(make_experiment) -> None:
    exp = make_experiment({"1": {"acc": 0.95, "log_grad_norm": True, "_edit_fixed": True}})
    fixed_before = (exp / "evaluate.py").read_bytes()
    drive(exp, kind=KIND)
    assert verdicts(exp) == [(0, "committed"), (1, "rolled_back")]
    bad = row(exp, 1)
    assert bad.insight.startswith("compliance:")
    assert "modified fixed file evaluate.py" in bad.insight
    assert bad.extra["Metrics"] == ""  # never trained nor evaluated
    assert not (experiment(exp).round_dir(1) / "train-0.stdout.log").exists()
    assert subjects(exp) == ["fake project"]
    assert (worktree(exp) / "exp" / "evaluate.py").read_bytes() == fixed_before
    assert "tampered" in str(git(exp, "show", f"{attempt_ref(exp, 1, PROTOCOL)}:exp/evaluate.py"))
    assert_clean(exp)


def test_override_rollback_reverts_a_committed_round(make_experiment, tmp_path) -> None:
    exp = make_experiment({"1": {"log_grad_norm": True}, "2": {"acc": 0.85}})
    drive(exp, max_rounds=1, kind=KIND)
    assert verdicts(exp) == [(0, "committed"), (1, "committed")]
    round_one = str(git(exp, "rev-parse", BRANCH))
    queue_override(experiment(exp), 1, "rollback")
    ledger = drive(exp, max_rounds=2, kind=KIND)
    assert verdicts(exp) == [(0, "committed"), (1, "committed"), (1, "override: rollback"),
                             (2, "committed")]
    assert ledger.kept_rounds() == [0, 2]
    log = subjects(exp)
    assert log == ["ml-iteration: round 2 — set acc=0.85",
                   "ml-iteration: override — revert round 1",
                   "ml-iteration: round 1 — set log_grad_norm=True", "fake project"]
    revert = str(git(exp, "rev-parse", f"{BRANCH}~1"))
    override = next(r for r in ledger.rows if r.is_override)
    assert override.insight.endswith(f"reverted round 1 as {revert[:7]}")
    assert str(git(exp, "log", "-1", "--format=%B", revert)).count("Spml-Override: ") == 1
    assert str(git(exp, "rev-parse", f"{revert}~1")) == round_one
    # Round 1's change is undone: the revert's tree is the baseline's, round 2 built on it.
    assert json.loads(str(git(exp, "show", f"{revert}:exp/config.json"))) == BASE_CONFIG
    assert branch_config(exp) == BASE_CONFIG | {"acc": 0.85}
    assert json.loads((worktree(exp) / "exp" / "config.json").read_text())[
        "log_grad_norm"] is False
    # Judged against the baseline (HEAD's measured tree after the revert), not round 1.
    assert row(exp, 2).extra["Observability"] == "fail: missing per-step grad_norm"
    assert row(exp, 2).insight.startswith("improved: metrics.acc (acc=0.85 vs incumbent 0.8")
    assert not list((experiment(exp).state_dir / "overrides" / "inbox").glob("*.json"))
    assert researcher_runs(tmp_path) == Counter({1: 1, 2: 1})
    assert_clean(exp)


def test_override_that_conflicts_with_later_rounds_is_refused(make_experiment) -> None:
    plan: dict[str, dict[str, Any]] = {str(n): {"_edit_fixed": True} for n in range(2, 10)}
    plan |= {"1": {"log_grad_norm": True}, "10": {"acc": 0.85}, "11": {"acc": 0.86}}
    exp = make_experiment(plan, max_rounds=10)  # rounds 2..9: cheap compliance rollbacks
    drive(exp, kind=KIND)
    assert [r.round for r in ledger_of(exp).rows if r.verdict == "committed"] == [0, 1, 10]
    before = subjects(exp)
    queue_override(experiment(exp), 1, "rollback")
    drive(exp, max_rounds=11, kind=KIND)
    # Round 1's commit is found (not round 10's); its revert conflicts with round 10, which
    # edited the neighbouring line of config.json, so the override is refused with a row and
    # the branch gains no revert commit.
    override = [r for r in ledger_of(exp).rows if r.is_override]
    assert [(r.round, r.verdict) for r in override] == [(1, "override: rollback")]
    assert "refused: the change of" in override[0].insight
    assert "does not apply cleanly" in override[0].insight
    assert not any("override" in s for s in subjects(exp))
    assert subjects(exp)[1:] == before
    assert branch_config(exp) == BASE_CONFIG | {"log_grad_norm": True, "acc": 0.86}


def test_all_criteria_passing_stops_the_loop(make_experiment, tmp_path) -> None:
    exp = make_experiment({"1": {"acc": 0.95, "log_grad_norm": True, "ckpt": True},
                           "2": {"acc": 0.99}}, max_rounds=3, custom=True)
    ledger = drive(exp, kind=KIND)
    assert ledger.status == "target_reached"
    assert verdicts(exp) == [(0, "committed"), (1, "committed")]
    assert ledger.rounds_done == 1
    assert row(exp, 0).extra["Custom"].startswith("fail: checkpoint exit 1")
    done = row(exp, 1)
    assert done.insight == "all criteria pass"
    assert {col: cell.split(":")[0] for col, cell in done.extra.items()} == {
        "Metrics": "pass", "Speed": "pass", "Observability": "pass", "Stability": "pass",
        "Custom": "pass"}
    assert done.extra["Custom"] == "pass: checkpoint exit 0"
    assert researcher_runs(tmp_path) == Counter({1: 1})
    assert len(subjects(exp)) == 2
    assert "status: target_reached" in (exp / "experiences.md").read_text()
    assert_clean(exp)


def test_eval_without_the_metric_fails_that_criterion_and_the_loop_goes_on(make_experiment,
                                                                           tmp_path) -> None:
    # The baseline printed acc: a round whose eval no longer prints it lost a number the
    # incumbent had, which is a regression (rolled back), not a plain failure.
    exp = make_experiment({"1": {"acc": None},
                           "2": {"acc": 0.95, "log_grad_norm": True}}, max_rounds=2)
    ledger = drive(exp, kind=KIND)
    silent = row(exp, 1)
    assert silent.extra["Metrics"] == ("regressed: acc eval printed no acc value; the incumbent "
                                       "had 0.8")
    assert "eval printed no acc" in (exp / "experiences.md").read_text()
    assert silent.result is None
    assert silent.verdict == "rolled_back"
    assert verdicts(exp) == [(0, "committed"), (1, "rolled_back"), (2, "committed")]
    assert ledger.status == "target_reached"
    assert researcher_runs(tmp_path) == Counter({1: 1, 2: 1})
    assert_clean(exp)


# --- 9: a malformed protocol ----------------------------------------------------------------


def test_malformed_criterion_is_refused_with_its_line(make_experiment, tmp_path) -> None:
    exp = make_experiment({})
    fields = protocol_fields(tmp_path)
    fields["review_criteria"]["metrics"] = ["loss / grad_norm"]
    text = write_protocol(exp, fields).read_text()
    line = next(n for n, t in enumerate(text.splitlines(), start=1) if "loss / grad_norm" in t)
    with pytest.raises(ProtocolError) as caught:
        open_loop(str(exp), None, ITERATION)
    message = str(caught.value)
    assert "review_criteria.metrics.0" in message
    assert f"(line {line})" in message
    assert "name op value" in message
    assert not (exp / "experiences.md").exists()
    assert git(exp, "rev-parse", "--verify", "--quiet", BRANCH, check=False) != 0


# --- 10: kill -9 at each step, then resume: every round exactly once -----------------------


def supervise(exp: Path, crash_at: str = "") -> int:
    env = {**os.environ, "SPML_CRASH_AT": crash_at}
    proc = subprocess.run([sys.executable, str(HELPERS), str(exp), "", KIND], env=env,
                          capture_output=True, text=True, timeout=180)
    if proc.returncode not in (0, -signal.SIGKILL):
        print(proc.stdout, proc.stderr)
    return proc.returncode


@pytest.mark.parametrize(("point", "redone"), [
    ("before-commit@1", {1}),   # nothing kept yet: the round is undone and redone
    ("after-commit@1", set()),  # the commit happened: recorded, not redone
    ("after-ledger@1", set()),
    ("before-rollback@2", set()),  # decided: the rollback is finished, not redone
    ("after-rollback@2", set()),
    ("after-ledger@2", set()),
])
def test_kill_during_settle_resumes_each_round_exactly_once(make_experiment, tmp_path,
                                                             point, redone) -> None:
    exp = make_experiment({"1": {"log_grad_norm": True}, "2": {"acc": 0.5}}, max_rounds=2)
    assert supervise(exp, crash_at=point) == -signal.SIGKILL
    crashed_in = int(point.split("@")[1])
    assert max(researcher_runs(tmp_path)) == crashed_in
    round_one = "ml-iteration: round 1 — set log_grad_norm=True"
    at_crash = subjects(exp)
    assert (round_one in at_crash) == (point != "before-commit@1")
    kept_sha = str(git(exp, "rev-parse", BRANCH))
    assert supervise(exp) == 0
    if round_one in at_crash:  # a commit made before the kill stays: recorded, not redone
        assert str(git(exp, "rev-parse", BRANCH)) == kept_sha
    ledger = ledger_of(exp)
    assert ledger.status == "completed"
    assert verdicts(exp) == [(0, "committed"), (1, "committed"), (2, "rolled_back")]
    log = subjects(exp)
    assert [s for s in log if s.startswith("ml-iteration:")] == [round_one]
    assert not (experiment(exp).state_dir / "round.json").exists()
    assert researcher_runs(tmp_path) == Counter({1: 1, 2: 1}) + Counter(redone)
    assert branch_config(exp) == BASE_CONFIG | {"log_grad_norm": True}
    assert branch_config(exp, attempt_ref(exp, 2, PROTOCOL))["acc"] == 0.5
    assert not is_ancestor(exp, attempt_ref(exp, 2, PROTOCOL))
    assert row(exp, 2).insight.startswith("regressed: metrics.acc")
    assert_clean(exp)


# --- holes found by an adversarial review --------------------------------------------------


def test_unmeasured_head_is_measured_before_anything_is_judged(make_experiment) -> None:
    exp = make_experiment({"1": {"acc": 0.85}, "3": {"acc": 0.40}}, max_rounds=1)
    drive(exp, kind=KIND)
    # A hand-made commit on the loop branch: HEAD now holds code nobody measured.
    worktree = experiment(exp).worktree_dir("ml-iteration") / "exp"
    (worktree / "config.json").write_text(json.dumps({**BASE_CONFIG, "acc": 0.86}) + "\n")
    git(worktree, "commit", "-qam", "by hand")
    drive(exp, max_rounds=3, kind=KIND)
    remeasured = row(exp, 2)
    assert (remeasured.strategy, remeasured.verdict) == ("re-measured HEAD", "committed")
    assert "held code nobody measured" in remeasured.insight
    assert remeasured.result == pytest.approx(0.86)
    # Round 3 (0.86 -> 0.40) is judged against the measured HEAD, not committed blindly.
    assert row(exp, 3).verdict == "rolled_back"
    assert "metrics.acc" in row(exp, 3).insight
    assert subjects(exp)[0] == "by hand"


def test_an_override_the_researcher_queues_is_held_not_applied(make_experiment) -> None:
    exp = make_experiment({"1": {"acc": 0.5},
                           "2": {"log_grad_norm": True, "_forge_override": [1, "commit"]}},
                          max_rounds=3)
    drive(exp, kind=KIND)
    assert row(exp, 1).verdict == "rolled_back"
    assert not [r for r in ledger_of(exp).rows if r.is_override]
    assert "queued while the researcher ran: held" in row(exp, 2).note
    held = experiment(exp).state_dir / "overrides" / "held"
    assert [p.name for p in held.iterdir()] == ["99999999999999999999-1.json"]
    assert branch_config(exp)["acc"] == BASE_CONFIG["acc"]


def test_rewritten_measurements_are_restored_before_judging(make_experiment) -> None:
    exp = make_experiment({"1": {"acc": 0.85},
                           "2": {"acc": 0.5, "_forge_measurements": True}}, max_rounds=2)
    drive(exp, kind=KIND)
    forged = row(exp, 2)
    assert forged.verdict == "rolled_back"
    assert "modified supervisor file measurement.json (restored)" in forged.insight
    kept = json.loads((experiment(exp).round_dir(1) / "measurement.json").read_text())
    assert kept["seeds"][0]["metrics"]["acc"] == pytest.approx(0.85)


def test_a_round_that_changes_nothing_is_not_committed(make_experiment) -> None:
    exp = make_experiment({"1": {}}, max_rounds=1)
    drive(exp, kind=KIND)
    assert row(exp, 1).verdict == "rolled_back"
    assert row(exp, 1).insight.startswith("no change")
    assert subjects(exp) == ["fake project"]


def test_a_rolled_back_commit_can_be_brought_back(make_experiment) -> None:
    # Rounds 2 and 3 change nothing (rolled back), so the revert is the tip each time.
    exp = make_experiment({"1": {"log_grad_norm": True}, "2": {}, "3": {}})
    drive(exp, max_rounds=1, kind=KIND)
    queue_override(experiment(exp), 1, "rollback")
    drive(exp, max_rounds=2, kind=KIND)
    queue_override(experiment(exp), 1, "commit")
    drive(exp, max_rounds=3, kind=KIND)
    overrides = [r for r in ledger_of(exp).rows if r.is_override]
    assert [r.verdict for r in overrides] == ["override: rollback", "override: commit"]
    assert "re-applied round 1" in overrides[1].insight
    assert branch_config(exp)["log_grad_norm"] is True
    assert ledger_of(exp).kept_rounds() == [0, 1]
    assert subjects(exp)[:2] == ["ml-iteration: override — re-apply round 1",
                                 "ml-iteration: override — revert round 1"]
    assert row(exp, 3).insight.startswith("no change")  # judged against round 1's state


def test_a_ledger_that_lost_rows_is_refused(make_experiment) -> None:
    exp = make_experiment({"1": {"acc": 0.85}}, max_rounds=1)
    drive(exp, kind=KIND)
    path = experiment(exp).ledger_path
    path.write_text("\n".join(line for line in path.read_text().splitlines()
                              if not line.startswith("| 1 |")) + "\n")
    with pytest.raises(ProtocolError, match="experiences.md records 0 round.*round 1"):
        open_loop(str(exp), 2, ITERATION)


def test_an_old_auto_research_state_folder_is_another_kind(make_experiment) -> None:
    exp = make_experiment({})
    (exp / ".spml").mkdir()
    (exp / ".spml" / "session.json").write_text("{}")
    with pytest.raises(ProtocolError, match="already holds an Auto Research experiment"):
        open_loop(str(exp), 1, ITERATION)


def test_a_new_package_may_not_shadow_a_fixed_module(make_experiment) -> None:
    # Every file not fixed may be edited, but `evaluate/__init__.py` would shadow evaluate.py.
    exp = make_experiment({"1": {"acc": 0.85, "_write": {"evaluate/__init__.py": "x = 1\n"}}})
    drive(exp, kind=KIND)
    assert row(exp, 1).verdict == "rolled_back"
    assert "file evaluate/__init__.py would shadow module evaluate" in row(exp, 1).insight


def test_the_protocol_is_guarded_only_while_the_researcher_runs(make_experiment) -> None:
    from spml.toolkit.loop.begin import begin_round
    from spml.toolkit.loop.compliance import check_round

    exp = make_experiment({})
    session = open_loop(str(exp), 1, ITERATION)
    _, plan = begin_round(session, 1)
    path = exp / PROTOCOL
    edited = path.read_text().replace("max_rounds: 1", "max_rounds: 4")
    path.write_text(edited)
    assert check_round(session, plan, after_researcher=False) == []  # the person's edit
    assert path.read_text() == edited
    assert check_round(session, plan, after_researcher=True) == []  # held, not blamed
    assert "max_rounds: 1" in path.read_text()  # restored
    held = experiment(exp).round_dir(1) / "held-protocol.md"
    assert held.read_text() == edited


def test_repeats_give_per_seed_records_and_the_baseline_names_what_fails(make_experiment
                                                                         ) -> None:
    exp = make_experiment({"1": {"acc": 0.85}}, repeats=2)
    drive(exp, kind=KIND)
    baseline = row(exp, 0)
    assert baseline.insight == ("baseline measured on the base commit; failing: metrics.acc, "
                                "observability")
    assert (baseline.result, baseline.result_text) == (pytest.approx(0.8), "")
    record = json.loads((experiment(exp).round_dir(1) / "measurement.json").read_text())
    assert [s["seed"] for s in record["seeds"]] == [0, 1]
    assert row(exp, 1).verdict == "committed"
