"""When a value replaces the best, and when the loop has reached its target."""

from __future__ import annotations

import math

import pytest

from spml.toolkit.loop.policies import MinDeltaPolicy, target_reached

NOT_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize(("value", "best", "improves"), [
    (0.4, 0.5, True), (0.5, 0.5, False), (0.6, 0.5, False), (-1.0, 0.0, True),
    (0.1, None, True),
])
def test_minimize(value: float, best: float | None, improves: bool) -> None:
    assert MinDeltaPolicy("minimize").improves(value, best) is improves


@pytest.mark.parametrize(("value", "best", "improves"), [
    (0.6, 0.5, True), (0.5, 0.5, False), (0.4, 0.5, False), (1.0, -1.0, True),
    (0.1, None, True),
])
def test_maximize(value: float, best: float | None, improves: bool) -> None:
    assert MinDeltaPolicy("maximize").improves(value, best) is improves


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_min_delta_must_be_exceeded(direction: str) -> None:
    policy = MinDeltaPolicy(direction, min_delta=0.25)  # type: ignore[arg-type]
    sign = -1 if direction == "minimize" else 1  # binary-exact steps: no rounding noise

    assert not policy.improves(1.0 + sign * 0.125, 1.0)
    assert not policy.improves(1.0 + sign * 0.25, 1.0)  # equal to min_delta is not more
    assert policy.improves(1.0 + sign * 0.375, 1.0)
    assert not policy.improves(1.0 - sign * 0.5, 1.0)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize("best", [None, 0.5])
def test_non_finite_values_never_improve(direction: str, value: float,
                                         best: float | None) -> None:
    assert MinDeltaPolicy(direction).improves(value, best) is False  # type: ignore[arg-type]


def test_explain() -> None:
    policy = MinDeltaPolicy("minimize", min_delta=0.01)

    assert policy.explain(0.5, None) == "first measured value 0.5"
    assert policy.explain(0.3, 0.5) == "improved on best 0.5 by 0.2"
    assert policy.explain(0.495, 0.5) == "not better than best 0.5 by more than 0.01 " \
                                         "(delta -0.005)"
    assert MinDeltaPolicy("maximize").explain(0.4, 0.5) == "not better than best 0.5 " \
                                                           "(delta -0.1)"
    assert MinDeltaPolicy("maximize").explain(0.7, 0.5) == "improved on best 0.5 by 0.2"


@pytest.mark.parametrize(("value", "target", "direction", "reached"), [
    (0.1, 0.2, "minimize", True), (0.2, 0.2, "minimize", True), (0.3, 0.2, "minimize", False),
    (0.9, 0.8, "maximize", True), (0.8, 0.8, "maximize", True), (0.7, 0.8, "maximize", False),
    (None, 0.2, "minimize", False), (0.1, None, "minimize", False),
    (math.nan, 0.2, "minimize", False), (math.nan, 0.8, "maximize", False),
    (-math.inf, 0.2, "minimize", False), (math.inf, 0.8, "maximize", False),
])
def test_target_reached(value: float | None, target: float | None, direction: str,
                        reached: bool) -> None:
    assert target_reached(value, target, direction) is reached  # type: ignore[arg-type]
