"""ml-iteration's compound review: each criterion pass / improved / regressed / fail, one verdict.

Per criterion, against the incumbent (the measured state of HEAD):

* ``regressed`` — it was met by the incumbent and is not now (always), the number the
  incumbent had is missing (on any seed) or not finite now, or the value is worse than the
  incumbent's by more than the noise margin — even while the threshold is still met;
* ``pass`` — the threshold is met (and no regression);
* ``improved`` — not met, but better than the incumbent by more than the noise margin;
* ``fail`` — not met, and no move beyond noise.

A criterion the incumbent failed and the candidate passes counts as an improvement in the
verdict (its status is ``pass``).

The noise margin of a number is two standard errors of the difference when both sides ran
``repeats > 1`` seeds; otherwise a relative margin: ``acceptance.noise`` if the protocol sets it,
else ``DEFAULT_RELATIVE_NOISE`` of its kind (a metric is steadier than a reported speed, and one
run's wall time is the least steady of all). The supervisor's wall times (`train_time_s`,
`first_step_time_s`) never get a margin under ``WALL_TIME_FLOOR_S``.

Verdict: all pass -> commit and stop (``target_reached``); any regression -> roll back; at least
one improvement (or a criterion now passing) -> commit; otherwise commit with a note
(``committed_with_note``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Literal

from spml.protocols.review_criteria import SUPERVISOR_MEASURED, Criterion, ReviewCriteria
from spml.toolkit.loop.measurement import Measurement, SeedRecord, mean_and_sem
from spml.toolkit.loop.observe import has_key
from spml.toolkit.loop.policies import Decision

Status = Literal["pass", "improved", "regressed", "fail"]
# A reported speed swings by tens of percent between identical runs on a shared machine; the
# supervisor's wall time of one run swings more: the iteration example's unchanged training took
# 3.3 to 4.3 s idle and 4.8 to 6.3 s beside two busy processes on a 2-core machine (1.9x), so
# one run against one run must double or halve to count.
DEFAULT_RELATIVE_NOISE = {"metrics": 0.01, "performance": 0.25, "wall_time": 1.0}
WALL_TIME_FLOOR_S = 1.0  # the least noise margin of train_time_s / first_step_time_s
# Ledger columns per dimension (SPML's names).
DIMENSION_COLUMNS = {"metrics": "Metrics", "performance": "Speed",
                     "observability": "Observability", "stability": "Stability",
                     "custom": "Custom"}


@dataclass(frozen=True)
class CriterionResult:
    """One criterion's status this round, and the numbers behind it in words."""

    name: str          # metrics.acc, performance.train_time_s, observability, custom.hf
    status: Status
    detail: str

    @property
    def dimension(self) -> str:
        """metrics | performance | observability | stability | custom."""
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class ReviewPolicy:
    """Reviews a candidate measurement against the incumbent on every criterion."""

    criteria: ReviewCriteria
    noise: float | None = None
    # Candidates judged at once against one incumbent (`parallel:`): the best of K is kept, so
    # each margin widens as a Bonferroni correction would (2 SE is a 95 % two-sided margin;
    # with 4 candidates it becomes the 98.75 % one, 2.55 SE).
    comparisons: int = 1

    def review(self, candidate: Measurement,
               incumbent: Measurement | None) -> list[CriterionResult]:
        """Every criterion's result, in the protocol's order."""
        c = self.criteria
        results = [self._number("metrics", k, candidate, incumbent) for k in c.metrics]
        results += [self._number("performance", k, candidate, incumbent)
                    for k in c.performance]
        if c.observability is not None and c.observability.required_keys:
            results.append(_observability(c.observability.required_keys, candidate, incumbent))
        if c.stability is not None and (c.stability.no_nan or c.stability.forbid_patterns):
            results.append(_stability(c.stability.no_nan, candidate, incumbent))
        results += [_custom(k.name, candidate, incumbent) for k in c.custom]
        return results

    def judge(self, candidate: Measurement, incumbent: Measurement | None) -> Decision:
        """The verdict of a measured round (see the module docstring)."""
        results = self.review(candidate, incumbent)
        statuses = [r.status for r in results]
        per = {r.name: f"{r.status}: {r.detail}" for r in results}
        if all(s == "pass" for s in statuses):
            return Decision("committed", per, "all criteria pass", stop=True)
        named = {s: [r.name for r in results if r.status == s] for s in set(statuses)}
        if "regressed" in named:
            return Decision("rolled_back", per, "regressed: " + _details(results, "regressed"))
        before = {r.name: r.status for r in self.review(incumbent, None)} if incumbent else {}
        fixed = [r.name for r in results if r.status == "pass" and before.get(r.name) == "fail"]
        if "improved" in named or fixed:
            moved = [_details(results, "improved")] if "improved" in named else []
            moved += [f"now passing: {', '.join(fixed)}"] if fixed else []
            return Decision("committed", per, "improved: " + "; ".join(moved)
                            + _still_failing(named))
        return Decision("committed_with_note", per,
                        "no criterion moved beyond noise" + _still_failing(named))

    def _number(self, dimension: str, criterion: Criterion, candidate: Measurement,
                incumbent: Measurement | None) -> CriterionResult:
        source = _source(dimension, criterion.name)
        name = f"{dimension}.{criterion.name}"
        values = candidate.samples(source, criterion.name)
        before = incumbent.samples(source, criterion.name) if incumbent is not None else []
        before = before if before and all(map(math.isfinite, before)) else []
        if len(values) < len(candidate.seeds) or not all(map(math.isfinite, values)):
            problem = next((s.metric_problems[criterion.name] for s in candidate.seeds
                            if source == "metrics" and criterion.name in s.metric_problems), "")
            return _lost_number(name, criterion, source, values, before, problem)
        mean, sem = mean_and_sem(values)
        shown = f"{criterion.name}={mean:.4g}{_origin(source)}"
        met = criterion.met_by(mean)
        if not before:
            return CriterionResult(name, "pass" if met else "fail",
                                   f"{shown} {criterion.op} {criterion.threshold:g}" if met
                                   else f"{shown}, needs {criterion.describe()}")
        best, best_sem = mean_and_sem(before)
        if criterion.met_by(best) and not met:
            return CriterionResult(name, "regressed", f"{shown} no longer meets "
                                   f"{criterion.describe()} (incumbent {best:.4g})")
        margin = self._margin(_noise_kind(source), best, sem, best_sem)
        if source == "measured":  # process start-up jitter: no wall time is exact to a second
            margin = max(margin, WALL_TIME_FLOOR_S)
        gain = _goodness(criterion, mean) - _goodness(criterion, best)
        versus = f"{shown} vs incumbent {best:.4g}, noise margin {margin:.2g}"
        if gain < -margin:  # worse beyond noise is a regression, even while still met
            return CriterionResult(name, "regressed", versus)
        if met:
            return CriterionResult(name, "pass", f"{shown} {criterion.op} {criterion.threshold:g}")
        if gain > margin:
            return CriterionResult(name, "improved", versus)
        return CriterionResult(name, "fail", f"{versus}; needs {criterion.describe()}")

    def _margin(self, dimension: str, best: float, sem: float | None,
                best_sem: float | None) -> float:
        widen = _multiplicity(self.comparisons)
        if sem is not None and best_sem is not None:
            return 2.0 * widen * math.hypot(sem, best_sem)
        relative = self.noise if self.noise is not None else DEFAULT_RELATIVE_NOISE[dimension]
        return widen * relative * abs(best)


