"""What a person sees at 80 columns and through a pipe: the ledger table, the per-round line,
the startup line, and `status --plot` (real experiments driven without Prefect)."""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

from helpers import drive, iteration_experiment
from rich.console import Console
from typer.testing import CliRunner

from spml.cli import app
from spml.cli._output import ledger_table
from spml.cli._ui import server_in_use
from spml.cli.progress import print_line
from spml.protocols.experiences import ITERATION_COLUMNS, ExperienceRow, Experiences

runner = CliRunner()
INSIGHT = ("the validation loss did not improve because the learning rate schedule was too "
           "aggressive for the small batch size")
STRATEGY = "lower the peak learning rate and lengthen warmup [1e-4, 1e-2] to stabilise training"
NOTE = "try a cosine schedule next"


def _ledger() -> Experiences:
    rows = [ExperienceRow(round=0, compliance="pass", result=0.2234, verdict="committed",
                          strategy="baseline", insight="measured on the base commit"),
            ExperienceRow(round=1, compliance="pass", result=0.12345678901234566,
                          result_text="0.12345678901234566 ± 0.0012 (n=3)",
                          verdict="rolled_back", strategy=STRATEGY, insight=INSIGHT),
            ExperienceRow(round=2, compliance="fail", verdict="rolled_back", strategy=STRATEGY,
                          insight=INSIGHT, note=NOTE)]
    return Experiences(metric="val_mse", max_rounds=8, direction="minimize", rows=rows)


def _render(renderable: object, width: int) -> str:
    """What a pipe gets: a console that is not a terminal, at ``width`` columns."""
    out = Console(file=io.StringIO(), width=width)
    out.print(renderable)
    return out.file.getvalue()  # type: ignore[attr-defined]


def _words(text: str) -> list[str]:
    return re.sub(r"[│┃┏┓┗┛┡┩└┘┳┻╇┴━─]", " ", text).split()


def _column(text: str, name: str) -> list[str]:
    """Each row's cell of column ``name``, its wrapped lines joined again."""
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    index = [cell.strip() for cell in header.split("┃")].index(name)
    cells: list[list[str]] = []
    for line in _data_lines(text):
        parts = [cell.strip() for cell in line.split("│")]
        if parts[1]:  # a Round number starts a row
            cells.append([])
        cells[-1] += [parts[index]] if parts[index] else []
    return [" ".join(cell) for cell in cells]


def _data_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("│")]


