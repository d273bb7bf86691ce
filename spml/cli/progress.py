"""Live progress of a running loop, read from its ledger (works with any Prefect backend)."""

from __future__ import annotations

import threading
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from spml.cli._output import console
from spml.errors import SpmlError
from spml.protocols.experiences import ExperienceRow, parse_experiences


class LedgerWatcher:
    """Prints one line per new ledger row while the loop runs in the main thread."""

    def __init__(self, ledger_path: Path, interval_s: float = 0.5) -> None:
        self._path = ledger_path
        self._interval = interval_s
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spml-progress", daemon=True)

    def __enter__(self) -> LedgerWatcher:
        self._poll(announce=False)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._poll(announce=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._poll(announce=True)

    def _poll(self, announce: bool) -> None:
        try:
            ledger = parse_experiences(self._path.read_text(encoding="utf-8"))
        except (OSError, SpmlError):
            return  # not written yet, or caught mid-replace: try again next tick
        for row in ledger.rows:
            if row.round not in self._seen:
                self._seen.add(row.round)
                if announce:
                    print_line(row, ledger.max_rounds, ledger.metric)


def print_line(row: ExperienceRow, max_rounds: int, metric: str,
               out: Console | None = None) -> None:
    """Print a round's line whole (on ``out``, default the CLI's console). soft_wrap: rich
    inserts no newlines, so a pipe or a log gets one line per round (grep-able) and a terminal
    wraps it at its own edge; cutting it to the width instead would lose the insight, the
    part a person reads the line for."""
    (out or console).print(_line(row, max_rounds, metric), highlight=False, soft_wrap=True)


def _line(row: ExperienceRow, max_rounds: int, metric: str) -> str:
    colour = "green" if row.verdict == "committed" else "yellow"
    value = row.result_text or (f"{row.result:.6g}" if row.result is not None else "—")
    # escape: insights quote code and ranges ("lr in [1e-4, 1e-2]"), not rich markup
    return (f"[bold]R{row.round}/{max_rounds}[/] {escape(metric)}={escape(value)} "
            f"[{colour}]{escape(row.verdict)}[/] — {escape(row.insight)}  "
            f"[dim]{escape(row.strategy)}[/]")
