"""Deciding a measured round: the policy interface both loop kinds share, and Auto Research's.

A policy's `judge(candidate, incumbent)` returns a `Decision`: the verdict, a status per
criterion, the rationale, and whether the loop should stop. Auto Research has two:
`SignificancePolicy` (the default: keep a change only when its gain over the incumbent's pooled
runs is beyond the measured noise and `min_delta`, see `spml.toolkit.loop.evidence`) and
`MinDeltaPolicy` (`acceptance.mode: greedy`: the mean over `repeats` seeds beats the incumbent
by more than `min_delta`). ml-iteration's compound review is
`spml.toolkit.loop.review.ReviewPolicy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from spml.toolkit.loop.evidence import Noise, Rule, compare, estimate

if TYPE_CHECKING:
    from spml.toolkit.loop.measurement import Measurement

# How `SignificancePolicy` words a comparison that could not tell (read back to top up a noisy
# incumbent: `spml.toolkit.loop.incumbent.top_up_seeds`).
INCONCLUSIVE = "inconclusive against best"

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


def acceptance_rule(protocol: Any) -> Rule:
    """An Auto Research protocol's `acceptance` as the significance test's rule."""
    acceptance = protocol.acceptance
    return Rule(maximize=protocol.direction == "maximize", min_delta=acceptance.min_delta,
                confidence=acceptance.confidence, looks=acceptance.runs)


@dataclass(frozen=True)
class SignificancePolicy:
    """Commit only a gain beyond the measured noise and ``min_delta`` (see the module)."""

    rule: Rule
    noise: Noise
    metric: str = "metric"
    target: float | None = None

    def judge(self, candidate: Measurement, incumbent: Measurement | None) -> Decision:
        """Better -> commit; not better or inconclusive -> roll back, with the interval."""
        value = candidate.mean
        assert value is not None, "only measured rounds are judged"
        name = f"metrics.{self.metric}"
        if incumbent is None or not incumbent.values:
            return Decision("committed", {name: f"improved: {value:.6g}"},
                            f"first measured value {estimate(candidate.values)}")
        result = compare(candidate.values, incumbent.values, self.noise, self.rule)
        evidence = result.describe(self.rule.min_delta)
        best = estimate(incumbent.values)
        if result.outcome == "better":
            direction = "maximize" if self.rule.maximize else "minimize"
            return Decision("committed", {name: f"improved: {value:.6g}"},
                            f"better than best {best} beyond noise: {evidence}",
                            stop=target_reached(value, self.target, direction))
        if result.outcome == "not_better":
            return Decision("rolled_back", {name: f"fail: {value:.6g}"},
                            f"not better than best {best}: {evidence}")
        return Decision("rolled_back", {name: f"inconclusive: {value:.6g}"},
                        f"{INCONCLUSIVE} {best}: {evidence}; the best stays")


def target_reached(value: float | None, target: float | None,
                   direction: Literal["maximize", "minimize"]) -> bool:
    """Whether ``value`` meets ``target`` (maximize: >=, minimize: <=)."""
    if value is None or target is None or not math.isfinite(value):
        return False
    return value >= target if direction == "maximize" else value <= target
