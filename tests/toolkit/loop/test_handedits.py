"""People are not researchers: a person's edit of `experiences.md` or of the protocol while a
round runs never costs the round (see `spml.toolkit.loop.handedits`)."""

from __future__ import annotations

from pathlib import Path

from fixtures.loop_steps.stepkit import (
    experiment,
    full_round,
    load,
    make_experiment,
    open_and_baseline,
    research,
    row,
)

from spml.protocols.experiences import parse_experiences
from spml.toolkit.loop.begin import begin_round
from spml.toolkit.loop.compliance import check_round
from spml.toolkit.loop.handedits import HELD_PROTOCOL_FILENAME
from spml.toolkit.loop.ledger import ledger_copy_path
from spml.toolkit.loop.measure import measure
from spml.toolkit.loop.researchers.dispatch import run_researcher
from spml.toolkit.loop.settle import decide, settle

BASELINE_INSIGHT = "baseline measured on the base commit"


def _measure_and_settle(exp: Path, round_no: int, edit: object = None) -> None:
    """S1+S2 of round ``round_no``, then ``edit()`` (a person, during training), S3-S5."""
    session, plan, proposal, violations = research(exp, round_no)
    assert violations == []
    if callable(edit):
        edit()
    measurement = measure(session, plan)
    settle(session, plan, decide(session, plan, proposal, violations, measurement))


def _edit_ledger(exp: Path, old: str, new: str) -> None:
    path = exp / "experiences.md"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_persons_text_edit_of_the_ledger_mid_round_is_kept_and_the_round_too(
        tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)

    _measure_and_settle(exp, 1, lambda: _edit_ledger(exp, BASELINE_INSIGHT, "x=0, my note"))

    assert (row(exp, 1).compliance, row(exp, 1).verdict) == ("pass", "committed")
    assert row(exp, 0).insight == "x=0, my note"
    assert "edited while the loop ran: the text edits are kept" in row(exp, 1).note
    assert ledger_copy_path(experiment(exp)).read_text() == (exp / "experiences.md").read_text()


def test_a_persons_edit_of_a_verdict_is_undone_and_kept_aside_not_blamed(tmp_path: Path
                                                                         ) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)

    _measure_and_settle(exp, 1, lambda: _edit_ledger(exp, "| committed |", "| rolled_back |"))

    assert (row(exp, 1).compliance, row(exp, 1).verdict) == ("pass", "committed")
    assert row(exp, 0).verdict == "committed"
    assert "round 0's row changed its round, verdict, compliance or result" in row(exp, 1).note
    [saved] = (experiment(exp).state_dir / "hand-edits").iterdir()
    assert "| rolled_back |" in saved.read_text()
    assert saved.relative_to(exp).as_posix() in row(exp, 1).note


def test_a_ledger_deleted_during_the_researcher_step_is_rebuilt(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)
    session, plan = begin_round(load(exp), 1)
    proposal = run_researcher(session, plan)
    (exp / "experiences.md").unlink()

    violations = check_round(session, plan)

    assert violations == []
    assert [r.round for r in parse_experiences((exp / "experiences.md").read_text()).rows] == [0]
    measurement = measure(session, plan)
    settle(session, plan, decide(session, plan, proposal, violations, measurement))
    assert row(exp, 1).verdict == "committed"
    assert "deleted while the loop ran: rebuilt" in row(exp, 1).note


def test_a_ledger_deleted_after_the_last_check_is_rebuilt_when_the_row_is_written(
        tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)
    session, plan, proposal, violations = research(exp, 1)
    measurement = measure(session, plan)
    (exp / "experiences.md").unlink()  # during the evaluation

    settle(session, plan, decide(session, plan, proposal, violations, measurement))

    assert [r.round for r in parse_experiences((exp / "experiences.md").read_text()).rows] == \
        [0, 1]
    assert row(exp, 1).verdict == "committed"


def test_a_ledger_deleted_between_rounds_of_a_running_loop_is_rebuilt(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)
    (exp / "experiences.md").unlink()
    full_round(exp, 1)
    assert [r.round for r in parse_experiences((exp / "experiences.md").read_text()).rows] == \
        [0, 1]


