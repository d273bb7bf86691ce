"""The end-of-loop report: baseline, best, improvement, rounds, commits, and distilled insights."""

from __future__ import annotations

import math

from pydantic import BaseModel

from spml.protocols.experiences import KEPT, Experiences, Status, format_value, table_lines


class LoopSummary(BaseModel):
    """What a finished (or stopped) loop achieved."""

    metric: str
    status: Status
    reason: str = ""
    baseline: float | None
    best: float | None
    best_round: int | None
    rounds_done: int
    max_rounds: int
    commits: int
    insights: list[str]
    best_estimate: str = ""   # the pooled best with its spread and count, when known
    confirmed: str = ""       # the final best against the baseline on fresh seeds
    cost: str = ""            # what the rounds cost (`spml.toolkit.loop.cost`)

    @property
    def improvement(self) -> float | None:
        """best - baseline (sign follows the metric)."""
        if self.baseline is None or self.best is None:
            return None
        return self.best - self.baseline

    def headline(self) -> str:
        """One line: baseline -> best, and the change in percent."""
        if self.baseline is None or self.best is None:
            return f"{self.metric}: no measured result"
        if self.best_round == 0:
            # No change was kept: a pooled baseline that moved with more seeds is re-measurement,
            # not progress, and no percentage may suggest otherwise.
            moved = (f" (pooled over its runs; first measured {format_value(self.baseline)})"
                     if self.best != self.baseline else "")
            return (f"{self.metric}: no change kept; baseline {format_value(self.best)} (R0)"
                    f"{moved}")
        ratio = (self.improvement / abs(self.baseline)
                 if self.baseline and self.improvement is not None else math.nan)
        # A baseline near 0 (or not finite) gives no meaningful percentage: none is shown.
        pct = f" ({100 * ratio:+.1f}%)" if math.isfinite(100 * ratio) else ""
        return (f"{self.metric}: baseline {format_value(self.baseline)} -> best "
                f"{format_value(self.best)} (R{self.best_round}){pct}")


def summarize(ledger: Experiences, reason: str = "", confirmed: str = "",
              cost: str = "") -> LoopSummary:
    """Condense the ledger (and the end-of-loop confirmation, if any) into a `LoopSummary`."""
    baseline = next((r.result for r in ledger.rows if r.round == 0), None)
    best = ledger.best
    committed = [r for r in ledger.rows if r.round > 0 and r.verdict in KEPT]
    return LoopSummary(
        metric=ledger.metric, status=ledger.status, reason=reason, baseline=baseline,
        best=ledger.best_value, best_round=best.round if best else None,
        best_estimate=ledger.incumbent.render() if ledger.incumbent else "", confirmed=confirmed,
        rounds_done=ledger.rounds_done, max_rounds=ledger.max_rounds, commits=len(committed),
        insights=[f"R{r.round}: {r.strategy} — {r.insight}" for r in committed[-5:]],
        cost=cost,
    )


def render_summary(summary: LoopSummary, ledger: Experiences, title: str = "Auto Research",
                   experiment: str = "", branch: str = "", best_commit: str = "") -> str:
    """Markdown for the summary artifact: which experiment, where its best code is, what it
    achieved and what worked."""
    where = [f"- **Experiment:** {experiment}"] if experiment else []
    if branch:
        best = f", best commit `{best_commit[:12]}`" if best_commit else ""
        where.append(f"- **Branch:** `{branch}`{best}")
    lines = [
        f"# {title}{f' of {experiment}' if experiment else ''}: {summary.status}",
        "",
        *where,
        f"- **Result:** {summary.headline()}",
        *([f"- **Best, every run pooled:** {summary.best_estimate}"]
          if summary.best_estimate else []),
        *([f"- **Confirmed on fresh seeds:** {summary.confirmed}"] if summary.confirmed else []),
        f"- **Rounds:** {summary.rounds_done} / {summary.max_rounds}, "
        f"{summary.commits} committed",
        f"- **Ended because:** {summary.reason or summary.status}",
        *([f"- **Holdout (sealed during the rounds):** {ledger.holdout}"]
          if ledger.holdout else []),
        *([f"- **Sandbox:** {ledger.sandbox}"] if ledger.sandbox else []),
        *([f"- **Cost:** {summary.cost}"] if summary.cost else []),
        "",
        "## What worked",
        *(f"- {i}" for i in summary.insights or ["(no round beat the baseline)"]),
        "",
        "## Experiences",
        *table_lines(ledger.rows, ledger.columns),
    ]
    return "\n".join(lines) + "\n"
