"""`experiences.png`: the ledger drawn with matplotlib, for every shape a ledger takes."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from spml.protocols.experiences import (
    ITERATION_COLUMNS,
    ExperienceRow,
    Experiences,
    parse_experiences,
)
from spml.toolkit.loop.plot import PLOT_FILENAME, ledger_figure, plot_ledger, plot_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (the first chunk, right after the
    signature), so no image library is needed."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _row(round_no: int, verdict: str, result: float | None, text: str = "") -> ExperienceRow:
    return ExperienceRow(round=round_no, compliance="pass", result=result,  # type: ignore[arg-type]
                         result_text=text, verdict=verdict, strategy=f"s{round_no}")


def _ledger(*rows: ExperienceRow, direction: str | None = "minimize") -> Experiences:
    return Experiences(metric="val_mse", max_rounds=8, status="running",  # type: ignore[arg-type]
                       direction=direction, rows=list(rows))


def _legend(ledger: Experiences) -> list[str]:
    legend = ledger_figure(ledger).axes[0].get_legend()
    return [text.get_text() for text in legend.get_texts()] if legend is not None else []


def test_plot_ledger_writes_an_800x450_png_and_returns_its_path(tmp_path: Path) -> None:
    ledger = _ledger(_row(0, "committed", 0.5), _row(1, "committed", 0.4))
    path = plot_ledger(ledger, tmp_path / PLOT_FILENAME)
    assert path == tmp_path / "experiences.png"
    assert png_size(path.read_bytes()) == (800, 450)
    assert [p.name for p in tmp_path.iterdir()] == ["experiences.png"]  # no temporary left


def test_an_empty_ledger_draws_no_rounds_yet() -> None:
    ledger = _ledger()
    axes = ledger_figure(ledger).axes[0]
    assert [t.get_text() for t in axes.texts] == ["no rounds yet"]
    assert axes.get_title() == "val_mse: 0 / 8 rounds (running)"
    assert png_size(plot_png(ledger)) == (800, 450)


def test_baseline_only_is_drawn_with_its_value() -> None:
    ledger = _ledger(_row(0, "committed", 0.25))
    assert _legend(ledger) == ["best so far (0.25)", "baseline R0 (0.25)", "committed (1)"]
    assert png_size(plot_png(ledger)) == (800, 450)


def test_points_are_split_by_verdict_and_failures_are_counted() -> None:
    ledger = _ledger(_row(0, "committed", 0.5), _row(1, "rolled_back", 0.7),
                     _row(2, "committed", 0.3), _row(3, "rolled_back", None),
                     _row(4, "rolled_back", math.nan), _row(5, "rolled_back", math.inf))
    assert _legend(ledger) == ["best so far (0.3)", "baseline R0 (0.5)",
                               "failed / no value (3)", "committed (2)", "rolled back (1)"]
    axes = ledger_figure(ledger).axes[0]
    assert axes.get_ylabel() == "val_mse (lower is better)"
    low, high = axes.get_ylim()
    assert 0 < low < 0.3
    assert 0.7 < high < 1


def test_best_so_far_steps_down_at_each_commit_and_runs_to_the_last_round() -> None:
    ledger = _ledger(_row(0, "committed", 0.5), _row(1, "rolled_back", 0.4),
                     _row(2, "committed", 0.3), _row(3, "rolled_back", None))
    step = next(line for line in ledger_figure(ledger).axes[0].get_lines()
                if line.get_label().startswith("best so far"))
    assert list(step.get_xdata()) == [0, 2, 3]
    assert list(step.get_ydata()) == [0.5, 0.3, 0.3]


def test_maximize_keeps_the_highest_value_and_says_higher_is_better() -> None:
    ledger = _ledger(_row(0, "committed", 0.6), _row(1, "committed", 0.8),
                     _row(2, "rolled_back", 0.7), direction="maximize")
    axes = ledger_figure(ledger).axes[0]
    assert axes.get_ylabel() == "val_mse (higher is better)"
    assert _legend(ledger)[0] == "best so far (0.8)"


def test_without_a_direction_the_line_follows_the_latest_kept_value() -> None:
    ledger = _ledger(_row(0, "committed", 0.5), _row(1, "committed", 0.6), direction=None)
    axes = ledger_figure(ledger).axes[0]
    assert axes.get_ylabel() == "val_mse"
    assert _legend(ledger)[0] == "latest kept (0.6)"


def test_an_override_rollback_draws_the_round_as_rolled_back() -> None:
    ledger = _ledger(_row(0, "committed", 0.5), _row(1, "committed", 0.4),
                     ExperienceRow(round=1, verdict="override: rollback"))
    assert _legend(ledger) == ["best so far (0.5)", "baseline R0 (0.5)", "committed (1)",
                               "rolled back (1)"]


def test_repeated_measurements_draw_their_spread_as_error_bars() -> None:
    ledger = _ledger(_row(0, "committed", 0.5, "0.5 ± 0.05 (n=3)"))
    container = ledger_figure(ledger).axes[0].containers[0]
    _, _, (bars,) = container
    (segment,) = bars.get_segments()
    assert [y for _, y in segment] == pytest.approx([0.45, 0.55])


def test_a_ledger_parsed_with_nan_and_inf_cells_plots(tmp_path: Path) -> None:
    text = ("# Experiences\n\nbest: loss = 1 (R0)\nrounds: 3 / 5\nstatus: completed\n\n"
            "| Round | Compliance | Result | Verdict | Strategy | Insight | Note |\n"
            "|---|---|---|---|---|---|---|\n"
            "| 0 | pass | 1.0 | committed | baseline | b |  |\n"
            "| 1 | pass | nan | rolled_back | a | diverged |  |\n"
            "| 2 | pass | inf | rolled_back | b | exploded |  |\n"
            "| 3 | fail | — | rolled_back | c | edited a fixed file |  |\n")
    ledger = parse_experiences(text)
    assert "failed / no value (3)" in _legend(ledger)
    assert png_size(plot_ledger(ledger, tmp_path / PLOT_FILENAME).read_bytes()) == (800, 450)


def test_the_file_changes_when_a_round_is_added(tmp_path: Path) -> None:
    path = tmp_path / PLOT_FILENAME
    ledger = _ledger(_row(0, "committed", 0.5))
    before = plot_ledger(ledger, path).read_bytes()
    after = plot_ledger(ledger.with_row(_row(1, "committed", 0.4)), path).read_bytes()
    assert before != after


def test_an_iteration_ledger_without_a_metric_draws_the_verdicts() -> None:
    ledger = Experiences(metric="criteria", max_rounds=4, columns=ITERATION_COLUMNS, rows=[
        ExperienceRow(round=0, verdict="committed", extra={"Metrics": "fail: acc=0.8"}),
        ExperienceRow(round=1, verdict="rolled_back"),
        ExperienceRow(round=2, verdict="committed_with_note")])
    axes = ledger_figure(ledger).axes[0]
    assert [t.get_text() for t in axes.texts] == ["no numeric metric: the verdict of each round"]
    assert _legend(ledger) == ["committed (2)", "rolled back (1)"]
    assert png_size(plot_png(ledger)) == (800, 450)
