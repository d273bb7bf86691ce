"""Round labels, round pages and version notes: what a person reads in the Prefect UI."""

from __future__ import annotations

import math

from spml.protocols.experiences import ITERATION_COLUMNS, ExperienceRow, Experiences
from spml.toolkit.loop.narrate import RoundLabel, round_label, round_markdown, version_note


def ledger(*rows: ExperienceRow, direction: str = "minimize") -> Experiences:
    return Experiences(metric="val_mse", max_rounds=5, direction=direction, rows=list(rows))


BASE = ExperienceRow(round=0, compliance="pass", result=0.5, verdict="committed",
                     strategy="baseline")
BETTER = ExperienceRow(round=1, compliance="pass", result=0.25, verdict="committed",
                       strategy="lr=0.01", insight="lower lr helps")
WORSE = ExperienceRow(round=2, compliance="pass", result=0.75, verdict="rolled_back",
                      strategy="lr=1", insight="diverged")


def test_each_verdict_has_its_name_and_the_change_against_the_best_before_it() -> None:
    book = ledger(BASE, BETTER, WORSE)
    assert round_label(book, 0) == RoundLabel("Baseline", "val_mse 0.5")
    assert round_label(book, 1).name == "Committed"
    assert round_label(book, 1).message == "val_mse 0.25 (-0.25 vs best 0.5 (round 0))"
    assert round_label(book, 2).name == "Rolled back"
    assert round_label(book, 2).message == (
        "val_mse 0.75 (+0.5 vs best 0.25 (round 1); best unchanged)")


def test_failed_compliance_unmeasured_noted_and_aborted_rounds() -> None:
    cheat = ExperienceRow(round=2, compliance="fail", verdict="rolled_back",
                          insight="compliance: modified fixed file eval.py")
    crash = ExperienceRow(round=3, compliance="pass", verdict="rolled_back", result=math.nan,
                          insight="train crashed: exit 1")
    noted = BETTER.model_copy(update={"round": 4, "verdict": "committed_with_note"})
    book = ledger(BASE, cheat, crash, noted)
    assert round_label(book, 2) == RoundLabel("Failed compliance",
                                              "compliance: modified fixed file eval.py")
    assert round_label(book, 3).name == "Rolled back"
    assert round_label(book, 3).message == "val_mse: no value (train crashed: exit 1)"
    assert round_label(book, 4).name == "Committed with note"
    assert round_label(book, 7).name == "Aborted"  # no row: a stop request undid it


def test_an_iteration_round_is_described_by_its_review() -> None:
    row = ExperienceRow(round=1, verdict="committed", insight="all criteria met",
                        extra={"Metrics": "acc 0.95 >= 0.9"})
    book = Experiences(metric="criteria", max_rounds=3, rows=[row], columns=ITERATION_COLUMNS)
    assert round_label(book, 1).message == "all criteria met"
    page = round_markdown(book, 1, "exp", "commit `abc`")
    assert "- **Metrics:** acc 0.95 >= 0.9" in page


def test_the_round_page_names_experiment_verdict_strategy_change_and_place() -> None:
    page = round_markdown(ledger(BASE, BETTER), 1, "mlp", "commit `0123456789ab` on `b`",
                          " train.py | 2 +-\n 1 file changed\n")
    lines = page.splitlines()
    assert lines[0] == "# Round 1 of mlp: Committed"
    assert "- **Strategy:** lr=0.01" in lines
    assert "- **Insight:** lower lr helps" in lines
    assert "- **Where:** commit `0123456789ab` on `b`" in lines
    assert lines[-3:] == [" train.py | 2 +-", " 1 file changed", "```"]
    assert "## Change" not in round_markdown(ledger(BASE, BETTER), 1, "mlp", "x", "")


def test_version_notes_say_after_which_round_and_the_best_so_far() -> None:
    assert version_note(ledger(), "mlp") == "mlp: before round 0 of 5; no best yet"
    assert version_note(ledger(BASE, BETTER, WORSE), "mlp") == (
        "mlp: after round 2 of 5; best val_mse = 0.25 (round 1)")


def test_an_iteration_compliance_failure_is_named_though_its_ledger_has_no_column() -> None:
    row = ExperienceRow(round=3, verdict="rolled_back",
                        insight="compliance: modified fixed file evaluate.py")
    book = Experiences(metric="criteria", max_rounds=3, rows=[row], columns=ITERATION_COLUMNS)
    assert round_label(book, 3) == RoundLabel("Failed compliance",
                                              "compliance: modified fixed file evaluate.py")
    page = round_markdown(book, 3, "exp", "rolled back")
    assert "**Compliance:**" not in page  # no column: nothing to show but n/a
    assert "**Result:**" not in page  # it would repeat the insight
    assert "- **Insight:** compliance: modified fixed file evaluate.py" in page


def test_a_round_page_is_described_by_its_own_round() -> None:
    from spml.toolkit.loop.narrate import round_note

    assert round_note(ledger(BASE, BETTER, WORSE), 2, "mlp") == (
        "mlp round 2: Rolled back — val_mse 0.75 (+0.5 vs best 0.25 (round 1); best unchanged)")


def test_an_aborted_round_has_a_page_that_says_so() -> None:
    page = round_markdown(ledger(BASE), 1, "mlp", "no change")
    assert page.startswith("# Round 1: Aborted")
    assert round_label(ledger(BASE), 1).name == "Aborted"
