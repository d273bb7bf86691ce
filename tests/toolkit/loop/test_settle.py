"""S5 `decide` and `settle` on a real git repo: every kind of ledger row, the commit with its
trailer, the archived attempt and the rollback, and a failed baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.loop_steps.stepkit import (
    BRANCH,
    experiment,
    full_round,
    ledger,
    load,
    make_experiment,
    open_and_baseline,
    research,
    row,
    status,
    tip,
    worktree,
)
from helpers import attempt_ref, git

from spml.errors import BaselineFailed
from spml.toolkit.loop.begin import begin_round
from spml.toolkit.loop.compliance import Violation
from spml.toolkit.loop.ledger import read_journal
from spml.toolkit.loop.lifecycle import open_loop
from spml.toolkit.loop.measure import measure
from spml.toolkit.loop.researchers import Proposal
from spml.toolkit.loop.settle import decide, settle


def test_baseline_round_is_committed_without_a_commit(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)

    outcome = open_and_baseline(exp)

    r = outcome.row
    assert (r.round, r.compliance, r.verdict, r.strategy) == (0, "pass", "committed", "baseline")
    assert r.result == pytest.approx(9.0)
    assert r.result_text == "9.0"
    assert r.insight == "baseline measured on the base commit"
    assert outcome.commit is None
    assert outcome.attempt_ref is None
    assert tip(exp) == git(exp, "rev-parse", "main")
    assert row(exp, 0).result == pytest.approx(9.0)
    assert read_journal(experiment(exp)) is None


def test_researcher_failure_is_not_applicable_and_rolled_back(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"1": "crash"})
    open_and_baseline(exp)
    base = tip(exp)
    session, plan, proposal, violations = research(exp, 1)
    assert not proposal.ok
    assert violations == []

    decided = decide(session, plan, proposal, violations, None)

    assert (decided.round, decided.compliance, decided.verdict) == (1, "n/a", "rolled_back")
    assert decided.result is None
    assert decided.insight.startswith("researcher crashed: exit 3")
    assert decided.strategy == "mode crash in round 1"
    outcome = settle(session, plan, decided)
    assert outcome.commit is None
    assert outcome.attempt_ref == git(exp, "rev-parse", attempt_ref(exp, 1))
    assert git(exp, "show", f"{attempt_ref(exp, 1)}:exp/params.yaml") == "x: 2.9"
    assert tip(exp) == base
    assert status(exp) == ""
    assert row(exp, 1).verdict == "rolled_back"


def test_violations_fail_compliance_and_name_every_cause(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"1": "edit_fixed"})
    open_and_baseline(exp)
    session, plan, proposal, violations = research(exp, 1)
    assert proposal.ok

    decided = decide(session, plan, proposal, violations, None)

    assert (decided.compliance, decided.verdict) == ("fail", "rolled_back")
    assert decided.insight == "compliance: modified fixed file evaluate.py"
    crashed = Proposal(False, "half done", "researcher crashed: exit 3")
    both = decide(session, plan, crashed, violations, None)
    assert (both.compliance, both.verdict) == ("fail", "rolled_back")
    assert both.insight == \
        "compliance: modified fixed file evaluate.py; researcher crashed: exit 3"
    twice = [Violation("a", "same reason"), Violation("b", "same reason")]
    assert decide(session, plan, proposal, twice, None).insight == "compliance: same reason"
    two = [Violation("a", "reason A"), Violation("b", "reason B"), Violation("c", "reason A")]
    assert decide(session, plan, proposal, two, None).insight == "compliance: reason A; reason B"
    settle(session, plan, decided)
    assert (worktree(exp) / "exp" / "evaluate.py").read_bytes() == \
        (exp / "evaluate.py").read_bytes()
    assert git(exp, "show", f"{attempt_ref(exp, 1)}:exp/evaluate.py").endswith("# tampered")


def test_violations_found_while_measuring_fail_compliance(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"1": "good"})
    open_and_baseline(exp)
    session, plan, proposal, violations = research(exp, 1)
    (worktree(exp) / "exp" / "params.yaml").write_text("x: 2.0\ntamper: true\n")
    measurement = measure(session, plan)
    assert measurement.violations

    decided = decide(session, plan, proposal, violations, measurement)

    assert (decided.compliance, decided.verdict) == ("fail", "rolled_back")
    assert decided.insight.startswith("compliance: fixed file exp/evaluate.py was modified "
                                      "during the round")
    assert decided.result is None


def test_an_unmeasured_round_passes_compliance_and_is_rolled_back(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"},
                          eval_plan={"1": {"eval_mode": "nan"}})
    open_and_baseline(exp)
    session, plan, proposal, violations = research(exp, 1)
    measurement = measure(session, plan)

    decided = decide(session, plan, proposal, violations, measurement)

    assert (decided.compliance, decided.verdict) == ("pass", "rolled_back")
    assert decided.insight == "eval reported loss=nan (not a finite number)"
    assert decided.result is None
    assert decided.strategy == "mode good in round 1"


def test_a_partial_measurement_is_not_a_result(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"}, acceptance={"repeats": 2})
    open_and_baseline(exp)
    session, plan, proposal, violations = research(exp, 1)
    (worktree(exp) / "exp" / "params.yaml").write_text("x: 2.0\ntrain_exit: 4\ncrash_seed: 1\n")
    measurement = measure(session, plan)
    assert measurement.mean == pytest.approx(1.0)  # seed 0 finished, seed 1 crashed

    decided = decide(session, plan, proposal, violations, measurement)

    assert (decided.compliance, decided.verdict, decided.result) == ("pass", "rolled_back", None)
    assert decided.insight.startswith("train crashed: exit 4")


def test_no_improvement_is_rolled_back_and_archived(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"1": "worse"})
    open_and_baseline(exp)
    base = tip(exp)

    outcome, measurement = full_round(exp, 1)

    r = outcome.row
    assert (r.compliance, r.verdict) == ("pass", "rolled_back")
    assert r.result == pytest.approx(64.0)
    assert r.insight == "not better than best 9 (delta +55)"
    assert outcome.commit is None
    assert tip(exp) == base
    assert status(exp) == ""
    assert (worktree(exp) / "exp" / "params.yaml").read_text() == "x: 0.0\n"
    attempt = git(exp, "rev-parse", attempt_ref(exp, 1))
    assert outcome.attempt_ref == attempt
    assert git(exp, "rev-parse", f"{attempt}^") == base
    assert git(exp, "rev-parse", f"{attempt}^{{tree}}") == measurement.tree
    assert git(exp, "log", "-1", "--format=%s", attempt) == \
        "spml attempt: round 1 — not better than best 9 (delta +55)"
    assert row(exp, 1).verdict == "rolled_back"
    assert read_journal(experiment(exp)) is None


def test_an_improvement_is_committed_with_the_round_trailer(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"1": "good"})
    open_and_baseline(exp)
    base = tip(exp)

    outcome, measurement = full_round(exp, 1)

    r = outcome.row
    assert (r.compliance, r.verdict, r.result) == ("pass", "committed", 1.0)
    assert r.insight == "improved on best 9 by 8"
    assert outcome.commit == tip(exp) != base
    assert outcome.attempt_ref is None
    assert git(exp, "log", "-1", "--format=%B", BRANCH) == \
        "autoresearch: round 1 — loss=1\n\nSpml-Round: 1\n" \
        f"Spml-Generation: {experiment(exp).generation}"
    assert git(exp, "rev-parse", f"{BRANCH}^") == base
    assert git(exp, "rev-parse", f"{BRANCH}^{{tree}}") == measurement.tree
    assert git(exp, "show", f"{BRANCH}:exp/params.yaml") == "x: 2.0"
    assert git(exp, "rev-parse", "--verify", "--quiet", attempt_ref(exp, 1),
               check=False) != 0
    assert [x.round for x in ledger(exp).rows] == [0, 1]
    assert ledger(exp).best.round == 1
    assert status(exp) == ""
    assert read_journal(experiment(exp)) is None


def test_maximize_keeps_a_higher_score_and_rolls_back_a_lower_one(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"1": "good", "2": "worse"},
                          eval={"metric": "score", "direction": "maximize"})
    baseline = open_and_baseline(exp)
    assert baseline.row.result == pytest.approx(1.0)  # 10 - (0 - 3)^2

    better, _ = full_round(exp, 1)  # x = 2: score 9
    worse, _ = full_round(exp, 2)  # x = -5: score -54

    assert (better.row.verdict, better.row.result) == ("committed", 9.0)
    assert better.row.insight == "improved on best 1 by 8"
    assert git(exp, "log", "-1", "--format=%s", BRANCH) == "autoresearch: round 1 — score=9"
    assert (worse.row.verdict, worse.row.result) == ("rolled_back", -54.0)
    assert worse.row.insight == "not better than best 9 (delta -63)"
    assert tip(exp) == better.commit


def test_min_delta_rolls_back_a_small_improvement(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"1": "good"}, acceptance={"min_delta": 8.5})
    open_and_baseline(exp)

    outcome, _ = full_round(exp, 1)  # loss 9 -> 1: better by 8, not by more than 8.5

    assert outcome.row.verdict == "rolled_back"
    assert outcome.row.insight == "not better than best 9 by more than 8.5 (delta -8)"


@pytest.mark.parametrize(("params", "hint"), [
    ("x: 0.0\ntrain_exit: 2\n", "Fix the training or evaluation command, then run again."),
    ("x: 0.0\ntamper: true\n", "Files that training or evaluation writes must be covered by "
                               ".gitignore, then run again."),
])
def test_a_failed_baseline_raises_and_leaves_no_row(tmp_path: Path, params: str,
                                                     hint: str) -> None:
    exp = make_experiment(tmp_path, params=params)
    open_loop(str(exp))
    session, plan = begin_round(load(exp), 0)
    decided = decide(session, plan, None, [], measure(session, plan))
    assert decided.verdict == "rolled_back"

    with pytest.raises(BaselineFailed, match="the baseline \\(round 0\\) could not be measured") \
            as failed:
        settle(session, plan, decided)

    assert str(failed.value).endswith(hint)
    assert decided.insight in str(failed.value)
    assert ledger(exp).rows == []
    assert read_journal(experiment(exp)) is None
    assert tip(exp) == git(exp, "rev-parse", "main")
    assert status(exp) == ""
    assert (worktree(exp) / "exp" / "evaluate.py").read_bytes() == \
        (exp / "evaluate.py").read_bytes()
