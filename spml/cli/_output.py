"""Terminal output and the one place where errors become exit codes."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spml.errors import SpmlError
from spml.protocols.experiences import Experiences

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

EXIT_FAILED = 1      # the experiment ran but failed (e.g. the baseline could not be measured)
EXIT_USAGE = 2       # bad protocol, bad repository state, another supervisor running


def guarded(action: Callable[[], T]) -> T:
    """Run ``action``; print expected errors without a traceback and exit with their code."""
    try:
        return action()
    except SpmlError as exc:
        from spml.errors import BaselineFailed

        # escape: messages name TOML tables like [tool.spml.validate], not rich markup
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_FAILED if isinstance(exc, BaselineFailed) else EXIT_USAGE) from None
    except ValidationError as exc:
        err_console.print("[bold red]error:[/] invalid input", highlight=False)
        for err in exc.errors(include_url=False):
            err_console.print(f"  - {'.'.join(map(str, err['loc']))}: {err['msg']}")
        raise typer.Exit(EXIT_USAGE) from None


def quiet_prefect(verbose: bool) -> None:
    """Prefect settings for CLI runs; must run before `prefect` is imported."""
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
