"""`recover_unfinished_round` for each journal a killed supervisor can leave, written by hand
on a real git repo, and the orphaned process groups it must kill first."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.loop_steps.stepkit import (
    experiment,
    ledger,
    load,
    make_experiment,
    open_and_baseline,
    row,
    status,
    tip,
    worktree,
)
from helpers import attempt_ref, git

from spml.protocols.experiences import ExperienceRow
from spml.toolkit.loop.begin import RoundPlan, begin_round
from spml.toolkit.loop.ledger import Journal, read_journal, write_journal, write_ledger
from spml.toolkit.loop.record import ROUND_TRAILER
from spml.toolkit.loop.recovery import recover_unfinished_round
from spml.toolkit.process.procfs import live_group_members
from spml.toolkit.process.runner import start_command

COMMITTED = ExperienceRow(round=1, compliance="pass", result=1.0, verdict="committed",
                          strategy="x to 2", insight="improved on best 9 by 8")
ROLLED_BACK = ExperienceRow(round=1, compliance="pass", result=64.0, verdict="rolled_back",
                            strategy="x to -5", insight="not better than best 9 (delta +55)")


def same(a: ExperienceRow, b: ExperienceRow) -> bool:
    """Equal as a ledger row (the ledger parses the Result cell back into result_text)."""
    fields = ("round", "compliance", "result", "verdict", "strategy", "insight", "note")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def crashed(msg: str) -> str:
    return f"{msg} round 1 interrupted (supervisor killed or stopped)"


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    """An experiment whose baseline (round 0, loss 9) is settled."""
    made = make_experiment(tmp_path)
    open_and_baseline(made)
    return made


def begin_one(exp: Path, params: str | None = None) -> RoundPlan:
    """Round 1 begun, the researcher's edit (params.yaml) made."""
    _, plan = begin_round(load(exp), 1)
    if params is not None:
        (worktree(exp) / "exp" / "params.yaml").write_text(params)
    return plan


def journal(exp: Path, plan: RoundPlan, phase: str, decided: ExperienceRow | None) -> None:
    write_journal(experiment(exp), Journal(round=1, base=plan.base, phase=phase,
                                           row=decided.model_dump() if decided else None))


def assert_settled(exp: Path, rounds: list[int]) -> None:
    assert [r.round for r in ledger(exp).rows] == rounds
    assert read_journal(experiment(exp)) is None
    assert status(exp) == ""


def test_no_journal_only_cleans_the_worktree(exp: Path) -> None:
    head = tip(exp)
    (worktree(exp) / "exp" / "params.yaml").write_text("x: 5.0\n")
    (worktree(exp) / "exp" / "new.txt").write_text("stray\n")

    assert recover_unfinished_round(load(exp)) == "clean"

    assert tip(exp) == head
    assert (worktree(exp) / "exp" / "params.yaml").read_text() == "x: 0.0\n"
    assert_settled(exp, [0])


def test_started_round_is_rolled_back_with_its_git_state(exp: Path) -> None:
    plan = begin_one(exp, "x: 2.0\n")
    hook = Path(git(exp, "rev-parse", "--path-format=absolute", "--git-common-dir")) / \
        "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 1\n")  # the researcher planted a hook
    git(worktree(exp), "branch", "smuggled")  # an unwatched branch: not undone
    assert read_journal(experiment(exp)) == Journal(round=1, base=plan.base)

    assert recover_unfinished_round(load(exp)) == crashed("rolled back")

    assert tip(exp) == plan.base
    assert (worktree(exp) / "exp" / "params.yaml").read_text() == "x: 0.0\n"
    assert not hook.exists()  # restored from the round's git snapshot
    assert git(exp, "rev-parse", "--verify", "--quiet", attempt_ref(exp, 1),
               check=False) != 0
    assert_settled(exp, [0])


def test_started_round_without_a_snapshot_is_still_rolled_back(exp: Path) -> None:
    plan = begin_one(exp, "x: 2.0\n")
    (experiment(exp).round_dir(1) / "git-snapshot.json").unlink()  # killed before it existed

    assert recover_unfinished_round(load(exp)) == crashed("rolled back")

    assert tip(exp) == plan.base
    assert_settled(exp, [0])


def test_committing_with_the_round_commit_at_the_tip_records_it(exp: Path) -> None:
    plan = begin_one(exp, "x: 2.0\n")
    journal(exp, plan, "committing", COMMITTED)
    commit = load(exp).workspace.commit_all("autoresearch: round 1 — loss=1",
                                            trailers={ROUND_TRAILER: "1"})

    assert recover_unfinished_round(load(exp)) == crashed("recorded the commit of")

    assert tip(exp) == commit  # kept, not redone
    assert same(row(exp, 1), COMMITTED)
    assert ledger(exp).best.round == 1
    assert_settled(exp, [0, 1])


def test_committing_without_the_commit_rolls_the_round_back(exp: Path) -> None:
    plan = begin_one(exp, "x: 2.0\n")
    journal(exp, plan, "committing", COMMITTED)  # killed before `git commit`

    assert recover_unfinished_round(load(exp)) == crashed("rolled back")

    assert tip(exp) == plan.base
    assert (worktree(exp) / "exp" / "params.yaml").read_text() == "x: 0.0\n"
    assert_settled(exp, [0])


