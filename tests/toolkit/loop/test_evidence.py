"""The loop's statistics (`spml.toolkit.loop.evidence`), as pure functions: the noise estimate,
and the sequential test's error rates measured by simulation (seeded: exact replays)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from scipy.stats import t as student_t

from spml.toolkit.loop.evidence import Noise, Rule, compare

SIGMA = 0.01


def test_noise_pools_each_versions_own_spread_and_ignores_single_runs() -> None:
    a, b = [1.0, 1.2, 0.8], [5.0, 5.1]  # very different means: not noise
    noise = Noise.pooled([a, b, [42.0]])
    squares = sum((v - 1.0) ** 2 for v in a) + sum((v - 5.05) ** 2 for v in b)
    assert noise.df == 3
    assert noise.sd == pytest.approx(math.sqrt(squares / 3))
    assert Noise.pooled([[3.0], [4.0]]) == Noise(0.0, 0)


def run_candidate(rng: random.Random, effect: float, rule: Rule,
                  incumbent: list[float], noise: Noise) -> tuple[str, int]:
    """Measure a candidate run by run, as the loop does, until the test decides."""
    values: list[float] = []
    while True:
        values.append(0.5 + effect * SIGMA + rng.gauss(0, SIGMA))
        result = compare(values, incumbent, noise, rule)
        if result.outcome != "undecided":
            return result.outcome, len(values)


def simulate(effect: float, trials: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Share of candidates kept and mean runs spent, for a true gain of ``effect`` sigmas."""
    rng, rule = random.Random(seed), Rule(maximize=True, confidence=0.95, looks=5)
    kept = runs = 0
    for _ in range(trials):
        incumbent = [0.5 + rng.gauss(0, SIGMA) for _ in range(5)]
        # The pooled estimate after a few rounds: 40 degrees of freedom of the same noise.
        noise = Noise(statistics.stdev([rng.gauss(0, SIGMA) for _ in range(41)]), 40)
        outcome, spent = run_candidate(rng, effect, rule, incumbent, noise)
        kept += outcome == "better"
        runs += spent
    return kept / trials, runs / trials


def test_a_change_that_does_nothing_is_kept_at_most_one_time_in_twenty() -> None:
    kept, runs = simulate(effect=0.0)
    assert kept <= 0.05  # the promise of confidence 0.95 over all five looks (Bonferroni)
    assert runs < 5      # some null candidates stop early


def test_a_five_sigma_gain_is_kept_within_two_or_three_runs() -> None:
    kept, runs = simulate(effect=5.0)
    assert kept >= 0.99
    assert runs <= 3.0


def test_a_clearly_worse_change_mostly_costs_one_run() -> None:
    kept, runs = simulate(effect=-4.0)
    assert kept == 0
    assert runs < 1.5


def test_one_run_never_keeps_when_more_are_allowed() -> None:
    noise, rule = Noise(SIGMA, 40), Rule(maximize=True, looks=5)
    assert compare([0.9], [0.5] * 5, noise, rule).outcome == "undecided"
    assert compare([0.9, 0.9], [0.5] * 5, noise, rule).outcome == "better"
    assert compare([0.9], [0.5] * 5, noise, Rule(maximize=True, looks=1)).outcome == "better"


def test_min_delta_and_direction_are_respected() -> None:
    noise = Noise(SIGMA, 40)
    bigger = [0.55, 0.55, 0.55]
    assert compare(bigger, [0.5] * 5, noise, Rule(maximize=True, looks=3)).outcome == "better"
    assert compare(bigger, [0.5] * 5, noise,
                   Rule(maximize=True, min_delta=0.1, looks=3)).outcome == "not_better"
    assert compare(bigger, [0.5] * 5, noise, Rule(maximize=False, looks=3)).outcome == \
        "not_better"


def test_unknown_noise_decides_nothing_and_ends_inconclusive() -> None:
    rule = Rule(maximize=True, looks=2)
    assert compare([0.9], [0.5], Noise(0.0, 0), rule).outcome == "undecided"
    result = compare([0.9, 0.9], [0.5], Noise(0.0, 0), rule)
    assert result.outcome == "inconclusive"
    assert math.isinf(result.low)


def test_a_noisier_candidate_is_judged_on_its_own_spread() -> None:
    rule, noise = Rule(maximize=True, looks=5), Noise(0.001, 40)
    steady = compare([0.52, 0.521], [0.5] * 5, noise, rule)
    wild = compare([0.42, 0.62], [0.5] * 5, noise, rule)  # same mean, huge spread
    assert steady.outcome == "better"
    assert wild.outcome != "better"
    assert wild.high - wild.low > steady.high - steady.low


def test_each_side_keeps_its_own_spread_when_noise_differs_between_versions() -> None:
    # Seen on the regression demo: early versions (MSE ~0.2) swing by 0.06 between seeds, the
    # good ones (MSE ~0.01) by 0.002. A noise pooled in absolute units would call a clear gain
    # at the low end "inconclusive"; each side's own spread decides once it has two runs.
    pooled_from_early_versions = Noise(0.06, 12)
    best, candidate = [0.0360, 0.0320, 0.0400], [0.0096, 0.0081, 0.0111]
    result = compare(candidate, best, pooled_from_early_versions,
                     Rule(maximize=False, looks=3))
    assert result.outcome == "better"
    assert result.low > 0.005


def test_a_candidate_is_as_noisy_as_the_incumbent_until_it_shows_otherwise() -> None:
    # Two clean runs of a change that does nothing, against an incumbent whose runs sometimes
    # diverge: its own tiny spread would call the gap "significant"; the incumbent's does not.
    incumbent = [0.50, 0.49, 0.51, 0.30, 0.50, 0.50, 0.31, 0.49]
    result = compare([0.50, 0.501], incumbent, Noise(0.08, 20), Rule(maximize=True, looks=5))
    assert result.outcome != "better"
    one_run = compare([0.6], [0.5, 0.51, 0.49], Noise(0.01, 2), Rule(maximize=True, looks=1))
    se = math.sqrt(0.01 ** 2 / 1 + 0.01 ** 2 / 3)  # the incumbent's variance on both sides
    assert one_run.gain - one_run.low == pytest.approx(student_t.ppf(0.95, 2) * se)  # df 2
