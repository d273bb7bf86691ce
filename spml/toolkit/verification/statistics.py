"""The verdict on two arms of runs: ``effective``, ``ineffective`` or ``inconclusive``.

The improvement is oriented so that positive is better (treatment minus baseline when the
metric is maximised, baseline minus treatment when minimised). Its two-sided interval at
``confidence`` decides:

* ``effective``: the whole interval lies above ``min_effect``;
* ``ineffective``: the whole interval lies at or below ``min_effect``;
* ``inconclusive``: the interval straddles ``min_effect``.

Intervals: Welch's t (unequal variances; scipy's `ttest_ind(equal_var=False)`), or a bootstrap
of the difference of means (scipy's `bootstrap`, BCa, seeded so a report is reproducible). A
single run in an arm has no spread: the verdict is ``inconclusive`` unless the person accepts a
single-run comparison, which then judges the point estimate alone and says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["effective", "ineffective", "inconclusive"]
Method = Literal["welch", "bootstrap"]
Direction = Literal["maximize", "minimize"]
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Verification:
    """The verdict and the numbers behind it."""

    verdict: Verdict
    improvement: float | None   # oriented: positive is better (None: nothing compared)
    low: float | None           # the interval (None: a single-run comparison has none)
    high: float | None
    n_baseline: int
    n_treatment: int
    method: str
    confidence: float
    min_effect: float
    reason: str

    def lines(self) -> list[str]:
        """The report: the verdict alone first, then the estimate, interval, n and method."""
        interval = ("none (no comparison)" if self.method == "none" else
                    "none (single runs)" if self.low is None else
                    f"[{self.low:+.6g}, {self.high:+.6g}] ({self.confidence:.0%})")
        estimate = "none" if self.improvement is None else f"{self.improvement:+.6g}"
        return [self.verdict, f"improvement: {estimate} (positive is better)",
                f"interval: {interval}", f"n: baseline {self.n_baseline}, treatment "
                f"{self.n_treatment}", f"method: {self.method}; minimum effect "
                f"{self.min_effect:g}", f"why: {self.reason}"]


@dataclass(frozen=True)
class VerifyRule:
    """How two arms are judged."""

    direction: Direction
    min_effect: float = 0.0
    confidence: float = 0.95
    method: Method = "welch"
    accept_single_run: bool = False

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if not math.isfinite(self.min_effect):
            raise ValueError(f"min_effect must be finite, got {self.min_effect}")


def verify_arms(baseline: Sequence[float], treatment: Sequence[float],
                rule: VerifyRule) -> Verification:
    """Judge ``treatment`` against ``baseline`` (module doc).

    Raises:
        ValueError: an arm is empty or holds a non-finite value.
    """
    _check(baseline, "baseline")
    _check(treatment, "treatment")
    confidence, min_effect, method = rule.confidence, rule.min_effect, rule.method
    sign = 1.0 if rule.direction == "maximize" else -1.0
    diff = sign * (_mean(treatment) - _mean(baseline))
    n_b, n_t = len(baseline), len(treatment)
    if min(n_b, n_t) < 2:
        return _single_run(diff, n_b, n_t, confidence, min_effect, rule.accept_single_run)
    low, high = (_welch(baseline, treatment, confidence) if method == "welch"
                 else _bootstrap(baseline, treatment, confidence))
    low, high = sorted((sign * low, sign * high))
    verdict, reason = _decide(low, high, min_effect)
    name = "Welch's t interval" if method == "welch" else "bootstrap interval (BCa)"
    return Verification(verdict, diff, low, high, n_b, n_t, name, confidence, min_effect, reason)


def _decide(low: float, high: float, min_effect: float) -> tuple[Verdict, str]:
    if low > min_effect:
        return "effective", f"the whole interval lies above the minimum effect {min_effect:g}"
    if high <= min_effect:
        return "ineffective", (f"the whole interval lies at or below the minimum effect "
                               f"{min_effect:g}")
    return "inconclusive", f"the interval straddles the minimum effect {min_effect:g}"


def _single_run(diff: float, n_b: int, n_t: int, confidence: float, min_effect: float,
                accept: bool) -> Verification:
    if not accept:
        return Verification("inconclusive", diff, None, None, n_b, n_t, "none", confidence,
                            min_effect, "an arm has a single run, so the noise is unknown: run "
                            "more seeds (or accept a single-run comparison explicitly)")
    verdict: Verdict = "effective" if diff > min_effect else "ineffective"
    return Verification(verdict, diff, None, None, n_b, n_t, "single-run point estimate",
                        confidence, min_effect, "single runs accepted: the point estimate "
                        "alone decides, with no protection against a lucky draw")


def _welch(baseline: Sequence[float], treatment: Sequence[float],
           confidence: float) -> tuple[float, float]:
    from scipy import stats

    if _spread(baseline) == 0 and _spread(treatment) == 0:  # no noise at all: exact
        diff = _mean(treatment) - _mean(baseline)
        return diff, diff
    with warnings.catch_warnings():  # near-identical runs: scipy's precision note, not ours
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(list(treatment), list(baseline), equal_var=False)
    interval = result.confidence_interval(confidence_level=confidence)
    return float(interval.low), float(interval.high)


def _bootstrap(baseline: Sequence[float], treatment: Sequence[float],
               confidence: float) -> tuple[float, float]:
    import numpy as np
    from scipy import stats

    def difference(t: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(t, axis=axis) - np.mean(b, axis=axis)

    with warnings.catch_warnings():  # arms without spread: handled below, not printed
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap((list(treatment), list(baseline)), difference,
                                 confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                                 rng=np.random.default_rng(BOOTSTRAP_SEED))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if math.isnan(low) or math.isnan(high):  # degenerate (no spread): the observed difference
        diff = _mean(treatment) - _mean(baseline)
        return diff, diff
    return low, high


def _check(values: Sequence[float], arm: str) -> None:
    if not values:
        raise ValueError(f"the {arm} arm has no runs")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"the {arm} arm holds a non-finite value ({bad[0]})")


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _spread(values: Sequence[float]) -> float:
    mean = _mean(values)
    return math.fsum((v - mean) ** 2 for v in values)