def test_the_supervisors_copy_is_still_guarded_from_the_researcher(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)
    session, plan = begin_round(load(exp), 1)
    run_researcher(session, plan)
    copy = ledger_copy_path(experiment(exp))
    kept = copy.read_text()
    copy.write_text(kept.replace("| committed |", "| rolled_back |"))

    [violation] = check_round(session, plan)

    assert violation.reason == "modified supervisor file ledger-copy.md (restored)"
    assert copy.read_text() == kept


def test_a_protocol_edit_mid_round_applies_from_the_next_round(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)
    protocol = exp / "autoresearch-protocol.md"

    _measure_and_settle(exp, 1, lambda: protocol.write_text(
        protocol.read_text().replace("max_rounds: 3", "max_rounds: 5")))

    assert row(exp, 1).verdict == "committed"
    assert "max_rounds: 5" in protocol.read_text()
    session, plan = begin_round(load(exp), 2)
    assert session.protocol.max_rounds == 5
    assert "protocol edit applied: max_rounds" in plan.note_text


def test_a_locked_field_edited_mid_round_is_still_refused(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)
    protocol = exp / "autoresearch-protocol.md"

    _measure_and_settle(exp, 1, lambda: protocol.write_text(
        protocol.read_text().replace("time_limit: 5", "time_limit: 7")))

    assert row(exp, 1).verdict == "committed"
    session, plan = begin_round(load(exp), 2)
    assert session.protocol.fixed.time_limit == 5
    assert "protocol edit refused: fixed cannot change mid-run" in plan.note_text


def test_a_protocol_edit_while_the_researcher_ran_is_held_without_failing_the_round(
        tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good", "1": "widen_protocol"})
    open_and_baseline(exp)
    accepted = (exp / "autoresearch-protocol.md").read_text()

    full_round(exp, 1)

    assert (row(exp, 1).compliance, row(exp, 1).verdict) == ("pass", "committed")
    assert "changed while the researcher ran: not applied" in row(exp, 1).note
    assert (exp / "autoresearch-protocol.md").read_text() == accepted
    held = experiment(exp).round_dir(1) / HELD_PROTOCOL_FILENAME
    assert "'**'" in held.read_text()
    assert held.relative_to(exp).as_posix() in row(exp, 1).note
    session, _ = begin_round(load(exp), 2)
    assert session.protocol.variable.files == ["params.yaml"]  # never applied


def test_a_protocol_half_saved_or_deleted_mid_round_costs_no_round(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)
    protocol = exp / "autoresearch-protocol.md"
    good = protocol.read_text()
    prose = good.split("---\n", 2)[2].strip()

    _measure_and_settle(exp, 1, lambda: protocol.write_text("--\n" + good[3:]))  # half-saved
    assert row(exp, 1).verdict == "committed"
    session, plan = begin_round(load(exp), 2)  # the brief keeps the last readable prose
    assert "protocol edit ignored (invalid" in plan.note_text
    brief = (session.experiment.round_dir(2) / "brief.md").read_text()
    assert prose in brief

    protocol.unlink()  # deleted for a moment (an editor's save, a git checkout)
    session, plan = begin_round(load(exp), 3)
    assert prose in (session.experiment.round_dir(3) / "brief.md").read_text()
    protocol.write_text(good)


def test_a_ledger_replaced_by_a_directory_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)
    session, plan = begin_round(load(exp), 1)
    proposal = run_researcher(session, plan)
    (exp / "experiences.md").unlink()
    (exp / "experiences.md").mkdir()
    (exp / "experiences.md" / "mine.txt").write_text("a person's file")

    violations = check_round(session, plan)

    assert violations == []
    measurement = measure(session, plan)
    settle(session, plan, decide(session, plan, proposal, violations, measurement))
    assert row(exp, 1).verdict == "committed"
    assert "replaced by something that is not a file (kept in .spml/" in row(exp, 1).note
    [kept] = (session.experiment.state_dir / "hand-edits").glob("experiences.md-*")
    assert (kept / "mine.txt").read_text() == "a person's file"
    assert not list(exp.glob(".experiences.md.*.tmp"))  # no half-written file left
