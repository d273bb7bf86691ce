"""`spml verify`'s statistics with known answers, checked against scipy's own Welch test."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from spml.toolkit.verification.statistics import VerifyRule, verify_arms

BASE = [0.800, 0.812, 0.791, 0.805, 0.798]
WIN = [0.851, 0.862, 0.844, 0.858, 0.849]


def test_a_clear_win_is_effective_and_matches_scipys_welch_interval():
    result = verify_arms(BASE, WIN, VerifyRule("maximize"))
    assert result.verdict == "effective"
    assert math.isclose(result.improvement, sum(WIN) / 5 - sum(BASE) / 5)
    expected = stats.ttest_ind(WIN, BASE, equal_var=False).confidence_interval(0.95)
    assert math.isclose(result.low, expected.low)
    assert math.isclose(result.high, expected.high)
    assert (result.n_baseline, result.n_treatment) == (5, 5)
    assert result.lines()[0] == "effective"


def test_the_welch_interval_by_hand():
    # means 2 and 5, variances 1 and 4, n 3 and 3: se = sqrt(1/3 + 4/3), df = 2.94117...
    base, treat = [1.0, 2.0, 3.0], [3.0, 5.0, 7.0]
    result = verify_arms(base, treat, VerifyRule("maximize"))
    se = math.sqrt(1 / 3 + 4 / 3)
    df = (1 / 3 + 4 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)
    half = stats.t.ppf(0.975, df) * se
    assert math.isclose(result.low, 3 - half)
    assert math.isclose(result.high, 3 + half)
    assert result.verdict == "inconclusive"  # 3 +- 5.3: straddles 0


def test_a_clear_loss_is_ineffective_and_minimize_flips_the_sign():
    assert verify_arms(WIN, BASE, VerifyRule("maximize")).verdict == "ineffective"
    minimised = verify_arms(BASE, WIN, VerifyRule("minimize"))
    assert minimised.verdict == "ineffective"
    assert minimised.improvement < 0
    assert minimised.low <= minimised.high
    assert verify_arms(WIN, BASE, VerifyRule("minimize")).verdict == "effective"


def test_overlapping_arms_are_inconclusive():
    result = verify_arms([0.80, 0.84, 0.78, 0.83], [0.81, 0.85, 0.79, 0.80],
                         VerifyRule("maximize"))
    assert result.verdict == "inconclusive"
    assert result.low < 0 < result.high


def test_a_difference_below_the_minimum_effect_is_not_effective():
    rule = VerifyRule("maximize", min_effect=0.1)  # the gain is ~0.05 +- 0.01
    result = verify_arms(BASE, WIN, rule)
    assert result.verdict == "ineffective"
    assert result.high <= 0.1
    assert verify_arms(BASE, WIN, VerifyRule("maximize", min_effect=0.05)).verdict == \
        "inconclusive"


def test_one_run_per_arm_is_inconclusive_unless_accepted():
    single = verify_arms([0.80], [0.90], VerifyRule("maximize"))
    assert single.verdict == "inconclusive"
    assert single.low is None
    assert "single run" in single.reason
    accepted = verify_arms([0.80], [0.90], VerifyRule("maximize", accept_single_run=True))
    assert accepted.verdict == "effective"
    assert "lucky draw" in accepted.reason
    assert verify_arms([0.8, 0.81], [0.9], VerifyRule("maximize")).verdict == "inconclusive"


def test_the_bootstrap_agrees_on_clear_cases_and_is_reproducible():
    rule = VerifyRule("maximize", method="bootstrap")
    first, second = verify_arms(BASE, WIN, rule), verify_arms(BASE, WIN, rule)
    assert first.verdict == "effective"
    assert first == second
    assert first.low <= first.improvement <= first.high
    assert verify_arms(WIN, BASE, rule).verdict == "ineffective"


def test_no_noise_at_all_is_exact():
    result = verify_arms([1.0, 1.0], [2.0, 2.0], VerifyRule("maximize"))
    assert (result.low, result.high, result.verdict) == (1.0, 1.0, "effective")


@pytest.mark.parametrize(("base", "match"), [([], "no runs"), ([1.0, math.nan], "non-finite")])
def test_bad_arms_are_refused(base, match):
    with pytest.raises(ValueError, match=match):
        verify_arms(base, [1.0, 2.0], VerifyRule("maximize"))
    with pytest.raises(ValueError, match="confidence"):
        VerifyRule("maximize", confidence=1.0)