@pytest.mark.parametrize(("trailer", "on_base"), [("2", True), ("1", False)])
def test_committing_with_another_commit_at_the_tip_rolls_the_round_back(
        exp: Path, trailer: str, on_base: bool) -> None:
    plan = begin_one(exp, "x: 2.0\n")
    journal(exp, plan, "committing", COMMITTED)
    workspace = load(exp).workspace
    if not on_base:
        workspace.commit_all("someone else's commit")
        (worktree(exp) / "exp" / "params.yaml").write_text("x: 2.5\n")
    # Not the round's commit: another round's trailer, or the right one on another parent.
    workspace.commit_all("autoresearch: round 1 — loss=1", trailers={ROUND_TRAILER: trailer})

    assert recover_unfinished_round(load(exp)) == crashed("rolled back")

    assert tip(exp) == plan.base
    assert_settled(exp, [0])


def test_rolling_back_before_the_archive_archives_then_rolls_back(exp: Path) -> None:
    plan = begin_one(exp, "x: -5.0\n")
    journal(exp, plan, "rolling_back", ROLLED_BACK)

    assert recover_unfinished_round(load(exp)) == crashed("finished the rollback of")

    assert tip(exp) == plan.base
    assert git(exp, "show", f"{attempt_ref(exp, 1)}:exp/params.yaml") == "x: -5.0"
    assert git(exp, "rev-parse", f"{attempt_ref(exp, 1)}^") == plan.base
    assert git(exp, "log", "-1", "--format=%s", attempt_ref(exp, 1)) == \
        "spml attempt: round 1 — not better than best 9 (delta +55)"
    assert (worktree(exp) / "exp" / "params.yaml").read_text() == "x: 0.0\n"
    assert same(row(exp, 1), ROLLED_BACK)
    assert_settled(exp, [0, 1])


def test_rolling_back_after_the_archive_keeps_the_archived_attempt(exp: Path) -> None:
    plan = begin_one(exp, "x: -5.0\n")
    journal(exp, plan, "rolling_back", ROLLED_BACK)
    workspace = load(exp).workspace
    archived = workspace.archive_attempt(attempt_ref(exp, 1), plan.base,
                                         "spml attempt: round 1 — archived")
    workspace.rollback(plan.base, restore_refs=plan.snapshot)  # killed right after this

    assert recover_unfinished_round(load(exp)) == crashed("finished the rollback of")

    assert git(exp, "rev-parse", attempt_ref(exp, 1)) == archived
    assert tip(exp) == plan.base
    assert same(row(exp, 1), ROLLED_BACK)
    assert_settled(exp, [0, 1])


@pytest.mark.parametrize(("phase", "decided"), [("committing", COMMITTED),
                                                ("rolling_back", ROLLED_BACK)])
def test_a_row_already_in_the_ledger_only_finishes_the_bookkeeping(
        exp: Path, phase: str, decided: ExperienceRow) -> None:
    plan = begin_one(exp, "x: 2.0\n" if phase == "committing" else "x: -5.0\n")
    journal(exp, plan, phase, decided)
    workspace = load(exp).workspace
    if phase == "committing":
        head = workspace.commit_all("autoresearch: round 1 — loss=1",
                                    trailers={ROUND_TRAILER: "1"})
    else:
        workspace.archive_attempt(attempt_ref(exp, 1), plan.base, "spml attempt: round 1")
        workspace.rollback(plan.base, restore_refs=plan.snapshot)
        head = plan.base
    in_ledger = decided.model_copy(update={"insight": "as written to the ledger"})
    write_ledger(experiment(exp), ledger(exp).with_row(in_ledger))  # killed after the ledger

    assert recover_unfinished_round(load(exp)) == crashed("finished the bookkeeping of")

    assert tip(exp) == head
    assert same(row(exp, 1), in_ledger)  # neither replaced by the journal's row nor doubled
    assert_settled(exp, [0, 1])


@pytest.mark.parametrize("pid_file", ["train.pid", "eval.pid", "rounds/0001/researcher.pid"])
def test_orphaned_process_groups_of_a_dead_supervisor_are_killed(exp: Path, tmp_path: Path,
                                                                 pid_file: str) -> None:
    path = experiment(exp).state_dir / pid_file
    orphan = start_command("sleep 300 & sleep 300", cwd=tmp_path, log_dir=tmp_path / "logs",
                           name="orphan", pid_file=path)
    try:
        assert path.exists()
        assert not orphan.exited(timeout_s=0.2)
        assert len(live_group_members(orphan.pid)) >= 2  # the shell and its sleeps

        assert recover_unfinished_round(load(exp)) == "clean"

        assert orphan.exited(timeout_s=5)
        assert live_group_members(orphan.pid) == []
        assert orphan.proc.wait(timeout=5) == -9  # SIGKILLed, by the recovery
        assert not path.exists()
    finally:
        orphan.finish()
