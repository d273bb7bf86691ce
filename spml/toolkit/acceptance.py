"""When a round's measurement counts as an improvement, and when the loop has reached its target.

Auto Research keeps a change only if it beats the best by more than `min_delta` in the protocol's
direction (the mean over `repeats` seeds decides). ml-iteration plugs in its own policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol


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
