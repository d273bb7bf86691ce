"""Is a candidate better than the incumbent by more than the noise? The loop's statistics.

Pure functions of measured values (no files, no Prefect), used by Auto Research's default
acceptance (`acceptance.mode: significance`):

* `Noise.pooled` — the run-to-run spread, estimated from every code version measured more than
  once in this experiment (pooled within-version variance: each version's own mean is removed,
  so real differences between versions never count as noise), with its degrees of freedom.
* `compare` — a one-sided test of "candidate beats incumbent by more than ``min_delta``" after
  each run of the candidate (a sequential test). It is Welch's t: each side is judged on its
  own spread (noise in ML scales with the metric: an MSE of 0.2 swings more between seeds than
  one of 0.01, so one number for the whole experiment would be wrong at one end), except that a
  candidate is taken to be at least as noisy as the incumbent (two clean runs of a change that
  does nothing must not look precise next to an incumbent whose runs sometimes diverge); a side
  with a single run and nothing to borrow takes the pooled spread. The critical value is
  Student's t with the Welch-Satterthwaite degrees of freedom (the incumbent's alone when the
  candidate borrowed its variance) at
  ``1 - (1 - confidence) / looks``: the error budget is split over the looks a candidate may
  get (Bonferroni), so measuring a candidate run by run cannot raise the chance of keeping a
  change that does nothing above ``1 - confidence``.

  Verdicts: ``better`` (the lower end of the interval clears ``min_delta``; at least two runs of
  the candidate, so a single lucky draw never decides); ``not_better`` (stopped early: even an
  optimistic end, `FUTILITY_CONFIDENCE`, of the interval does not reach ``min_delta``, e.g. a
  candidate clearly worse after its first run); ``inconclusive`` (the last look came and neither
  held); ``undecided`` (measure another run).

Simulated (tests/toolkit/loop/test_evidence.py: incumbent of 5 runs, 3000 candidates, at most 5
runs each, confidence 0.95): a change that does nothing is kept 1.0 % of the time and costs 4.0
runs; +1 sigma is kept 10 %, +2 sigma 42 %, +3 sigma 79 %, +5 sigma 99.5 % (2.5 runs); a
-4 sigma change costs 1.0 run. (An incumbent topped up after inconclusive comparisons gains
degrees of freedom, and with them power.)

The comparison is of means, not paired by seed: it is valid whether or not the trained code uses
the seed (when it does, the shared seed effect makes it conservative, never optimistic).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from scipy.stats import t as student_t

Outcome = Literal["better", "not_better", "inconclusive", "undecided"]
# How optimistic the early stop for a hopeless candidate is: stop once the gain's upper bound
# at this one-sided level is below min_delta (a wrong stop loses an improvement, never keeps
# noise, so it need not be as strict as keeping).
FUTILITY_CONFIDENCE = 0.8
MIN_RUNS_TO_KEEP = 2


@dataclass(frozen=True)
class Noise:
    """Run-to-run standard deviation pooled over versions, and its degrees of freedom."""

    sd: float
    df: int

    @classmethod
    def pooled(cls, groups: Iterable[Sequence[float]]) -> Noise:
        """Pool the within-group spread of each version's runs (groups of one add nothing)."""
        squares, df = 0.0, 0
        for values in groups:
            if len(values) >= 2:
                mean = statistics.fmean(values)
                squares += sum((v - mean) ** 2 for v in values)
                df += len(values) - 1
        return cls(math.sqrt(squares / df) if df else 0.0, df)


@dataclass(frozen=True)
class Rule:
    """What counts as better: the direction, the least gain worth keeping, the one-sided
    confidence over all looks, and the most runs (looks) a candidate may get."""

    maximize: bool
    min_delta: float = 0.0
    confidence: float = 0.95
    looks: int = 1


