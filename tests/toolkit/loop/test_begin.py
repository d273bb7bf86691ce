"""S0 `begin_round` on a real git repo: journal, git snapshot, brief, notes, a clean worktree."""

from __future__ import annotations

from pathlib import Path

import yaml
from fixtures.loop_steps.stepkit import (
    BRANCH,
    experiment,
    full_round,
    load,
    make_experiment,
    open_and_baseline,
    status,
    tip,
    worktree,
)
from helpers import git

from spml.toolkit.git.workspace import GitSnapshot
from spml.toolkit.loop import control
from spml.toolkit.loop.begin import SNAPSHOT_FILENAME, begin_round
from spml.toolkit.loop.ledger import Journal, ledger_copy_path, read_journal
from spml.toolkit.loop.lifecycle import open_loop
from spml.toolkit.loop.recovery import recover_unfinished_round


def test_round_zero_journals_its_base_and_snapshots_git_without_a_brief(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    open_loop(str(exp))
    main = git(exp, "rev-parse", "main")

    _, plan = begin_round(load(exp), 0)

    assert plan.round_no == 0
    assert plan.base == main == tip(exp)
    assert plan.notes == ()
    assert read_journal(experiment(exp)) == Journal(round=0, base=main, phase="started")
    round_dir = experiment(exp).round_dir(0)
    saved = GitSnapshot.from_json((round_dir / SNAPSHOT_FILENAME).read_text())
    assert saved.head == main
    assert saved.head_ref == f"refs/heads/{BRANCH}"
    assert saved.refs[f"refs/heads/{BRANCH}"] == main
    assert not (round_dir / "brief.md").exists()
    # The supervisor's own files are kept in memory, to be restored after the researcher; the
    # ledger itself is judged apart (a person may edit it), against the supervisor's copy.
    copy = ledger_copy_path(experiment(exp))
    assert plan.supervisor_files[str(copy)] == copy.read_bytes()
    assert str(experiment(exp).ledger_path) not in plan.supervisor_files


def test_later_round_starts_on_the_branch_tip_and_writes_the_brief(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)
    outcome, _ = full_round(exp, 1)  # committed: the tip moves
    assert outcome.commit == tip(exp)

    _, plan = begin_round(load(exp), 2)

    assert plan.base == outcome.commit
    assert read_journal(experiment(exp)) == Journal(round=2, base=outcome.commit)
    round_dir = experiment(exp).round_dir(2)
    saved = GitSnapshot.from_json((round_dir / SNAPSHOT_FILENAME).read_text())
    assert saved.head == outcome.commit
    brief = (round_dir / "brief.md").read_text()
    assert brief.startswith("# Auto Research — round 2 of 3\n")
    assert "**Research question:** Can x be tuned to minimise the toy loss?" in brief
    assert "**Current best:** 1 (round 1)." in brief  # x=2.0 in round 1: loss (2-3)^2
    assert "## Notes from the person on the loop\n(none)" in brief


def test_queued_notes_go_to_the_round_and_again_to_its_redo(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    open_and_baseline(exp)
    control.add_note(experiment(exp), "try x near 3")
    control.add_note(experiment(exp), "keep   it\nsimple")

    _, plan = begin_round(load(exp), 1)

    assert plan.notes == ("try x near 3", "keep it simple")
    assert plan.note_text == "try x near 3; keep it simple"
    assert control.pending_notes(experiment(exp)) == []
    brief = (experiment(exp).round_dir(1) / "brief.md").read_text()
    assert "## Notes from the person on the loop\n- try x near 3\n- keep it simple\n" in brief

    # The supervisor dies mid-round; a note arrives; the redone round owns all three notes.
    assert recover_unfinished_round(load(exp)).startswith("rolled back round 1")
    control.add_note(experiment(exp), "late note")
    _, redo = begin_round(load(exp), 1)
    assert redo.notes == ("try x near 3", "keep it simple", "late note")

    # The next round starts with none of them.
    _, following = begin_round(load(exp), 2)
    assert following.notes == ()


def test_round_zero_takes_no_notes(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    open_loop(str(exp))
    control.add_note(experiment(exp), "for round one")

    _, plan = begin_round(load(exp), 0)

    assert plan.notes == ()
    assert control.pending_notes(experiment(exp)) == ["for round one"]


def test_a_dirty_worktree_is_reset_to_head(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    open_and_baseline(exp)
    work = worktree(exp) / "exp"
    (work / "params.yaml").write_text("x: 42.0\n")
    (work / "stray.py").write_text("print('left over')\n")
    (work / "train.py").unlink()
    git(worktree(exp), "add", "exp/stray.py")  # staged, too
    (work / "outputs").mkdir(exist_ok=True)
    (work / "outputs" / "old.json").write_text("{}")  # ignored: stays
    assert status(exp) != ""
    head = tip(exp)

    _, plan = begin_round(load(exp), 1)

    assert plan.base == head == tip(exp)
    assert status(exp) == ""
    assert (work / "params.yaml").read_text() == "x: 0.0\n"
    assert (work / "train.py").read_bytes() == (exp / "train.py").read_bytes()
    assert not (work / "stray.py").exists()
    assert (work / "outputs" / "old.json").exists()


def edit_protocol(exp: Path, **changes: object) -> None:
    path = exp / "autoresearch-protocol.md"
    _, front, body = path.read_text().split("---\n", 2)
    fields = {**yaml.safe_load(front), **changes}
    path.write_text(f"---\n{yaml.safe_dump(fields, sort_keys=False)}---\n{body}")


def test_protocol_edit_is_applied_at_the_round_and_noted(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    open_and_baseline(exp)
    edit_protocol(exp, experiences_window=2)

    session, plan = begin_round(load(exp), 1)

    assert session.protocol.experiences_window == 2
    assert load(exp).protocol.experiences_window == 2  # accepted: saved for the next steps
    assert plan.notes == ("protocol edit applied: experiences_window",)
    brief = (experiment(exp).round_dir(1) / "brief.md").read_text()
    assert "## Notes from the person on the loop\n(none)" in brief  # not a human note


def test_locked_protocol_edit_is_refused_and_noted(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    open_and_baseline(exp)
    edit_protocol(exp, train_command="python other.py")

    session, plan = begin_round(load(exp), 1)

    assert session.protocol.train_command.endswith(" train.py")
    assert load(exp).protocol.train_command.endswith(" train.py")
    assert len(plan.notes) == 1
    assert plan.notes[0].startswith("protocol edit refused: train_command cannot change mid-run")
