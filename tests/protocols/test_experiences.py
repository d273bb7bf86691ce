"""`experiences.md`: render -> parse round trips, ledger queries, and malformed ledgers."""

from __future__ import annotations

import math

import pytest

from spml.errors import ProtocolError
from spml.protocols.experiences import (
    COLUMNS,
    ExperienceRow,
    Experiences,
    format_result,
    format_value,
    parse_experiences,
    table_lines,
)


def _row(round_no: int, verdict: str = "rolled_back", result: float | None = 0.5,
         **fields: object) -> ExperienceRow:
    text = format_value(result) if result is not None else ""
    return ExperienceRow(round=round_no, compliance=fields.pop("compliance", "pass"),
                         result=result, result_text=fields.pop("result_text", text),
                         verdict=verdict, **fields)  # type: ignore[arg-type]


def _ledger(*rows: ExperienceRow, status: str = "running") -> Experiences:
    return Experiences(metric="val_mse", max_rounds=8, status=status,  # type: ignore[arg-type]
                       rows=list(rows))


def _rows_text(*lines: str, status: str = "running") -> str:
    return "\n".join(["# Experiences", "", "best: val_mse = 0.5 (R0)", "rounds: 1 / 8",
                      f"status: {status}", "", *table_lines([]), *lines]) + "\n"


# --- rendering and parsing -------------------------------------------------------------------


def test_render_layout() -> None:
    ledger = _ledger(_row(0, "committed", 0.2234, strategy="baseline",
                          insight="measured on the base commit"),
                     _row(1, "committed", 0.0123, strategy="lr 1e-3"),
                     _row(2, "rolled_back", 0.05))

    assert ledger.render().splitlines() == [
        "# Experiences",
        "",
        "best: val_mse = 0.0123 (R1)",
        "rounds: 2 / 8",
        "status: running",
        "",
        "| Round | Compliance | Result | Verdict | Strategy | Insight | Note |",
        "|---|---|---|---|---|---|---|",
        "| 0 | pass | 0.2234 | committed | baseline | measured on the base commit |  |",
        "| 1 | pass | 0.0123 | committed | lr 1e-3 |  |  |",
        "| 2 | pass | 0.05 | rolled_back |  |  |  |",
    ]


def test_empty_ledger_round_trips() -> None:
    ledger = _ledger(status="not_started")

    text = ledger.render()
    parsed = parse_experiences(text)

    assert "best: val_mse = — (none)" in text
    assert parsed == ledger
    assert parsed.best is None
    assert parsed.rounds_done == 0


def test_round_trip_keeps_every_field() -> None:
    ledger = _ledger(
        _row(0, "committed", 0.2234, strategy="baseline", insight="measured on the base commit"),
        _row(1, "committed", 0.0123, result_text="0.0123 ± 0.0004 (n=3)",
             strategy="lr=1e-3 | width=64", insight="improved on best 0.2234 by 0.211",
             note="try a cosine | warm-up schedule"),
        _row(2, "rolled_back", None, compliance="fail", result_text="—",
             strategy="edited evaluate.py", insight="compliance: evaluate.py is fixed"),
        _row(3, "rolled_back", None, compliance="n/a", result_text="—",
             strategy="(no strategy given)", insight="researcher crashed: exit 1: boom"),
        _row(4, "rolled_back", -1.5e-07, strategy="Größe ändern — 学习率 ✓",
             insight="not better than best 0.0123", note="ünïcödé"),
        _row(5, "rolled_back", math.inf, result_text="inf", strategy="diverged"),
        status="completed",
    )

    parsed = parse_experiences(ledger.render())

    assert parsed == ledger
    assert parsed.rows[1].result == 0.0123
    assert parsed.rows[1].strategy == "lr=1e-3 | width=64"
    assert parsed.rows[1].note == "try a cosine | warm-up schedule"
    assert parsed.rows[4].result == -1.5e-07
    assert parsed.rows[4].strategy == "Größe ändern — 学习率 ✓"
    assert parsed.rows[5].result == math.inf
    assert parsed.status == "completed"
    assert parsed.render() == ledger.render()


def test_newlines_in_cells_become_spaces_and_stay_stable() -> None:
    ledger = _ledger(_row(1, strategy="line one\nline two", insight="a\n\nb\tc",
                          note="x |\ny"))

    text = ledger.render()
    parsed = parse_experiences(text)

    assert len(text.splitlines()) == 9  # 6 header lines, table header, rule, ONE row
    assert parsed.rows[0].strategy == "line one line two"
    assert parsed.rows[0].insight == "a b c"
    assert parsed.rows[0].note == "x | y"
    assert parse_experiences(parsed.render()) == parsed


def test_backslashes_next_to_pipes_survive() -> None:
    ledger = _ledger(_row(1, strategy="C:\\path\\", insight="a\\|b", note="\\"))

    parsed = parse_experiences(ledger.render())

    assert parsed.rows[0].strategy == "C:\\path\\"
    assert parsed.rows[0].insight == "a\\|b"
    assert parsed.rows[0].note == "\\"


def test_result_is_read_from_the_repeats_text() -> None:
    text = _rows_text("| 1 | pass | 0.0123 ± 0.0004 (n=3) | committed | s | i |  |",
                      "| 2 | pass | -2.5e-03 ± 1e-04 (n=2) | rolled_back | s | i |  |",
                      "| 3 | n/a | — | rolled_back | s | i |  |",
                      "| 4 | pass | nan | rolled_back | s | i |  |")

    rows = parse_experiences(text).rows

    assert rows[0].result == 0.0123
    assert rows[0].result_text == "0.0123 ± 0.0004 (n=3)"
    assert rows[1].result == -0.0025
    assert rows[2].result is None
    assert rows[3].result is not None
    assert math.isnan(rows[3].result)


