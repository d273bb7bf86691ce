"""Terminal output and the one place where errors become exit codes.

Every command runs under :class:`SpmlGroup` (the root group of `spml`): an expected error
(:class:`~spml.errors.SpmlError`, a pydantic ``ValidationError``) raised anywhere below it is
printed as one clean ``error: ...`` message (a JSON object for ``--format json``) and becomes
exit 2 (1 for a failed baseline); its traceback is printed only under ``spml -v``. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from spml.errors import BaselineFailed, SpmlError
from spml.protocols.experiences import ExperienceRow, Experiences, format_value

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

EXIT_FAILED = 1      # the experiment ran but failed (e.g. the baseline could not be measured)
EXIT_USAGE = 2       # bad protocol, bad repository state, another supervisor running
EXPECTED = (SpmlError, ValidationError)


@dataclass
class CliState:
    """Options of this invocation that decide how errors are shown."""

    verbose: bool = False      # tracebacks and Prefect's logs
    json_errors: bool = False  # the command prints JSON: its errors are JSON too


STATE = CliState()


def start_invocation(verbose: bool) -> None:
    """Reset the state for a new invocation (one process may run several, e.g. in tests)."""
    STATE.verbose, STATE.json_errors = verbose, False


def set_verbose(verbose: bool) -> None:
    """A command's own ``-v`` adds to the global one."""
    STATE.verbose = STATE.verbose or verbose


def use_json_errors(enabled: bool) -> None:
    """Print this command's expected errors as a JSON object on stdout."""
    STATE.json_errors = enabled


def exit_code_of(exc: BaseException) -> int:
    """The exit code of an expected error."""
    return EXIT_FAILED if isinstance(exc, BaselineFailed) else EXIT_USAGE


def report_error(exc: Exception) -> int:
    """Print an expected error (its traceback too under ``-v``); return its exit code."""
    code = exit_code_of(exc)
    if STATE.verbose:
        sys.stderr.write("".join(traceback.format_exception(exc)))
    message = error_message(exc)
    if STATE.json_errors:
        typer.echo(json.dumps({"error": {"type": type(exc).__name__, "message": message,
                                         "exit_code": code}}, indent=2))
        return code
    # escape: messages name TOML tables like [tool.spml.validate], not rich markup;
    # soft_wrap: one message is one line (the terminal wraps it), whole for grep and logs
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return code


def error_message(exc: Exception) -> str:
    """The one-line message of an expected error."""
    if isinstance(exc, ValidationError):  # every problem, "; "-separated
        return "invalid input: " + "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors(include_url=False))
    return str(exc)


def guarded(action: Callable[[], T]) -> T:
    """Run ``action``; print expected errors without a traceback and exit with their code."""
    try:
        return action()
    except EXPECTED as exc:
        raise typer.Exit(report_error(exc)) from None


class SpmlGroup(TyperGroup):
    """The root group: every command's expected errors end here, as a message and a code."""

    def invoke(self, ctx: typer.Context) -> Any:
        """Run the command; an expected error becomes its message and exit code."""
        try:
            return super().invoke(ctx)
        except EXPECTED as exc:
            raise typer.Exit(report_error(exc)) from None
        except typer.Abort:
            if sys.stdin.isatty():
                raise  # Ctrl-C at a prompt: Click's own "Aborted!", exit 1
            # A prompt met the end of a non-interactive input (a script, a pipe, CI).
            err_console.print("error: a required value was not given and cannot be prompted "
                              "for (standard input is not a terminal). Pass every required "
                              "option as a flag; see --help.", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USAGE) from None


class _ExpectedErrorRecords(logging.Filter):
    """Drops Prefect's records of an expected error: its traceback, and the failed state that
    repeats it (``Finished in state Failed('... exception ProtocolError: ...')``)."""

    def __init__(self) -> None:
        super().__init__()
        self._names: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, SpmlError):
            self._names.add(type(exc).__name__)
            return False
        if record.levelno < logging.ERROR or not self._names:
            return True
        text = record.getMessage()  # tasks: "exception X: ...", flows: "exception: X: ..."
        return not any(f"exception {name}:" in text or f"exception: {name}:" in text
                       for name in self._names)


