"""The round brief: everything a fresh researcher needs, and nothing of the protocol file itself.

The researcher never reads the protocol; the supervisor injects the slices it may see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spml.protocols.autoresearch import AutoresearchProtocol
from spml.protocols.experiences import Experiences, format_value, table_lines
from spml.protocols.iteration import IterationProtocol


@dataclass(frozen=True)
class BriefInputs:
    """What goes into one round's brief."""

    protocol: Any  # the kind's protocol model
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
    shown = inputs.ledger.incumbent.render() if inputs.ledger.incumbent else \
        f"{format_value(best.result)} (round {best.round})"
    return f"**Current best:** {shown}.{plateau}"


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
    if not p.acceptance.greedy:
        margin = f" and by more than {p.acceptance.min_delta:g}" if p.acceptance.min_delta \
            else ""
        rules.append("A change is kept only if it beats the best beyond the run-to-run noise "
                     f"measured across seeds{margin} (up to {p.acceptance.runs} runs decide): "
                     "a tweak within the noise is rolled back as inconclusive.")
    elif p.acceptance.min_delta > 0:
        rules.append(f"A change is kept only if it beats the best by more than "
                     f"{p.acceptance.min_delta:g}.")
    return "\n".join(f"- {r}" for r in rules)


def _experience_table(ledger: Experiences, window: int) -> str:
    rows = ledger.window(window)
    if not rows:
        return "(no rounds yet)"
    return "\n".join(table_lines(rows, ledger.columns))


def render_iteration_brief(inputs: BriefInputs) -> str:
    """The markdown brief for one round of ml-iteration."""
    p: IterationProtocol = inputs.protocol
    sections = [
        f"# ml-iteration — round {inputs.round_no} of {inputs.max_rounds}",
        f"**Goal:** {p.goal}",
        "## Review criteria (every one must pass)\n" + _criteria(p),
        "## Where the best commit stands\n" + _incumbent_state(inputs.ledger),
        "## Your role\nMake ONE focused change that moves failing criteria towards passing "
        "without regressing the others. The supervisor trains, evaluates and reviews every "
        "criterion; a regression is rolled back. Quick smoke checks are fine; do not run the "
        "full training or evaluation, and do not use git.",
        "## Rules\n" + _iteration_rules(p),
        "## Recent experiences (rolled-back rows are what did not work)\n"
        + _experience_table(inputs.ledger, p.experiences_window),
        "## Notes from the person on the loop\n"
        + ("\n".join(f"- {n}" for n in inputs.notes) if inputs.notes else "(none)"),
        "## When you are done\nWrite a one-line summary of your strategy to the file named by "
        "`$SPML_STRATEGY_FILE` (or print it as your last line), then exit 0.",
    ]
    if inputs.prose.strip():
        sections.insert(4, "## Background and hints\n" + inputs.prose.strip())
    return "\n\n".join(sections) + "\n"


def _criteria(p: IterationProtocol) -> str:
    c = p.review_criteria
    lines = [f"- metrics (from `{p.eval.command}`): {k.describe()}" for k in c.metrics]
    lines += [f"- performance: {k.describe()}" for k in c.performance]
    if c.observability is not None and c.observability.required_keys:
        lines.append("- observability: every per-step training line carries "
                     + ", ".join(f"`{k}`" for k in c.observability.required_keys))
    if c.stability is not None:
        forbidden = ", ".join(f"`{x}`" for x in c.stability.forbid_patterns)
        lines.append("- stability: " + ("no NaN/Inf values" if c.stability.no_nan else "")
                     + (f"; no output line matching {forbidden}" if forbidden else ""))
    lines += [f"- custom `{k.name}`: `{k.command}` exits 0" for k in c.custom]
    return "\n".join(lines)


def _incumbent_state(ledger: Experiences) -> str:
    kept = ledger.kept_rounds()
    rows = {r.round: r for r in ledger.rows if not r.is_override}
    row = rows.get(kept[-1]) if kept else None
    if row is None:
        return "(not measured yet)"
    cells = [f"- {column}: {value}" for column, value in row.extra.items() if value]
    return f"Round {row.round} ({row.verdict}):\n" + "\n".join(cells or ["- (no detail)"])


def _iteration_rules(p: IterationProtocol) -> str:
    rules = [
        "Never touch (locked): " + ", ".join(f"`{g}`" for g in p.fixed.files)
        + ", the protocol file and `.gitignore`.",
        "Evaluation and metric code may not be created or changed, not even in new files.",
        "Do not commit, reset, stash, or change git configuration or hooks.",
        f"Training budget per run: {p.fixed.time_limit:g} s"
        + (f", at most {p.fixed.epoch_limit} epochs" if p.fixed.epoch_limit else "") + ".",
    ]
    if p.focused_files:
        rules.insert(0, "Focus on: " + ", ".join(f"`{g}`" for g in p.focused_files)
                     + " (other files may be edited too; they are recorded).")
    return "\n".join(f"- {r}" for r in rules)
