"""`experiences.md`: the loop's ledger, ONE schema, written by the supervisor and parsed on resume.

Layout::

    # Experiences

    best: val_mse = 0.0123 (R3)
    rounds: 3 / 8
    status: running

    | Round | Compliance | Result | Verdict | Strategy | Insight | Note |
    |---|---|---|---|---|---|---|
    | 0 | pass | 0.2234 | committed | baseline | measured on the base commit |  |

Round 0 is the baseline. Verdict is `committed` or `rolled_back`; Compliance is `pass`, `fail`
or `n/a` (not checked because the researcher failed first); the Insight names the cause.
"""

from __future__ import annotations

import math
import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from spml.errors import ProtocolError

Status = Literal["not_started", "running", "completed", "target_reached", "stopped"]
Verdict = Literal["committed", "rolled_back"]
Compliance = Literal["pass", "fail", "n/a"]
COLUMNS = ("Round", "Compliance", "Result", "Verdict", "Strategy", "Insight", "Note")
NO_VALUE = "—"
_HEADER_BEST = re.compile(r"^best:\s*(?P<metric>\S+)\s*=\s*(?P<value>\S+)\s*\((?P<round>[^)]*)\)")
_HEADER_ROUNDS = re.compile(r"^rounds:\s*(\d+)\s*/\s*(\d+)")
_HEADER_STATUS = re.compile(r"^status:\s*(\S+)")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan", re.IGNORECASE)
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


class ExperienceRow(BaseModel):
    """One round of the loop."""

    model_config = ConfigDict(frozen=True)

    round: int = Field(ge=0)
    compliance: Compliance
    result: float | None = None
    result_text: str = ""
    verdict: Verdict
    strategy: str = ""
    insight: str = ""
    note: str = ""

    def cells(self) -> list[str]:
        """The row's markdown cells in column order."""
        shown = NO_VALUE if self.result is None else exact_value(self.result)
        result = self.result_text or shown
        return [str(self.round), self.compliance, result, self.verdict, self.strategy,
                self.insight, self.note]


class Experiences(BaseModel):
    """The whole ledger: header fields plus every round's row."""

    metric: str
    max_rounds: int = Field(ge=0)
    status: Status = "not_started"
    rows: list[ExperienceRow] = Field(default_factory=list)

    @property
    def rounds_done(self) -> int:
        """Highest recorded round number (round 0, the baseline, does not count)."""
        return max((row.round for row in self.rows), default=0)

    @property
    def best(self) -> ExperienceRow | None:
        """The last committed row with a value: every commit had to beat the best before it."""
        committed = [r for r in self.rows if r.verdict == "committed" and r.result is not None]
        return committed[-1] if committed else None

    def has_round(self, round_no: int) -> bool:
        """Whether a row for ``round_no`` is recorded."""
        return any(row.round == round_no for row in self.rows)

    def window(self, size: int) -> list[ExperienceRow]:
        """The last ``size`` rows, oldest first (what the researcher sees)."""
        return self.rows[-size:] if size > 0 else []  # rows[-0:] would be every row

    def rounds_since_improvement(self) -> int:
        """Consecutive rounds, counted from the newest, that were rolled back."""
        count = 0
        for row in reversed(self.rows):
            if row.verdict == "committed":
                break
            count += 1
        return count

    def with_row(self, row: ExperienceRow) -> Experiences:
        """A copy with ``row`` added (replacing a row of the same round)."""
        rows = [r for r in self.rows if r.round != row.round] + [row]
        return self.model_copy(update={"rows": sorted(rows, key=lambda r: r.round)})

    def render(self) -> str:
        """The markdown text of the ledger."""
        best = self.best
        best_text = (f"{format_value(best.result)} (R{best.round})"
                     if best is not None and best.result is not None else f"{NO_VALUE} (none)")
        lines = [
            "# Experiences", "",
            f"best: {self.metric} = {best_text}",
            f"rounds: {self.rounds_done} / {self.max_rounds}",
            f"status: {self.status}", "",
            *table_lines(self.rows),
        ]
        return "\n".join(lines) + "\n"


def table_lines(rows: list[ExperienceRow]) -> list[str]:
    """The markdown table (header, rule, one line per row) of ``rows``."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return lines + ["| " + " | ".join(_escape(c) for c in row.cells()) + " |" for row in rows]


def format_value(value: float) -> str:
    """Six significant digits, the form used in the ledger and commit messages."""
    return f"{value:.6g}"


def exact_value(value: float) -> str:
    """The shortest text that parses back to exactly ``value``: decisions read the ledger, so
    it must not round (a 6-digit best would accept a worse value in the 7th digit)."""
    return repr(float(value))


def format_result(values: list[float]) -> str:
    """Exact mean, and for several repeats the spread: ``0.0123 ± 0.0004 (n=3)``."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return exact_value(mean)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{exact_value(mean)} ± {std:.2g} (n={len(values)})"


def _escape(cell: str) -> str:
    return " ".join(cell.split()).replace("|", "\\|")


def _unescape(cell: str) -> str:
    return cell.strip().replace("\\|", "|")


def parse_experiences(text: str, source: str = "experiences.md") -> Experiences:
    """Parse a ledger written by `Experiences.render` (also after hand edits of prose cells).

    Raises:
        ProtocolError: a header line or a table row is malformed (names the line).
    """
    header: dict[str, object] = {}
    rows: list[ExperienceRow] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("|"):
            row = _parse_row(line, number, source)
            if row is not None:
                rows.append(row)
        else:
            _parse_header_line(line, number, source, header)
    for key in ("metric", "max_rounds", "status"):
        if key not in header:
            raise ProtocolError(f"{source} must have a '{_HEADER_NAMES[key]}' header line. "
                                "Restore it or delete the file to start a new ledger.")
    return Experiences(metric=str(header["metric"]), max_rounds=int(header["max_rounds"]),
                       status=header["status"], rows=rows)  # type: ignore[arg-type]


_HEADER_NAMES = {"metric": "best: <metric> = ...", "max_rounds": "rounds: <done> / <max>",
                 "status": "status: ..."}


def _parse_header_line(line: str, number: int, source: str, header: dict[str, object]) -> None:
    if match := _HEADER_BEST.match(line):
        header["metric"] = match.group("metric")
    elif match := _HEADER_ROUNDS.match(line):
        header["max_rounds"] = int(match.group(2))
    elif match := _HEADER_STATUS.match(line):
        if match.group(1) not in get_args(Status):
            raise ProtocolError(f"{source} line {number}: status must be one of "
                                f"{', '.join(get_args(Status))}, got {match.group(1)!r}.")
        header["status"] = match.group(1)


def _parse_row(line: str, number: int, source: str) -> ExperienceRow | None:
    cells = [_unescape(c) for c in _CELL_SPLIT.split(line.strip())[1:-1]]
    if not cells or cells[0] == "Round" or set(cells[0]) <= {"-", ":"}:
        return None
    if len(cells) != len(COLUMNS):
        raise ProtocolError(f"{source} line {number}: a round row must have {len(COLUMNS)} "
                            f"cells ({' | '.join(COLUMNS)}), got {len(cells)}.")
    try:
        result_match = _NUMBER.search(cells[2])
        return ExperienceRow(
            round=int(cells[0]), compliance=cells[1],  # type: ignore[arg-type]
            result=float(result_match.group(0)) if result_match else None,
            result_text=cells[2], verdict=cells[3],  # type: ignore[arg-type]
            strategy=cells[4], insight=cells[5], note=cells[6],
        )
    except ValueError as exc:
        raise ProtocolError(f"{source} line {number}: malformed round row: {exc}") from None
