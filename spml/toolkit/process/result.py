"""How a command ended: `ExitKind` and `CommandResult`, with the text used in ledgers."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

# Exit codes 128+N that a shell reports for a child killed by signal N.
_SHELL_SIGNALS = frozenset(
    {signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV, signal.SIGABRT, signal.SIGINT}
)
# What the shell means by these codes: the command never ran (a typo, a missing venv, no +x).
SHELL_EXIT_NAMES = {126: "command not executable", 127: "command not found"}
_TAIL_READ_BYTES = 256 * 1024
_DESCRIBE_MAX = 200


class ExitKind(StrEnum):
    """How a command ended."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    SIGNALED = "signaled"


@dataclass(frozen=True)
class CommandResult:
    """Outcome of :func:`run_command`; output stays in the log files, read on demand."""

    command: str
    exit_code: int | None
    kind: ExitKind
    duration_s: float
    stdout_path: Path
    stderr_path: Path
    time_limit_s: float | None

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0 within its time limit."""
        return self.kind is ExitKind.OK

    def stdout_text(self, max_bytes: int = 1_000_000) -> str:
        """Return the last ``max_bytes`` of stdout, decoded as UTF-8 (bad bytes replaced).

        Args:
            max_bytes: Upper bound on the bytes read from the end of the log.

        Returns:
            The decoded text; ``""`` when the log is missing.
        """
        return _read_tail(self.stdout_path, max_bytes)

    def stderr_tail(self, lines: int = 20) -> str:
        """Return the last ``lines`` lines of stderr joined by newlines.

        Args:
            lines: How many lines to keep (progress-bar ``\\r`` updates count as lines).

        Returns:
            The tail text; ``""`` when the log is missing or empty.
        """
        if lines <= 0:
            return ""
        return "\n".join(_read_tail(self.stderr_path, _TAIL_READ_BYTES).splitlines()[-lines:])

    def describe(self) -> str:
        """Summarise the outcome in one line of at most 200 characters (for a ledger Insight).

        Returns:
            E.g. ``"exit 1: ValueError: boom"``, ``"exit 127 (command not found): ..."`` or
            ``"killed after exceeding 90s time limit (process group terminated)"``.
        """
        if self.kind is ExitKind.TIMEOUT:
            text = (
                f"killed after exceeding {self.time_limit_s:g}s time limit "
                "(process group terminated)"
            )
        elif self.kind is ExitKind.SIGNALED:
            text = _describe_signal(self.exit_code)
            if last := self._last_output_line():
                text = f"{text}: {last}"
        elif self.kind is ExitKind.OK:
            text = f"exit 0 after {self.duration_s:.1f}s"
        else:
            name = SHELL_EXIT_NAMES.get(self.exit_code or 0, "")
            text = (f"exit {self.exit_code}{f' ({name})' if name else ''}: "
                    f"{self._last_output_line() or '(no output)'}")
        return _one_line(text, _DESCRIBE_MAX)

    def _last_output_line(self) -> str:
        for path in (self.stderr_path, self.stdout_path):
            for line in reversed(_read_tail(path, 64 * 1024).splitlines()):
                if line.strip():
                    return line.strip()
        return ""


def classify_returncode(returncode: int | None) -> ExitKind:
    if returncode == 0:
        return ExitKind.OK
    if returncode is None or returncode < 0:
        return ExitKind.SIGNALED
    if returncode - 128 in _SHELL_SIGNALS:
        return ExitKind.SIGNALED
    return ExitKind.FAILED


def _describe_signal(exit_code: int | None) -> str:
    if exit_code is None:
        return "killed by a signal"
    number = -exit_code if exit_code < 0 else exit_code - 128
    try:
        sig_name = signal.Signals(number).name
    except ValueError:
        sig_name = "unknown signal"
    text = f"killed by signal {number} ({sig_name})"
    return text if exit_code < 0 else f"{text}, exit code {exit_code}"


def _read_tail(path: Path, max_bytes: int) -> str:
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(size - max(max_bytes, 0), 0))
            data = fh.read()
    except OSError:
        return ""
    if len(data) < size:
        data = data.lstrip(bytes(range(0x80, 0xC0)))  # drop a cut-off UTF-8 sequence
    return data.decode("utf-8", errors="replace")


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