@dataclass(frozen=True)
class Comparison:
    """The gain of the candidate over the incumbent (positive = better) and its interval."""

    outcome: Outcome
    gain: float
    low: float            # the interval at the decision's level (see `compare`)
    high: float
    runs: int             # candidate runs so far
    incumbent_runs: int

    def describe(self, min_delta: float = 0.0) -> str:
        """`gain +0.012, interval [+0.004, +0.020], 3 runs vs 5`."""
        margin = f" (needs > {min_delta:g})" if min_delta > 0 else ""
        return (f"gain {self.gain:+.3g}{margin}, interval [{self.low:+.3g}, {self.high:+.3g}], "
                f"{self.runs} run{'s' * (self.runs != 1)} vs {self.incumbent_runs}")


def compare(candidate: Sequence[float], incumbent: Sequence[float], noise: Noise,
            rule: Rule) -> Comparison:
    """Judge the candidate's runs so far against the incumbent's (see the module docstring).

    Args:
        candidate: The candidate's values, one per run (at least one).
        incumbent: The incumbent's values (at least one).
        noise: `Noise.pooled` over the experiment's versions.
        rule: Direction, min_delta, confidence and the most looks.
    """
    n_c, n_i = len(candidate), len(incumbent)
    min_delta, looks = rule.min_delta, rule.looks
    sign = 1.0 if rule.maximize else -1.0
    gain = sign * (statistics.fmean(candidate) - statistics.fmean(incumbent))
    (var_i, df_i) = _side(incumbent, noise)
    (var_c, df_c) = _side(candidate, noise)
    if var_c < var_i:  # a candidate is as noisy as the incumbent until it shows otherwise
        var_c, df_c = var_i, 0  # borrowed: no degrees of freedom of its own
    term_c, term_i = var_c / n_c, var_i / n_i
    se = math.sqrt(term_c + term_i)
    if not df_i:
        # a single run and no version measured twice: the noise is unknown, nothing decides
        outcome: Outcome = "inconclusive" if n_c >= looks else "undecided"
        return Comparison(outcome, gain, -math.inf, math.inf, n_c, n_i)
    if se == 0.0:  # runs that repeat exactly on both sides: the gain is the gain
        critical = optimism = 0.0
    else:
        df = _welch_df(term_c, df_c, term_i, df_i)
        critical = float(student_t.ppf(1 - (1 - rule.confidence) / max(looks, 1), df)) * se
        optimism = float(student_t.ppf(FUTILITY_CONFIDENCE, df)) * se
    low, high = gain - critical, gain + critical
    if low > min_delta and (n_c >= MIN_RUNS_TO_KEEP or looks < MIN_RUNS_TO_KEEP):
        outcome = "better"
    elif gain + optimism <= min_delta:
        outcome = "not_better"
    elif n_c >= looks:
        outcome = "inconclusive"
    else:
        outcome = "undecided"
    return Comparison(outcome, gain, low, high, n_c, n_i)


def _side(values: Sequence[float], noise: Noise) -> tuple[float, int]:
    """A side's variance and its degrees of freedom: its own with two runs or more, else the
    experiment's pooled noise (a single run shows no spread)."""
    if len(values) >= 2:
        return statistics.variance(values), len(values) - 1
    return noise.sd ** 2, noise.df


def _welch_df(term_c: float, df_c: int, term_i: float, df_i: int) -> float:
    """Welch-Satterthwaite degrees of freedom of the difference of two means; a candidate that
    borrowed the incumbent's variance (``df_c`` 0) adds none: then it is the incumbent's."""
    if not df_c:
        return df_i
    return (term_c + term_i) ** 2 / (term_c * term_c / df_c + term_i * term_i / df_i)


def spread(values: Sequence[float]) -> float | None:
    """Sample standard deviation (None with fewer than two values)."""
    return statistics.stdev(values) if len(values) >= 2 else None


def estimate(values: Sequence[float]) -> str:
    """`0.501234 ± 0.0098 (n=5)`: a mean with its run-to-run spread and count."""
    sd = spread(values)
    shown = f"{statistics.fmean(values):.6g}"
    return f"{shown} ± {sd:.2g} (n={len(values)})" if sd is not None else f"{shown} (n=1)"
