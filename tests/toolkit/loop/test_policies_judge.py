"""Auto Research's verdict: MinDeltaPolicy.judge on measured rounds."""

from __future__ import annotations

import math

import pytest

from spml.toolkit.loop.measurement import Measurement, SeedRecord
from spml.toolkit.loop.policies import Decision, MinDeltaPolicy, target_reached


def measured(*values: float, metric: str = "acc") -> Measurement:
    return Measurement(primary=metric, seeds=tuple(
        SeedRecord(seed=i, metrics={metric: v}) for i, v in enumerate(values)))


MAX = MinDeltaPolicy("maximize", metric="acc")


@pytest.mark.parametrize(("cand", "inc", "verdict", "status"), [
    (0.6, 0.5, "committed", "improved"),
    (0.4, 0.5, "rolled_back", "regressed"),
    (0.5, 0.5, "rolled_back", "fail"),
    (math.nan, 0.5, "rolled_back", "fail"),
])
def test_statuses(cand: float, inc: float, verdict: str, status: str) -> None:
    decision = MAX.judge(measured(cand), measured(inc))
    assert (decision.verdict, decision.stop) == (verdict, False)
    assert list(decision.per_criterion) == ["metrics.acc"]
    assert decision.per_criterion["metrics.acc"].startswith(f"{status}: ")


def test_first_round_is_kept() -> None:
    decision = MAX.judge(measured(0.1), None)
    assert decision == Decision("committed", {"metrics.acc": "improved: 0.1"},
                                "first measured value 0.1")


def test_minimize_statuses() -> None:
    policy = MinDeltaPolicy("minimize", metric="loss")
    better = policy.judge(measured(0.4, metric="loss"), measured(0.5, metric="loss"))
    assert better.per_criterion == {"metrics.loss": "improved: 0.4"}
    assert better.rationale == "improved on best 0.5 by 0.1"
    worse = policy.judge(measured(0.6, metric="loss"), measured(0.5, metric="loss"))
    assert (worse.verdict, worse.per_criterion) == ("rolled_back",
                                                    {"metrics.loss": "regressed: 0.6"})


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize(("step", "verdict", "status"), [
    (0.125, "rolled_back", "fail"), (0.25, "rolled_back", "fail"),   # equal to min_delta: no
    (0.375, "committed", "improved"),
    (-0.25, "rolled_back", "fail"), (-0.375, "rolled_back", "regressed"),
])
def test_min_delta_boundary(direction: str, step: float, verdict: str, status: str) -> None:
    policy = MinDeltaPolicy(direction, min_delta=0.25)  # type: ignore[arg-type]
    sign = 1 if direction == "maximize" else -1  # binary-exact steps
    decision = policy.judge(measured(1.0 + sign * step), measured(1.0))
    assert decision.verdict == verdict
    assert decision.per_criterion["metrics.metric"].split(":")[0] == status


def test_mean_over_seeds_decides() -> None:
    decision = MAX.judge(measured(0.4, 0.8), measured(0.5, 0.55))   # 0.6 vs 0.525
    assert decision.verdict == "committed"
    assert decision.per_criterion["metrics.acc"] == "improved: 0.6"
    worse = MAX.judge(measured(0.9, 0.1), measured(0.5, 0.55))       # 0.5 vs 0.525
    assert worse.verdict == "rolled_back"


@pytest.mark.parametrize(("direction", "target", "cand", "inc", "stop"), [
    ("maximize", 0.9, 0.9, 0.5, True), ("maximize", 0.9, 0.95, None, True),
    ("maximize", 0.9, 0.89, 0.5, False),
    ("maximize", 0.9, 0.95, 0.96, False),            # at the target but not kept
    ("minimize", 0.1, 0.1, 0.5, True), ("minimize", 0.1, 0.11, 0.5, False),
    ("minimize", None, 0.0, 0.5, False),
])
def test_stop_at_target(direction: str, target: float | None, cand: float,
                        inc: float | None, stop: bool) -> None:
    policy = MinDeltaPolicy(direction, target=target)  # type: ignore[arg-type]
    incumbent = measured(inc) if inc is not None else None
    assert policy.judge(measured(cand), incumbent).stop is stop


def test_target_reached() -> None:
    assert target_reached(0.9, 0.9, "maximize")
    assert not target_reached(0.89, 0.9, "maximize")
    assert target_reached(0.1, 0.1, "minimize")
    assert not target_reached(0.11, 0.1, "minimize")
    assert not target_reached(None, 0.1, "minimize")
    assert not target_reached(0.5, None, "maximize")
    assert not target_reached(math.inf, 0.9, "maximize")