def _multiplicity(comparisons: int) -> float:
    """How much wider a margin gets when the best of ``comparisons`` candidates is kept."""
    if comparisons <= 1:
        return 1.0
    normal = statistics.NormalDist()
    return normal.inv_cdf(1 - 0.025 / comparisons) / normal.inv_cdf(0.975)


def _noise_kind(source: str) -> str:
    """Which default relative margin a number of this source gets."""
    return {"metrics": "metrics", "measured": "wall_time"}.get(source, "performance")


def _source(dimension: str, name: str) -> str:
    if name in SUPERVISOR_MEASURED:  # the supervisor's own numbers, whichever dimension
        return "measured"
    return "metrics" if dimension == "metrics" else "reported"


def _lost_number(name: str, criterion: Criterion, source: str, values: list[float],
                 before: list[float], problem: str = "") -> CriterionResult:
    """Not measured on every seed, or not finite: a number the incumbent had is lost.
    ``problem`` is the metric parser's reason (``'0x10' is not a number``), when it has one."""
    why = (f"{criterion.name} is not finite ({values})" if values and not
           all(map(math.isfinite, values)) else _missing(source, criterion.name)
           + ("" if not values else " on every seed") + (f": {problem}" if problem else ""))
    if before:
        return CriterionResult(name, "regressed",
                               f"{why}; the incumbent had {mean_and_sem(before)[0]:.4g}")
    return CriterionResult(name, "fail", why)


