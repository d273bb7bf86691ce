"""`experiences.md`: the loop's ledger, ONE schema, written by the supervisor and parsed on resume.

Layout::

    # Experiences

    best: val_mse = 0.0123 ± 0.0004 (n=5, R3)
    rounds: 3 / 8
    status: running

    | Round | Compliance | Result | Verdict | Strategy | Insight | Note |
    |---|---|---|---|---|---|---|
    | 0 | pass | 0.2234 | committed | baseline | measured on the base commit |  |

Round 0 is the baseline. Verdict is `committed` or `rolled_back` (ml-iteration also
`committed_with_note`, and rows appended by a person's override: `override: commit|rollback`;
rows are never rewritten). Compliance is `pass`, `fail` or `n/a` (not checked because the
researcher failed first); the Insight names the cause. A `direction:` header line records the
metric's direction and ml-iteration adds `best_commit:`. The `best:` line of Auto Research's
default acceptance is the incumbent's pooled estimate (the mean of every run of the kept code,
its spread and count: `Estimate`), not the luckiest single draw; without one it is the newest
kept row's Result. Each loop kind has its own columns
(`ITERATION_COLUMNS`); the parser reads them from the table's header line.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from spml.errors import ProtocolError

# `interrupted`: the supervisor was stopped by a signal (Ctrl-C, SIGTERM); the next run resumes.
Status = Literal["not_started", "running", "interrupted", "completed", "target_reached",
                 "stopped"]
Verdict = Literal["committed", "committed_with_note", "rolled_back", "override: commit",
                  "override: rollback"]
Compliance = Literal["pass", "fail", "n/a"]
Direction = Literal["maximize", "minimize"]
KEPT: frozenset[str] = frozenset({"committed", "committed_with_note"})
COLUMNS = ("Round", "Compliance", "Result", "Verdict", "Strategy", "Insight", "Note")
ITERATION_COLUMNS = ("Round", "Strategy", "Metrics", "Speed", "Observability", "Stability",
                     "Custom", "User Hint", "Verdict", "Insight")
_FIELD_OF = {"Round": "round", "Compliance": "compliance", "Verdict": "verdict",
             "Strategy": "strategy", "Insight": "insight", "Note": "note", "User Hint": "note"}
_HEADER_DIRECTION = re.compile(r"^direction:\s*(maximize|minimize)\s*$")
_HEADER_BEST_COMMIT = re.compile(r"^best_commit:\s*(\S+)")
NO_VALUE = "—"
_HEADER_BEST = re.compile(r"^best:\s*(?P<metric>\S+)\s*=\s*(?P<value>\S+)(?:\s*±\s*(?P<sd>\S+))?"
                          r"\s*\((?:n=(?P<n>\d+),\s*)?R?(?P<round>[^)]*)\)")
_HEADER_ROUNDS = re.compile(r"^rounds:\s*(\d+)\s*/\s*(\d+)")
_HEADER_STATUS = re.compile(r"^status:\s*(\S+)")
_HEADER_SANDBOX = re.compile(r"^sandbox:\s*(.+?)\s*$")
_HEADER_HOLDOUT = re.compile(r"^holdout:\s*(.+?)\s*$")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan", re.IGNORECASE)
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


class ExperienceRow(BaseModel):
    """One round of the loop."""

    model_config = ConfigDict(frozen=True)

    round: int = Field(ge=0)
    compliance: Compliance = "n/a"
    result: float | None = None
    result_text: str = ""
    verdict: Verdict
    strategy: str = ""
    insight: str = ""
    note: str = ""
    extra: dict[str, str] = Field(default_factory=dict)  # kind-specific columns (Metrics...)

    @property
    def is_override(self) -> bool:
        """A row a person's verdict override appended (it records, it is not a round)."""
        return self.verdict.startswith("override:")

    def cells(self, columns: tuple[str, ...] = COLUMNS) -> list[str]:
        """The row's markdown cells in ``columns`` order."""
        shown = NO_VALUE if self.result is None else exact_value(self.result)
        values = {"Round": str(self.round), "Compliance": self.compliance,
                  "Result": self.result_text or shown, "Verdict": self.verdict,
                  "Strategy": self.strategy, "Insight": self.insight, "Note": self.note,
                  "User Hint": self.note}
        return [values[c] if c in values else self.extra.get(c, "") for c in columns]