@contextmanager
def expected_errors_off_console() -> Iterator[None]:
    """Keep Prefect's tracebacks of expected errors off the terminal (not under ``-v``).

    Prefect logs a failed task or flow run with its traceback (loggers `prefect.task_runs`,
    `prefect.flow_runs`) before the exception reaches the CLI, which prints the message itself.
    The filter sits on Prefect's console handler only, so the Prefect server (the API handler)
    still gets every record, traceback included. Enter it after `prefect` is imported.
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = [] if STATE.verbose else [
        h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    records = _ExpectedErrorRecords()
    for handler in handlers:
        handler.addFilter(records)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(records)


def quiet_prefect(verbose: bool = False) -> None:
    """Prefect settings for CLI runs; must run before `prefect` is imported."""
    set_verbose(verbose)
    verbose = STATE.verbose
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "spml")
    # The embedded server's first-start analytics write races its own migrations on SQLite
    # ("database is locked" tracebacks); spml never needs it.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The embedded server needs more than Prefect's default 20 s on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        # Only the terminal is quiet: INFO logs (each round's strategy, result, verdict, the
        # notes picked up) still reach the server, where the run's Logs tab shows them.
        # (PREFECT_LOGGING_LEVEL would silence the API handler too.)
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "WARNING")


def ledger_table(ledger: Experiences, title: str = "experiences.md") -> LedgerTable:
    """The ledger as a rich table, laid out for the width it is printed at."""
    return LedgerTable(ledger, title)


# Short codes that never wrap; the least wide each other column may get (Strategy and Insight
# are what a person reads); the columns that give way, first to last, when the console is too
# narrow for those widths (experiences.md keeps every column in full).
_NO_WRAP = ("Round", "Compliance", "Verdict")
_MIN_WIDTH = {"Strategy": 15, "Insight": 15}
_OTHER_MIN_WIDTH = 10
_LONGEST_KEPT_WORD = 24
_DROP_ORDER = ("Compliance", "Note", "User Hint", "Time", "Custom", "Stability",
               "Observability", "Speed")
_ONE_LINE_WIDTH = 30  # a column this wide reads fine cut at a word: one line per round
_BORDERS = 3          # per column: two cells of padding and one rule (plus one at the end)


@dataclass(frozen=True)
class LedgerTable:
    """The ledger as a table that fits the console: one line per round, long cells cut after a
    whole word, where every column gets 30 cells or its whole text; else cells wrapped at words
    and, when Strategy and Insight would get under 15 cells, the least important columns left
    out. A word is never cut to a few letters and an ellipsis."""

    ledger: Experiences
    title: str = "experiences.md"

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Lay the table out for the width it is printed at."""
        yield self.table(options.max_width)

    def table(self, width: int) -> Table:
        """The table laid out for ``width`` cells."""
        cells = [_shown_cells(row, self.ledger.columns) for row in self.ledger.rows]
        columns = [c for c in self.ledger.columns if c not in ("Note", "User Hint")
                   or any(r.note for r in self.ledger.rows)]
        widths = _fit(columns, cells, width)
        one_line = all(w >= min(_natural(c, cells), _ONE_LINE_WIDTH) for c, w in widths.items())
        table = Table(title=self.title)
        for column, column_width in widths.items():
            wraps = not one_line and column not in _NO_WRAP
            table.add_column(column, width=column_width, no_wrap=not wraps,
                             overflow="fold" if wraps else "ellipsis")
        best = self.ledger.best
        for row, row_cells in zip(self.ledger.rows, cells, strict=True):
            style = "bold green" if best is not None and row.round == best.round else (
                "red" if row.compliance == "fail" else None)
            # Text, not markup: a strategy like "lr in [1e-4, 1e-2]" is printed as written.
            table.add_row(*(Text(_shorten(row_cells[c], w) if one_line else row_cells[c])
                            for c, w in widths.items()), style=style)
        return table


