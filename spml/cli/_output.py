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
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from spml.errors import BaselineFailed, SpmlError
from spml.protocols.experiences import Experiences

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
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def ledger_table(ledger: Experiences, title: str = "experiences.md") -> Table:
    """The ledger as a rich table."""
    # One line per round: long Strategy/Insight/Note cells are cut here; experiences.md has
    # them in full.
    columns = [c for c in ledger.columns if c not in ("Note", "User Hint")
               or any(r.note for r in ledger.rows)]
    table = Table(title=title, expand=True)
    for column in columns:
        wide = column in ("Strategy", "Insight", "Note", "User Hint", "Metrics")
        table.add_column(column, no_wrap=True, overflow="ellipsis", ratio=3 if wide else None)
    best = ledger.best
    for row in ledger.rows:
        style = "bold green" if best is not None and row.round == best.round else (
            "red" if row.compliance == "fail" else None)
        cells = dict(zip(ledger.columns, row.cells(ledger.columns), strict=True))
        table.add_row(*(cells[c] for c in columns), style=style)
    return table


def ledger_header(ledger: Experiences) -> str:
    """The ledger's three header lines in one."""
    best = ledger.best
    best_text = f"{best.result:.6g} (R{best.round})" if best and best.result is not None else "—"
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