class Estimate(BaseModel):
    """The incumbent's pooled value: mean of its runs, their spread, count, and its round."""

    model_config = ConfigDict(frozen=True)

    mean: float
    sd: float | None = None
    n: int = Field(ge=1)
    round: int

    def render(self) -> str:
        """`0.0123 ± 0.0004 (n=5, R3)`."""
        spread = f" ± {self.sd:.2g}" if self.sd is not None else ""
        return f"{format_value(self.mean)}{spread} (n={self.n}, R{self.round})"


class Experiences(BaseModel):
    """The whole ledger: header fields plus every round's row."""

    metric: str
    max_rounds: int = Field(ge=0)
    status: Status = "not_started"
    rows: list[ExperienceRow] = Field(default_factory=list)
    direction: Direction | None = None
    best_commit: str | None = None
    columns: tuple[str, ...] = COLUMNS
    incumbent: Estimate | None = None  # the kept code's pooled runs (see the module docstring)
    sandbox: str | None = None  # how the loop's commands were confined, in words
    holdout: str | None = None  # the end's measurement on the sealed holdout, in words

    @property
    def best_value(self) -> float | None:
        """The best's value: the incumbent's pooled mean when known, else the best row's."""
        if self.incumbent is not None:
            return self.incumbent.mean
        best = self.best
        return best.result if best is not None else None

    @property
    def best_text(self) -> str:
        """`0.0123 ± 0.0004 (n=5, R3)`, `0.0123 (R3)` or `— (none)`."""
        if self.incumbent is not None:
            return self.incumbent.render()
        best = self.best
        return (f"{format_value(best.result)} (R{best.round})"
                if best is not None and best.result is not None else f"{NO_VALUE} (none)")

    @property
    def rounds_done(self) -> int:
        """Highest recorded round number (round 0, the baseline, does not count)."""
        return max((row.round for row in self.rows if not row.is_override), default=0)

    def kept_rounds(self) -> list[int]:
        """Rounds whose change is on the branch now, oldest first (overrides applied)."""
        kept: list[int] = []
        for row in self.rows:
            if row.verdict in KEPT or row.verdict == "override: commit":
                kept = [r for r in kept if r != row.round] + [row.round]
            elif row.verdict == "override: rollback":
                kept = [r for r in kept if r != row.round]
        return kept

    @property
    def best(self) -> ExperienceRow | None:
        """The newest kept row with a value (each commit had to beat the best before it)."""
        by_round = {r.round: r for r in self.rows if not r.is_override}
        for round_no in reversed(self.kept_rounds()):
            row = by_round.get(round_no)
            if row is not None and row.result is not None:
                return row
        return None

    def has_round(self, round_no: int) -> bool:
        """Whether a row for ``round_no`` is recorded."""
        return any(row.round == round_no and not row.is_override for row in self.rows)

    def window(self, size: int) -> list[ExperienceRow]:
        """The last ``size`` rows, oldest first (what the researcher sees)."""
        return self.rows[-size:] if size > 0 else []  # rows[-0:] would be every row

    def rounds_since_improvement(self) -> int:
        """Consecutive rounds, counted from the newest, that were rolled back."""
        count = 0
        for row in reversed(self.rows):
            if row.verdict in KEPT:
                break
            count += not row.is_override
        return count

    def with_row(self, row: ExperienceRow) -> Experiences:
        """A copy with ``row`` added (replacing a row of the same round); an override row is
        appended after every row, as it happened."""
        if row.is_override:
            return self.model_copy(update={"rows": [*self.rows, row]})
        rows = [r for r in self.rows if r.round != row.round or r.is_override] + [row]
        earlier = [r.round for r in rows[:-1] if not r.is_override]
        if all(n < row.round for n in earlier):  # the newest round (a batch settles its
            return self.model_copy(update={"rows": rows})  # winner last: it is sorted in)
        return self.model_copy(update={"rows": sorted(rows, key=lambda r: r.round)})

    def render(self) -> str:
        """The markdown text of the ledger."""
        lines = ["# Experiences", "", f"best: {self.metric} = {self.best_text}"]
        if self.direction is not None:
            lines.append(f"direction: {self.direction}")
        if self.best_commit is not None:
            lines.append(f"best_commit: {self.best_commit}")
        if self.sandbox is not None:
            lines.append(f"sandbox: {self.sandbox}")
        if self.holdout is not None:
            lines.append(f"holdout: {self.holdout}")
        lines += [f"rounds: {self.rounds_done} / {self.max_rounds}",
                  f"status: {self.status}", "", *table_lines(self.rows, self.columns)]
        return "\n".join(lines) + "\n"