def _shown_cells(row: ExperienceRow, columns: tuple[str, ...]) -> dict[str, str]:
    """The row's cells by column, its Result to six digits (the ledger keeps every digit so
    decisions can read it back; a person reads six, and a 17-digit mean squeezes the prose)."""
    cells = dict(zip(columns, row.cells(columns), strict=True))
    if "Result" in cells and row.result is not None:
        number, space, rest = cells["Result"].partition(" ")
        with suppress(ValueError):
            if float(number) == row.result:
                cells["Result"] = format_value(row.result) + space + rest
    return cells


def _fit(columns: list[str], cells: list[dict[str, str]], width: int) -> dict[str, int]:
    """Each shown column's width, leaving columns out (in `_DROP_ORDER`) until the rest fit."""
    columns = list(columns)
    for drop in (None, *_DROP_ORDER):
        if drop is not None:
            if drop not in columns:
                continue
            columns.remove(drop)
        widths = _share(columns, cells, width - _BORDERS * len(columns) - 1)
        if widths is not None:
            return widths
    return {c: _least_width(c, cells) for c in columns}  # a tiny console: rich squeezes


def _share(columns: list[str], cells: list[dict[str, str]], room: int) -> dict[str, int] | None:
    """Widths within ``room``: the widest columns are capped, all at the same width, and none
    goes under its least width; None when even the least widths do not fit."""
    bounds = {c: (_least_width(c, cells), _natural(c, cells)) for c in columns}
    if sum(low for low, _ in bounds.values()) > room:
        return None
    for cap in range(max((high for _, high in bounds.values()), default=0), -1, -1):
        widths = {c: max(low, min(high, cap)) for c, (low, high) in bounds.items()}
        if sum(widths.values()) <= room:
            return widths
    return {c: low for c, (low, _) in bounds.items()}


def _natural(column: str, cells: list[dict[str, str]]) -> int:
    """The width that shows the column's header and every cell whole on one line."""
    return max([cell_len(column), *(cell_len(row[column]) for row in cells)])


def _least_width(column: str, cells: list[dict[str, str]]) -> int:
    """Short codes keep their width and numbers their longest word; prose may wrap down to
    15 cells (Strategy, Insight) or 10."""
    if column in _NO_WRAP:
        return _natural(column, cells)
    if column == "Result":
        return max([cell_len(column), *(cell_len(word) for row in cells
                                         for word in row[column].split())])
    # Wide enough for its longest word (up to `_LONGEST_KEPT_WORD`): `log_grad_norm=True` is
    # never folded to `...=Tr` / `ue`; a longer token (a path) may still fold.
    longest = max((cell_len(word) for row in cells for word in row[column].split()), default=0)
    least = max(_MIN_WIDTH.get(column, _OTHER_MIN_WIDTH), cell_len(column),
                min(longest, _LONGEST_KEPT_WORD))
    return min(_natural(column, cells), least)


def _shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells after its last whole word, then " …" (the space says
    the word before it is whole)."""
    if cell_len(text) <= width:
        return text
    cut = set_cell_size(text, width - 2).rstrip()
    if " " in cut and not text[len(cut)].isspace():  # the cut fell inside a word: drop it
        cut = cut.rsplit(" ", 1)[0].rstrip()
    return cut + " …"


def ledger_header(ledger: Experiences) -> str:
    """The ledger's three header lines in one."""
    best_text = ledger.best_text if ledger.best_value is not None else "—"
    return (f"best {ledger.metric} = {best_text} · rounds {ledger.rounds_done}/"
            f"{ledger.max_rounds} · status {ledger.status}")


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM/SIGHUP (timeout, CI cancel, docker stop, Prefect cancel) raise
    KeyboardInterrupt like Ctrl-C, so the runners' cleanup kills the child process groups."""
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
