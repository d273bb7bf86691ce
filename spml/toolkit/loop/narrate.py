"""What a round tells a person who looks at it in the Prefect UI, in words (no Prefect here).

- `round_label`: the round run's final state, named after its verdict (`Committed`, `Rolled
  back`, `Failed compliance`...) with the metric, its value and the change in the message.
- `round_markdown`: the round's own artifact (strategy, diff stat, result, verdict, insight).
- `version_note`: the description of each artifact version (after which round, best so far).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spml.protocols.experiences import (
    KEPT,
    NO_VALUE,
    ExperienceRow,
    Experiences,
    format_value,
)

__all__ = ["RoundLabel", "round_label", "round_markdown", "round_note", "version_note"]

_VERDICT_NAMES = {"committed": "Committed", "committed_with_note": "Committed with note",
                  "rolled_back": "Rolled back"}
ABORTED = "Aborted"


@dataclass(frozen=True)
class RoundLabel:
    """The name and message of a round run's final state."""

    name: str
    message: str


def round_label(ledger: Experiences, round_no: int) -> RoundLabel:
    """How round ``round_no`` of ``ledger`` ended, for its run's final state."""
    row = _row(ledger, round_no)
    if row is None:  # a stop request undid the round: it is redone on the next run
        return RoundLabel(ABORTED, f"round {round_no} undone by a stop request; the next run "
                          "redoes it")
    if _failed_compliance(row):
        return RoundLabel("Failed compliance", _cut(row.insight))
    name = "Baseline" if row.round == 0 else _VERDICT_NAMES.get(row.verdict, row.verdict)
    return RoundLabel(name, _result_phrase(ledger, row))


def round_markdown(ledger: Experiences, round_no: int, experiment: str, where: str,
                   diff_stat: str = "") -> str:
    """The round's markdown artifact: what was tried, what changed (``diff_stat``), what came
    of it, and ``where`` its code is (its commit, or the ref its rolled-back attempt is in)."""
    row = _row(ledger, round_no)
    if row is None:
        return f"# Round {round_no}: {ABORTED}\n\nUndone by a stop request; redone next run.\n"
    label = round_label(ledger, round_no)
    scalar = "Result" in ledger.columns  # ml-iteration's rows say it all in the review
    lines = [f"# Round {round_no} of {experiment}: {label.name}", "",
             *([f"- **Result:** {label.message}"] if scalar else []),
             f"- **Strategy:** {row.strategy or '—'}",
             f"- **Insight:** {row.insight or '—'}",
             *([f"- **Compliance:** {row.compliance}"] if "Compliance" in ledger.columns else []),
             f"- **Where:** {where}"]
    if row.note:
        lines.append(f"- **Note from a person:** {row.note}")
    lines += [f"- **{key}:** {value}" for key, value in row.extra.items() if value]
    if diff_stat.strip():
        lines += ["", "## Change", "", "```", diff_stat.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def round_note(ledger: Experiences, round_no: int, experiment: str) -> str:
    """The description of a round's page: `exp round 3: Rolled back — loss 49 (...)`."""
    label = round_label(ledger, round_no)
    return _cut(f"{experiment} round {round_no}: {label.name} — {label.message}", 200)


def version_note(ledger: Experiences, experiment: str) -> str:
    """The description of an artifact version: after which round it was written, best so far."""
    rounds = [r.round for r in ledger.rows if not r.is_override]
    after = f"after round {max(rounds)}" if rounds else "before round 0"
    best = ledger.best
    shown = (f"best {ledger.metric} = {ledger.incumbent.render()}" if ledger.incumbent else
             f"best {ledger.metric} = {format_value(best.result)} (round {best.round})"
             if best is not None and best.result is not None else "no best yet")
    return f"{experiment}: {after} of {ledger.max_rounds}; {shown}"


def _failed_compliance(row: ExperienceRow) -> bool:
    # ml-iteration's ledger has no Compliance column: its rows say it in the insight.
    return row.compliance == "fail" or row.insight.startswith("compliance: ")


def _row(ledger: Experiences, round_no: int) -> ExperienceRow | None:
    return next((r for r in reversed(ledger.rows) if r.round == round_no and not r.is_override),
                None)


def _result_phrase(ledger: Experiences, row: ExperienceRow) -> str:
    """`val_mse 0.0047 (-0.0012 vs best 0.0059)`, or why there is no value."""
    if "Result" not in ledger.columns:  # ml-iteration: criteria, no single metric
        return _cut(row.insight or row.verdict)
    if row.result is None or not math.isfinite(row.result):
        shown = row.result_text if row.result_text not in ("", NO_VALUE) else "no value"
        return _cut(f"{ledger.metric}: {shown} ({row.insight})" if row.insight else
                    f"{ledger.metric}: {shown}")
    value = f"{ledger.metric} {format_value(row.result)}"
    before = _best_before(ledger, row.round)
    if before is None or before.result is None:
        return value
    delta = row.result - before.result
    change = f"{delta:+.4g} vs best {format_value(before.result)} (round {before.round})"
    if row.verdict not in KEPT:
        change += "; best unchanged"
    return f"{value} ({change})"


def _best_before(ledger: Experiences, round_no: int) -> ExperienceRow | None:
    earlier = ledger.model_copy(update={"rows": [r for r in ledger.rows if r.round < round_no]})
    return earlier.best


def _cut(text: str, limit: int = 300) -> str:
    """State messages are one line in the UI's run list."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