def table_lines(rows: list[ExperienceRow], columns: tuple[str, ...] = COLUMNS) -> list[str]:
    """The markdown table (header, rule, one line per row) of ``rows``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_escape(c) for c in row.cells(columns)) + " |"
                    for row in rows]


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
    header: dict[str, Any] = {"columns": COLUMNS}
    rows: list[ExperienceRow] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("|"):
            row = _parse_row(line, number, source, header)
            if row is not None:
                rows.append(row)
        else:
            _parse_header_line(line, number, source, header)
    for key in ("metric", "max_rounds", "status"):
        if key not in header:
            raise ProtocolError(f"{source} must have a '{_HEADER_NAMES[key]}' header line. "
                                "Restore it or delete the file to start a new ledger.")
    return Experiences(rows=rows, **header)


_HEADER_NAMES = {"metric": "best: <metric> = ...", "max_rounds": "rounds: <done> / <max>",
                 "status": "status: ..."}
_REQUIRED_COLUMNS = ("Round", "Verdict", "Strategy", "Insight")


def _parse_header_line(line: str, number: int, source: str, header: dict[str, Any]) -> None:
    if match := _HEADER_BEST.match(line):
        header["metric"] = match.group("metric")
        header["incumbent"] = _estimate(match)
    elif match := _HEADER_DIRECTION.match(line):
        header["direction"] = match.group(1)
    elif match := _HEADER_BEST_COMMIT.match(line):
        header["best_commit"] = None if match.group(1) == NO_VALUE else match.group(1)
    elif match := _HEADER_ROUNDS.match(line):
        header["max_rounds"] = int(match.group(2))
    elif match := _HEADER_SANDBOX.match(line):
        header["sandbox"] = match.group(1)
    elif match := _HEADER_HOLDOUT.match(line):
        header["holdout"] = match.group(1)
    elif match := _HEADER_STATUS.match(line):
        if match.group(1) not in get_args(Status):
            raise ProtocolError(f"{source} line {number}: status must be one of "
                                f"{', '.join(get_args(Status))}, got {match.group(1)!r}.")
        header["status"] = match.group(1)


def _estimate(match: re.Match[str]) -> Estimate | None:
    """The pooled estimate of a `best:` line written with ``(n=..., R..)``, else None."""
    if match.group("n") is None:
        return None
    try:
        sd = float(match.group("sd")) if match.group("sd") else None
        return Estimate(mean=float(match.group("value")), sd=sd, n=int(match.group("n")),
                        round=int(match.group("round")))
    except ValueError:  # a hand-edited line: the rows still give the best
        return None


def _parse_row(line: str, number: int, source: str,
               header: dict[str, Any]) -> ExperienceRow | None:
    cells = [_unescape(c) for c in _CELL_SPLIT.split(line.strip())[1:-1]]
    if cells and cells[0] == "Round":
        missing = [c for c in _REQUIRED_COLUMNS if c not in cells]
        if missing:
            raise ProtocolError(f"{source} line {number}: the table must have the columns "
                                f"{', '.join(_REQUIRED_COLUMNS)}; {', '.join(missing)} missing.")
        header["columns"] = tuple(cells)
        return None
    if not cells or set(cells[0]) <= {"-", ":"}:
        return None
    columns: tuple[str, ...] = header["columns"]
    if len(cells) != len(columns):
        raise ProtocolError(f"{source} line {number}: a round row must have {len(columns)} "
                            f"cells ({' | '.join(columns)}), got {len(cells)}. Write a | inside "
                            "a cell as \\|.")
    by_column = dict(zip(columns, cells, strict=True))
    fields: dict[str, Any] = {_FIELD_OF[c]: v for c, v in by_column.items() if c in _FIELD_OF}
    fields["extra"] = {c: v for c, v in by_column.items() if c not in _FIELD_OF
                       and c != "Result"}
    try:
        fields["round"] = int(fields["round"])
        fields["result"], fields["result_text"] = _row_result(by_column, header.get("metric"))
        return ExperienceRow(**fields)
    except ValueError as exc:
        raise ProtocolError(f"{source} line {number}: malformed round row: {exc}") from None


def _row_result(by_column: dict[str, str], metric: str | None) -> tuple[float | None, str]:
    """The row's scalar: the Result cell, else ``<metric>=<value>`` in the Metrics cell."""
    if "Result" in by_column:
        match = _NUMBER.search(by_column["Result"])
        return (float(match.group(0)) if match else None), by_column["Result"]
    if metric and (cell := by_column.get("Metrics")):
        match = re.search(rf"(?<![\w./-]){re.escape(metric)}=({_NUMBER.pattern})", cell)
        if match:
            return float(match.group(1)), ""
    return None, ""
