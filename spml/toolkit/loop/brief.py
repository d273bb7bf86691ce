"""The round brief: everything a fresh researcher needs, and nothing of the protocol file itself.

The researcher never reads the protocol; the supervisor injects the slices it may see.
"""

from __future__ import annotations

from dataclasses import dataclass

from spml.protocols.autoresearch import AutoresearchProtocol
from spml.protocols.experiences import Experiences, format_value, table_lines


@dataclass(frozen=True)
class BriefInputs:
    """What goes into one round's brief."""

    protocol: AutoresearchProtocol
    prose: str
    ledger: Experiences
    round_no: int
    max_rounds: int
    notes: list[str]


def render_brief(inputs: BriefInputs) -> str:
    """The markdown brief for one round of Auto Research."""
    p = inputs.protocol
    arrow = "higher is better" if p.eval.direction == "maximize" else "lower is better"
    sections = [
        f"# Auto Research — round {inputs.round_no} of {inputs.max_rounds}",
        f"**Goal:** improve `{p.eval.metric}` ({p.eval.direction}, {arrow}).",
        f"**Research question:** {p.research_question}",
        _best_line(inputs),
        "## Your role\nDesign ONE strategy for this round and implement it by editing the "
        "variable files. The supervisor trains, evaluates and decides; quick smoke checks are "
        "fine, but do not run the full training or evaluation, and do not use git.",
        "## Rules\n" + _rules(p),
        "## Recent experiences\n" + _experience_table(inputs.ledger, p.experiences_window),
        "## Notes from the person on the loop\n"
        + ("\n".join(f"- {n}" for n in inputs.notes) if inputs.notes else "(none)"),
        "## When you are done\nWrite a one-line summary of your strategy to the file named by "
        "`$SPML_STRATEGY_FILE` (or print it as your last line), then exit 0.",
    ]
    if inputs.prose.strip():
        sections.insert(4, "## Background\n" + inputs.prose.strip())
    return "\n\n".join(sections) + "\n"


def _best_line(inputs: BriefInputs) -> str:
    best = inputs.ledger.best
    if best is None or best.result is None:
        return "**Current best:** none yet."
    stale = inputs.ledger.rounds_since_improvement()
    plateau = f" No improvement in the last {stale} rounds: try something different." \
        if stale >= 3 else ""
    return f"**Current best:** {format_value(best.result)} (round {best.round}).{plateau}"


def _rules(p: AutoresearchProtocol) -> str:
    rules = [
        "You may change or create ONLY files matching: "
        + ", ".join(f"`{g}`" for g in p.variable.files),
        "Never touch (fixed): " + ", ".join(f"`{g}`" for g in p.fixed.files),
        "Evaluation and metric code may not be created or changed, not even in new files.",
        "Do not commit, reset, stash, or change git configuration or hooks.",
        f"Training budget per run: {p.fixed.time_limit:g} s"
        + (f", at most {p.fixed.epoch_limit} epochs" if p.fixed.epoch_limit else "") + ".",
    ]
    if p.variable.range:
        rules.insert(1, f"What may be varied: {p.variable.range}")
    if p.acceptance.min_delta > 0:
        rules.append(f"A change is kept only if it beats the best by more than "
                     f"{p.acceptance.min_delta:g}.")
    return "\n".join(f"- {r}" for r in rules)


def _experience_table(ledger: Experiences, window: int) -> str:
    rows = ledger.window(window)
    if not rows:
        return "(no rounds yet)"
    return "\n".join(table_lines(rows))
