"""The round engine end to end on real git repos and real subprocesses (no Prefect).

Each misbehaving researcher must be rejected and rolled back with a Compliance/Insight entry
naming the cause, and the fixed files must be byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import attempt_ref, git

from spml.protocols.experiences import ExperienceRow, Experiences
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_journal, read_ledger

FIXED = ("train.py", "evaluate.py")
BRANCH = "spml/autoresearch/exp"


def worktree(exp: Path) -> Path:
    return Experiment.locate(exp, "autoresearch-protocol.md").worktree_dir("autoresearch") / "exp"


def digests(directory: Path) -> dict[str, str]:
    return {n: hashlib.sha256((directory / n).read_bytes()).hexdigest() for n in FIXED}


def ledger_of(exp: Path) -> Experiences:
    ledger = read_ledger(Experiment.locate(exp, "autoresearch-protocol.md"))
    assert ledger is not None
    return ledger


def row(exp: Path, round_no: int) -> ExperienceRow:
    return next(r for r in ledger_of(exp).rows if r.round == round_no)


def assert_clean(exp: Path) -> None:
    wt = worktree(exp)
    assert git(wt, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(wt, "symbolic-ref", "HEAD") == f"refs/heads/{BRANCH}"
    assert read_journal(Experiment.locate(exp, "autoresearch-protocol.md")) is None


def test_well_behaved_researcher_improves_and_commits(toy_experiment, drive_loop) -> None:
    exp = toy_experiment({"default": "good"})
    before = digests(exp)
    ledger = drive_loop(exp)
    assert ledger.status == "completed"
    assert [r.verdict for r in ledger.rows] == ["committed"] * 4
    assert ledger.best is not None
    assert ledger.best.round == 3
    assert row(exp, 0).result == pytest.approx(9.0)
    assert row(exp, 3).result == pytest.approx(0.25)
    assert row(exp, 1).strategy == "mode good in round 1"
    log = git(exp, "log", "--format=%s", BRANCH).splitlines()
    assert log[:3] == [f"autoresearch: round {n} — loss={v}" for n, v in
                       ((3, "0.25"), (2, "0.444444"), (1, "1"))]
    assert digests(worktree(exp)) == before
    assert_clean(exp)
    assert git(exp.parent, "status", "--porcelain") == "?? exp/experiences.md"
    text = (exp / "experiences.md").read_text()
    assert text.startswith("# Experiences\n\nbest: loss = 0.25 (R3)")


@pytest.mark.parametrize(("mode", "cause"), [
    ("edit_fixed", "compliance: modified fixed file evaluate.py"),
    ("sitecustomize", "compliance: created file sitecustomize.py outside variable files"),
    ("shadow", "would shadow module json"),
    ("commit", "compliance: moved HEAD"),
    ("stash", "refs/stash"),
    ("hook", "hooks/pre-commit"),
    ("replace", "refs/replace/"),
])
def test_noncompliant_round_is_rolled_back(toy_experiment, drive_loop, mode, cause) -> None:
    exp = toy_experiment({"default": "good", "2": mode})
    before = digests(exp)
    drive_loop(exp)
    bad = row(exp, 2)
    assert (bad.compliance, bad.verdict, bad.result) == ("fail", "rolled_back", None)
    assert cause in bad.insight
    assert row(exp, 3).verdict == "committed"  # the loop went on
    assert digests(worktree(exp)) == before
    assert_clean(exp)
    assert not (exp.parent / ".git" / "hooks" / "pre-commit").exists()
    assert git(exp, "for-each-ref", "refs/replace/", "refs/stash") == ""
    assert len(git(exp, "log", "--format=%h", BRANCH).splitlines()) == 3  # init + R1 + R3


@pytest.mark.parametrize(("mode", "note"), [
    ("forge_ledger", "experiences.md was edited while the loop ran: the text edits are kept"),
    ("widen_protocol", "autoresearch-protocol.md changed while the researcher ran: not applied"),
])
def test_edits_of_peoples_files_are_undone_without_failing_the_round(
        toy_experiment, drive_loop, mode, note) -> None:
    # A person may edit the ledger or the protocol at any time: the round is judged on its own
    # merits, and what the edit could have gained is taken away.
    exp = toy_experiment({"default": "good", "2": mode})
    protocol = (exp / "autoresearch-protocol.md").read_text()
    drive_loop(exp)
    assert (row(exp, 2).compliance, row(exp, 2).verdict) == ("pass", "committed")
    assert note in row(exp, 2).note
    assert (exp / "experiences.md").read_text().startswith("# Experiences\n\nbest: loss = 0.01 "
                                                          "(R2)")
    assert (exp / "autoresearch-protocol.md").read_text() == protocol
    assert_clean(exp)


def test_reset_by_researcher_is_detected(toy_experiment, drive_loop) -> None:
    exp = toy_experiment({"default": "good", "2": "reset"})
    drive_loop(exp)
    assert row(exp, 2).compliance == "fail"
    assert "HEAD" in row(exp, 2).insight
    assert "autoresearch: round 1" in git(exp, "log", "--format=%s", BRANCH)  # R1 survived
    assert_clean(exp)


@pytest.mark.parametrize(("mode", "cause"), [
    ("crash", "researcher crashed: exit 3: Traceback: something broke"),
    ("sleep", "researcher timed out after 3s (process group killed)"),
])
def test_failed_researcher_round_is_rolled_back(toy_experiment, drive_loop, mode, cause) -> None:
    exp = toy_experiment({"default": "good", "1": mode},
                         researcher={"timeout": 3}, max_rounds=2)
    drive_loop(exp)
    failed = row(exp, 1)
    assert (failed.compliance, failed.verdict) == ("n/a", "rolled_back")
    assert failed.insight == cause
    assert row(exp, 2).verdict == "committed"
    assert digests(worktree(exp)) == digests(exp)
    assert_clean(exp)


def test_rejected_attempt_is_archived_off_branch(toy_experiment, drive_loop) -> None:
    exp = toy_experiment({"default": "good", "2": "worse"})
    drive_loop(exp)
    assert row(exp, 2).verdict == "rolled_back"
    assert row(exp, 2).compliance == "pass"
    assert "not better than best" in row(exp, 2).insight
    ref = attempt_ref(exp, 2)
    assert git(exp, "show", f"{ref}:exp/params.yaml") == "x: -5.0"
    assert git(exp, "merge-base", "--is-ancestor", ref, BRANCH, check=False) != 0


def test_training_overrun_is_killed_with_children(toy_experiment, drive_loop,
                                                   monkeypatch) -> None:
    exp = toy_experiment({"default": "good", "1": "slow_train"},
                         fixed={"time_limit": 0.5}, max_rounds=1)
    import spml.protocols.autoresearch as protocol_module

    # Hard limit 0.5 s + 10 s grace: ample for the baseline's train and eval on a loaded
    # machine (the default 30 s grace would make the test slow), yet far below slow_train's
    # 60 s sleep (and its child's 300 s): "train killed" below means killed at the limit.
    monkeypatch.setattr(protocol_module, "TRAIN_GRACE_S", 10.0)
    drive_loop(exp)
    slow = row(exp, 1)
    assert slow.verdict == "rolled_back"
    assert slow.insight.startswith("train killed: exceeded time_limit 0.5s")
    assert_clean(exp)
    repo = exp.parent.resolve()  # this test's sleepers run in its worktree, inside the repo
    leftover = [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if b"time.sleep(300)" in _read(p) and repo in _cwd(p.parent).parents]
    assert leftover == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _cwd(proc_dir: Path) -> Path:
    try:
        return (proc_dir / "cwd").resolve(strict=True)
    except OSError:
        return Path("/")