def test_format_result() -> None:
    assert format_result([0.5]) == "0.5"
    assert format_result([1.0, 2.0, 3.0]) == "2.0 ± 1 (n=3)"
    assert format_result([0.1234556]) == "0.1234556"  # exact: decisions read it back
    assert format_value(0.123456789) == "0.123457"  # display only


def test_ledger_keeps_exact_values_for_decisions() -> None:
    ledger = Experiences(metric="m", max_rounds=2).with_row(
        ExperienceRow(round=0, compliance="pass", result=0.1234556, verdict="committed"))
    parsed = parse_experiences(ledger.render())
    assert parsed.best is not None
    assert parsed.best.result == 0.1234556


def test_hand_edits_of_prose_cells_and_extra_text_are_tolerated() -> None:
    text = _rows_text("|  1  |pass|0.4|committed| my own words |  | a note |",
                      "", "Some remark a person added below the table.")

    row = parse_experiences(text).rows[0]

    assert row.round == 1
    assert row.result == 0.4
    assert row.strategy == "my own words"
    assert row.note == "a note"


# --- ledger queries --------------------------------------------------------------------------


def test_best_is_the_last_committed_row_with_a_value() -> None:
    ledger = _ledger(_row(0, "committed", 0.9), _row(1, "committed", 0.5),
                     _row(2, "rolled_back", 0.1), _row(3, "committed", None, result_text="—"))

    assert ledger.best is not None
    assert ledger.best.round == 1
    assert ledger.best.result == 0.5
    assert _ledger(_row(1, "rolled_back", 0.1)).best is None
    assert _ledger().best is None


def test_rounds_done_is_the_highest_round() -> None:
    assert _ledger().rounds_done == 0
    assert _ledger(_row(0, "committed")).rounds_done == 0
    assert _ledger(_row(0, "committed"), _row(1), _row(3)).rounds_done == 3


def test_window_is_the_newest_rows_oldest_first() -> None:
    ledger = _ledger(*(_row(n) for n in range(6)))

    assert [r.round for r in ledger.window(3)] == [3, 4, 5]
    assert [r.round for r in ledger.window(10)] == [0, 1, 2, 3, 4, 5]
    assert [r.round for r in ledger.window(1)] == [5]
    assert ledger.window(0) == []


def test_rounds_since_improvement_counts_the_newest_rolled_back_rows() -> None:
    assert _ledger().rounds_since_improvement() == 0
    assert _ledger(_row(0, "committed")).rounds_since_improvement() == 0
    ledger = _ledger(_row(0, "committed"), _row(1), _row(2, "committed"), _row(3), _row(4),
                     _row(5))
    assert ledger.rounds_since_improvement() == 3
    assert ledger.with_row(_row(6, "committed")).rounds_since_improvement() == 0


def test_with_row_replaces_the_same_round_and_keeps_rounds_sorted() -> None:
    ledger = _ledger(_row(0, "committed", 0.9), _row(2, "rolled_back", 0.8))

    updated = ledger.with_row(_row(1, "committed", 0.7)).with_row(
        _row(2, "committed", 0.6, strategy="redone"))

    assert [(r.round, r.verdict) for r in updated.rows] == [
        (0, "committed"), (1, "committed"), (2, "committed")]
    assert updated.rows[2].strategy == "redone"
    assert updated.best is not None
    assert updated.best.result == 0.6
    assert [r.round for r in ledger.rows] == [0, 2]  # the original is unchanged
    assert ledger.has_round(2)
    assert not ledger.has_round(1)


# --- malformed ledgers -----------------------------------------------------------------------


@pytest.mark.parametrize(("row", "words"), [
    ("| 1 | pass | 0.4 | committed | s | i |", "must have 7 cells"),
    ("| 1 | pass | 0.4 | committed | s | i | n | extra |", "got 8"),
    ("| one | pass | 0.4 | committed | s | i |  |", "malformed round row"),
    ("| 1 | maybe | 0.4 | committed | s | i |  |", "malformed round row"),
    ("| 1 | pass | 0.4 | kept | s | i |  |", "malformed round row"),
    ("| -1 | pass | 0.4 | kept | s | i |  |", "malformed round row"),
])
def test_malformed_row_names_its_line(row: str, words: str) -> None:
    text = _rows_text("| 0 | pass | 0.5 | committed | baseline |  |  |", row)

    with pytest.raises(ProtocolError, match=rf"^ledger\.md line 10: .*{words}"):
        parse_experiences(text, source="ledger.md")


@pytest.mark.parametrize(("drop", "names"), [
    ("best: val_mse = 0.5 (R0)", "best: <metric> = ..."),
    ("rounds: 1 / 8", "rounds: <done> / <max>"),
    ("status: running", "status: ..."),
])
def test_missing_header_line_is_named(drop: str, names: str) -> None:
    text = _rows_text().replace(drop + "\n", "")

    with pytest.raises(ProtocolError, match=f"must have a '{names}' header line"):
        parse_experiences(text)


def test_unknown_status_names_its_line() -> None:
    with pytest.raises(ProtocolError, match=r"experiences\.md line 5: status must be one of "
                                            r"not_started, running.*got 'paused'"):
        parse_experiences(_rows_text(status="paused"))


def test_columns_are_the_documented_ones() -> None:
    assert COLUMNS == ("Round", "Compliance", "Result", "Verdict", "Strategy", "Insight", "Note")