def test_at_80_columns_every_word_of_strategy_and_insight_is_whole() -> None:
    text = _render(ledger_table(_ledger()), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    shown = _words(text)
    for word in {*INSIGHT.split(), *STRATEGY.split()}:
        assert word in shown, word
    assert {"Strategy", "Insight", "Result", "Verdict"} <= set(shown)
    # each cell, re-joined from its wrapped lines, reads as written
    assert _column(text, "Insight")[1:] == [INSIGHT, INSIGHT]
    assert _column(text, "Strategy")[1:] == [STRATEGY, STRATEGY]


def test_at_80_columns_the_least_important_columns_give_way() -> None:
    narrow = _words(_render(ledger_table(_ledger()), 80))
    wide = _words(_render(ledger_table(_ledger()), 200))
    assert "Compliance" not in narrow
    assert "Note" not in narrow
    assert {"Compliance", "Note", *NOTE.split()} <= set(wide)


def test_at_200_columns_each_round_is_one_line_cut_after_whole_words() -> None:
    text = _render(ledger_table(_ledger()), 200)
    lines = _data_lines(text)
    assert [line.split("│")[1].strip() for line in lines] == ["0", "1", "2"]
    words = set(INSIGHT.split()) | set(STRATEGY.split())
    for cut in re.findall(r"(\S+) …", text):
        assert cut in words, cut  # the word before the ellipsis is whole
    assert max(len(line) for line in text.splitlines()) <= 200


def test_a_short_ledger_stays_one_line_per_round_at_80_columns() -> None:
    ledger = Experiences(metric="loss", max_rounds=3, rows=[
        ExperienceRow(round=0, compliance="pass", result=9.0, verdict="committed",
                      strategy="baseline", insight="b"),
        ExperienceRow(round=1, compliance="pass", result=8.5, verdict="committed",
                      strategy="x=3", insight="improved")])
    text = _render(ledger_table(ledger), 80)
    assert len(_data_lines(text)) == 2
    assert "Compliance" in text


def test_an_iteration_ledger_fits_80_columns_with_its_metrics_whole() -> None:
    metrics = "fail: acc=0.8 vs incumbent 0.8, noise margin 0.008; needs acc >= 0.9"
    ledger = Experiences(metric="acc", max_rounds=3, columns=ITERATION_COLUMNS, rows=[
        ExperienceRow(round=1, verdict="committed_with_note", strategy=STRATEGY,
                      insight=INSIGHT, extra={"Metrics": metrics, "Speed": "pass: t=1 <= 20",
                                              "Observability": "fail: missing grad_norm",
                                              "Stability": "pass: no NaN/Inf"})])
    text = _render(ledger_table(ledger), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    shown = _words(text)
    for word in {*metrics.split(), *INSIGHT.split(), "committed_with_note"}:
        assert word in shown, word


def test_cells_are_text_not_markup() -> None:
    ledger = Experiences(metric="loss", max_rounds=1, rows=[ExperienceRow(
        round=0, verdict="committed", strategy="[bold]lr[/bold] in [1e-4, 1e-2]")])
    assert "[bold]lr[/bold]" in _render(ledger_table(ledger), 120)


def test_the_round_line_is_one_line_through_a_pipe() -> None:
    out = Console(file=io.StringIO(), width=80)
    row = _ledger().rows[1]
    print_line(row, 8, "val_mse", out)
    printed = out.file.getvalue()  # type: ignore[attr-defined]
    assert printed.count("\n") == 1
    assert INSIGHT in printed
    assert STRATEGY in printed
    assert printed.startswith("R1/8 val_mse=0.12345678901234566 ± 0.0012 (n=3) rolled_back")


def test_a_server_is_in_use_only_when_one_is_configured() -> None:
    """Then the startup hint is left out and the run's UI address is printed (the address:
    `tests/flows/test_what_the_ui_shows.py`)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: ""}):
        assert not server_in_use()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert server_in_use()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_autoresearch_status_plot_writes_the_png_beside_the_ledger(toy_experiment) -> None:
    exp = toy_experiment(plan={"default": "good", "2": "crash"})
    drive(exp, max_rounds=2)
    result = runner.invoke(app, ["autoresearch", "status", str(exp), "--plot"],
                           terminal_width=80)
    assert result.exit_code == 0, result.output
    plot = exp / "experiences.png"
    assert f"plot: {plot}" in result.output.splitlines()
    assert _png_size(plot) == (800, 450)
    assert max(len(line) for line in result.output.splitlines()[:-1]) <= 80


def test_status_without_plot_writes_no_png_and_plot_needs_a_ledger(toy_experiment) -> None:
    exp = toy_experiment()
    result = runner.invoke(app, ["autoresearch", "status", str(exp), "--plot"])
    assert result.exit_code == 0, result.output
    assert "plot: nothing to draw, the loop has not started" in result.output
    drive(exp, max_rounds=0)
    assert runner.invoke(app, ["autoresearch", "status", str(exp)]).exit_code == 0
    assert not (exp / "experiences.png").exists()


def test_iteration_status_plot_writes_the_png(tmp_path: Path) -> None:
    exp = iteration_experiment(tmp_path, {"1": {"lr": 0.5}})
    drive(exp, kind="ml-iteration")
    result = runner.invoke(app, ["iteration", "status", str(exp), "--plot"])
    assert result.exit_code == 0, result.output
    assert _png_size(exp / "experiences.png") == (800, 450)


def test_the_plot_does_not_block_the_next_run(tmp_path: Path) -> None:
    from spml.cli._loop import check_protocol

    exp = iteration_experiment(tmp_path, {})  # ml-iteration: every file is the researcher's
    drive(exp, kind="ml-iteration")
    assert runner.invoke(app, ["iteration", "status", str(exp), "--plot"]).exit_code == 0
    check_protocol(exp, "ml-iteration", max_rounds=2)


def test_a_long_word_in_a_wrapped_cell_is_kept_whole_at_80_columns() -> None:
    rows = [ExperienceRow(round=0, compliance="pass", result=0.5, verdict="committed",
                          strategy="baseline", insight="measured"),
            ExperienceRow(round=1, compliance="pass", result=0.25, verdict="committed",
                          strategy="set log_grad_norm=True and warmup_ratio=0.05 for "
                          "stability", insight=INSIGHT)]
    ledger = Experiences(metric="val_mse", max_rounds=3, direction="minimize", rows=rows)
    out = io.StringIO()
    Console(file=out, width=80).print(ledger_table(ledger))
    text = out.getvalue()
    assert "log_grad_norm=True" in text  # not folded to `log_grad_norm=Tr` / `ue`
    assert "warmup_ratio=0.05" in text
    assert max(len(line) for line in text.splitlines()) <= 80
