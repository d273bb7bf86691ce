"""Deciding a measured round: the policy interface both loop kinds share, and Auto Research's.

A policy's `judge(candidate, incumbent)` returns a `Decision`: the verdict, a status per
criterion, the rationale, and whether the loop should stop. `MinDeltaPolicy` is the
single-criterion case (Auto Research: keep a change only if the mean over `repeats` seeds beats
the incumbent by more than `min_delta`); ml-iteration's compound review is
`spml.toolkit.loop.review.ReviewPolicy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from spml.toolkit.loop.measurement import Measurement

Verdict = Literal["committed", "committed_with_note", "rolled_back"]


@dataclass(frozen=True)
class Decision:
    """How a measured round is settled, and why."""

    verdict: Verdict
    per_criterion: dict[str, str]
    rationale: str
    stop: bool = False


class Policy(Protocol):
    """Judges a measured candidate against the incumbent (HEAD's measured state, if any)."""

    def judge(self, candidate: Measurement, incumbent: Measurement | None) -> Decision:
        """The verdict, per-criterion statuses and rationale."""
        ...


class AcceptancePolicy(Protocol):
    """Decides whether a measured value replaces the best."""

    def improves(self, value: float, best: float | None) -> bool:
        """True when ``value`` should become the new best."""
        ...

    def explain(self, value: float, best: float | None) -> str:
        """One sentence for the ledger's Insight."""
        ...


@dataclass(frozen=True)
class MinDeltaPolicy:
    """Improved = strictly better than the best by more than ``min_delta``."""

    direction: Literal["maximize", "minimize"]
    min_delta: float = 0.0
    metric: str = "metric"
    target: float | None = None

    def judge(self, candidate: Measurement, incumbent: Measurement | None) -> Decision:
        """Commit when the candidate's mean improves on the incumbent's; stop at the target."""
        value, best = candidate.mean, incumbent.mean if incumbent is not None else None
        assert value is not None, "only measured rounds are judged"
        keep = self.improves(value, best)
        status = "improved" if keep else "regressed" if best is not None and \
            self.improves(best, value) else "fail"
        stop = keep and target_reached(value, self.target, self.direction)
        return Decision("committed" if keep else "rolled_back",
                        {f"metrics.{self.metric}": f"{status}: {value:.6g}"},
                        self.explain(value, best), stop=stop)

    def improves(self, value: float, best: float | None) -> bool:
        """True when ``value`` beats ``best`` by more than ``min_delta`` (NaN never does)."""
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        gain = value - best if self.direction == "maximize" else best - value
        return gain > self.min_delta

    def explain(self, value: float, best: float | None) -> str:
        """Why the value was or was not kept."""
        if best is None:
            return f"first measured value {value:.6g}"
        delta = value - best
        if self.improves(value, best):
            return f"improved on best {best:.6g} by {abs(delta):.3g}"
        margin = f" by more than {self.min_delta:g}" if self.min_delta > 0 else ""
        return f"not better than best {best:.6g}{margin} (delta {delta:+.3g})"


def target_reached(value: float | None, target: float | None,
                   direction: Literal["maximize", "minimize"]) -> bool:
    """Whether ``value`` meets ``target`` (maximize: >=, minimize: <=)."""
    if value is None or target is None or not math.isfinite(value):
        return False
    return value >= target if direction == "maximize" else value <= target