def _origin(source: str) -> str:
    return " (reported by the trained code)" if source == "reported" else ""


def _missing(source: str, name: str) -> str:
    if source == "metrics":
        return f"eval printed no {name} value"
    if source == "measured":
        return f"{name} not measured (no per-step line in the training output)"
    return f"training output has no per-step {name} value"


def _goodness(criterion: Criterion, value: float) -> float:
    if criterion.direction == "maximize":
        return value
    if criterion.direction == "minimize":
        return -value
    return -abs(value - criterion.threshold)


def _observability(required: list[str], candidate: Measurement,
                   incumbent: Measurement | None) -> CriterionResult:
    missing = _missing_keys(required, candidate)
    if not missing:
        return CriterionResult("observability", "pass", "per-step lines carry "
                               + ", ".join(required))
    detail = "missing per-step " + ", ".join(missing)
    if incumbent is None:
        return CriterionResult("observability", "fail", detail)
    before = _missing_keys(required, incumbent)
    lost = sorted(set(missing) - set(before))
    if lost:
        return CriterionResult("observability", "regressed",
                               f"{detail} (the incumbent had {', '.join(lost)})")
    if len(missing) < len(before):
        return CriterionResult("observability", "improved", f"{detail} (was {', '.join(before)})")
    return CriterionResult("observability", "fail", detail)


def _missing_keys(required: list[str], measurement: Measurement) -> list[str]:
    """Keys not on every per-step line of every seed."""
    if not measurement.seeds:
        return list(required)
    return [k for k in required
            if not all(_on_every_line(seed, k) for seed in measurement.seeds)]


def _on_every_line(seed: SeedRecord, key: str) -> bool:
    if not seed.key_lines:  # a record from before per-key line counts
        return has_key(seed.step_keys, key)
    lines = max((n for k, n in seed.key_lines.items() if has_key([k], key)), default=0)
    return seed.step_lines > 0 and lines == seed.step_lines


def _stability(no_nan: bool, candidate: Measurement,
               incumbent: Measurement | None) -> CriterionResult:
    problems, count = _stability_problems(no_nan, candidate)
    if not problems:
        return CriterionResult("stability", "pass", "no NaN/Inf, no forbidden pattern"
                               if no_nan else "no forbidden pattern")
    detail = "; ".join(problems)
    if incumbent is None:
        return CriterionResult("stability", "fail", detail)
    before, before_count = _stability_problems(no_nan, incumbent)
    if not before or count > before_count:
        return CriterionResult("stability", "regressed", f"{detail} (incumbent: "
                               f"{'; '.join(before) or 'clean'})")
    if count < before_count:
        return CriterionResult("stability", "improved", f"{detail} (was {'; '.join(before)})")
    return CriterionResult("stability", "fail", detail)


def _stability_problems(no_nan: bool, measurement: Measurement) -> tuple[list[str], int]:
    problems, count = [], 0
    nonfinite = sorted({k for s in measurement.seeds for k in s.nonfinite_keys})
    if no_nan and nonfinite:
        problems.append("NaN/Inf in " + ", ".join(nonfinite))
        count += len(nonfinite)
    hits: dict[str, int] = {}
    for seed in measurement.seeds:
        for pattern, n in seed.pattern_hits.items():
            hits[pattern] = hits.get(pattern, 0) + n
    for pattern, n in sorted(hits.items()):
        if n:
            problems.append(f"{n} line(s) match {pattern!r}")
            count += n
    return problems, count


def _custom(name: str, candidate: Measurement,
            incumbent: Measurement | None) -> CriterionResult:
    key = f"custom.{name}"
    results = [s.custom.get(name) for s in candidate.seeds]
    if results and all(r is not None and r.passed for r in results):
        return CriterionResult(key, "pass", "exit 0")
    failed = next((r for r in results if r is None or not r.passed), None)
    detail = "not run" if failed is None else (failed.cause or f"exit {failed.exit_code}")
    before = [s.custom.get(name) for s in incumbent.seeds] if incumbent is not None else []
    if before and all(r is not None and r.passed for r in before):
        return CriterionResult(key, "regressed", f"{detail}; the incumbent passed")
    return CriterionResult(key, "fail", detail)


def _details(results: list[CriterionResult], status: Status) -> str:
    return "; ".join(f"{r.name} ({r.detail})" for r in results if r.status == status)


def _still_failing(named: dict[str, list[str]]) -> str:
    failing = named.get("fail", [])
    return f"; still failing: {', '.join(failing)}" if failing else ""
