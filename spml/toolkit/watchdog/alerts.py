"""Report-only alerts on a training run's logged metrics, shaped like optuna pruners.

A rule looks at the points logged so far (oldest first) and answers for the LATEST one: each
returned :class:`Alert` means "this holds now". A rule reads only points carrying its metric
(among the last ``8 n + 64`` when it needs ``n`` values), so a line without it leaves the
answer unchanged. :class:`AlertMonitor` feeds new points one by one and reports a rule once
per episode (again only after it answered ``[]``). Metrics come from ``spml.toolkit.metrics.log``
(``loss_of``, ``grad_norm_of``, ``mfu_of`` as a fraction, ``throughput_of``: a baseline must
use the same unit); non-finite values are left to :class:`NonFinite` by every other rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from statistics import fmean, median
from typing import Protocol

from spml.toolkit.metrics.log import MetricPoint, grad_norm_of, loss_of, mfu_of, throughput_of

__all__ = ["Alert", "AlertMonitor", "AlertRule", "Baseline", "GradNorm", "LossSpike",
           "NonFinite", "Plateau", "ThroughputDrop", "baseline_from", "default_rules"]


@dataclass(frozen=True)
class Alert:
    """One report-only alert; ``message`` quotes the numbers that triggered it."""

    rule: str
    step: int | None
    message: str


@dataclass(frozen=True)
class Baseline:
    """Reference values of a healthy run (None: unknown, the rules needing it stay quiet)."""

    loss: float | None = None
    grad_norm: float | None = None
    throughput: float | None = None
    mfu: float | None = None


class AlertRule(Protocol):
    """A check of the latest logged point against the history and the baseline."""

    name: str

    def check(self, points: Sequence[MetricPoint], baseline: Baseline) -> list[Alert]:
        """Alerts holding at ``points[-1]`` (``points`` oldest first), or ``[]``."""


Getter = Callable[[dict[str, float]], float | None]
Series = list[tuple[int | None, float]]


def _series(points: Sequence[MetricPoint], getter: Getter, n: int) -> Series:
    """The last ``n`` (step, value) pairs of points carrying the metric, oldest first."""
    found: Series = []
    for point in reversed(points[-(8 * n + 64) :]):
        value = getter(point.values)
        if value is not None:
            found.append((point.step, value))
            if len(found) == n:
                break
    return found[::-1]


@dataclass(frozen=True)
class NonFinite:
    """A metric (any, or one of ``keys``) is NaN/Inf at its latest of the last ``lookback``."""

    keys: tuple[str, ...] | None = None
    lookback: int = 20
    name: str = "non_finite"

    def check(self, points: Sequence[MetricPoint], baseline: Baseline) -> list[Alert]:
        """Alert when a metric's latest value is not finite (on the first such value)."""
        latest: dict[str, tuple[int | None, float]] = {}
        for point in reversed(points[-self.lookback:]):
            for key, value in point.values.items():
                if key not in latest and (self.keys is None or key in self.keys):
                    latest[key] = (point.step, value)
        bad = [(key, step, value) for key, (step, value) in latest.items()
               if not math.isfinite(value)]
        if not bad:
            return []
        quoted, step = ", ".join(f"{key}={value}" for key, _, value in bad), bad[0][1]
        return [Alert(self.name, step, f"non-finite metric at step {step}: {quoted}")]


@dataclass(frozen=True)
class LossSpike:
    """The latest loss is more than ``factor`` x the average of the previous ``window`` losses."""

    window: int = 10
    factor: float = 3.0
    name: str = "loss_spike"

    def check(self, points: Sequence[MetricPoint], baseline: Baseline) -> list[Alert]:
        """Alert on a spike (needs ``window`` earlier losses with a positive average)."""
        series = _series(points, loss_of, self.window + 1)
        if len(series) <= self.window:
            return []
        (step, loss), average = series[-1], fmean(value for _, value in series[:-1])
        if average <= 0 or loss <= self.factor * average:
            return []
        return [Alert(self.name, step, (
            f"loss {loss:.4g} at step {step} is {loss / average:.1f}x the average {average:.4g} "
            f"of the previous {self.window} losses (limit {self.factor:g}x)"))]


@dataclass(frozen=True)
class Plateau:
    """Loss means of ``windows`` + 1 consecutive windows improve by < ``min_improvement`` each."""

    window: int = 50
    min_improvement: float = 0.005
    windows: int = 2
    name: str = "plateau"

    def check(self, points: Sequence[MetricPoint], baseline: Baseline) -> list[Alert]:
        """Alert when each of ``windows`` window-to-window relative improvements is too small."""
        needed = self.window * (self.windows + 1)
        series = _series(points, loss_of, needed)
        if len(series) < needed:
            return []
        means = [fmean(v for _, v in series[i : i + self.window])
                 for i in range(0, needed, self.window)]
        gains = [(a - b) / abs(a) if a else 0.0 for a, b in zip(means, means[1:], strict=False)]
        if any(gain >= self.min_improvement for gain in gains):
            return []
        step = series[-1][0]
        return [Alert(self.name, step, (
            f"loss plateau at step {step}: means of {len(means)} windows of {self.window} "
            f"losses are {', '.join(f'{m:.4g}' for m in means)}; relative improvements "
            f"{', '.join(f'{g:.2%}' for g in gains)} (each below {self.min_improvement:.2%})"))]


@dataclass(frozen=True)
class GradNorm:
    """The latest grad norm is above ``high`` x or below ``low`` x the baseline grad norm."""

    high: float = 10.0
    low: float = 0.01
    name: str = "grad_norm"

    def check(self, points: Sequence[MetricPoint], baseline: Baseline) -> list[Alert]:
        """Alert on explosion / vanishing (quiet without a positive baseline grad norm)."""
        reference = baseline.grad_norm
        series = _series(points, grad_norm_of, 1) if reference and reference > 0 else []
        if not series or reference is None:
            return []
        step, norm = series[0]
        if norm > self.high * reference:
            kind, limit = "explosion", f"above {self.high:g}x"
        elif norm < self.low * reference:
            kind, limit = "vanishing", f"below {self.low:g}x"
        else:
            return []
        return [Alert(self.name, step, (
            f"gradient {kind}: grad_norm {norm:.4g} at step {step} is {norm / reference:.3g}x "
            f"the baseline {reference:.4g} ({limit})"))]


@dataclass(frozen=True)
class ThroughputDrop:
    """Throughput or MFU more than ``drop`` below the baseline for ``consecutive`` points."""

    drop: float = 0.2
    consecutive: int = 3
    name: str = "throughput_drop"

    def check(self, points: Sequence[MetricPoint], baseline: Baseline) -> list[Alert]:
        """One alert per metric (throughput, mfu) whose last values are all too low."""
        alerts = []
        for label, getter, reference in (("throughput", throughput_of, baseline.throughput),
                                         ("mfu", mfu_of, baseline.mfu)):
            series = _series(points, getter, self.consecutive) if reference else []
            if reference and reference > 0 and len(series) == self.consecutive and all(
                    value < (1 - self.drop) * reference for _, value in series):
                (step, last), quoted = series[-1], ", ".join(f"{v:.4g}" for _, v in series)
                alerts.append(Alert(self.name, step, (
                    f"{label} drop at step {step}: last {self.consecutive} values {quoted} are "
                    f"{1 - last / reference:.0%} below the baseline {reference:.4g} (limit "
                    f"{self.drop:.0%}; thermal/power throttling or I/O suspected)")))
        return alerts


def default_rules() -> tuple[AlertRule, ...]:
    """The five rules with their default thresholds."""
    return NonFinite(), LossSpike(), Plateau(), GradNorm(), ThroughputDrop()


_BASELINE_GETTERS: dict[str, Getter] = {
    "loss": loss_of, "grad_norm": grad_norm_of, "throughput": throughput_of, "mfu": mfu_of}


class _BaselineBuilder:
    """Collects, per metric, the values after the first ``warmup`` ones (``window`` of them)."""

    def __init__(self, warmup: int, window: int) -> None:
        if warmup < 0 or window < 1:
            raise ValueError(f"need warmup >= 0 and window >= 1, got {warmup}, {window}")
        self.warmup, self.window = warmup, window
        self._seen = dict.fromkeys(_BASELINE_GETTERS, 0)
        self._kept: dict[str, list[float]] = {name: [] for name in _BASELINE_GETTERS}
        self.baseline = Baseline()

    def add(self, point: MetricPoint) -> bool:
        """Take one point; True when a baseline value became known."""
        changed = False
        for name, getter in _BASELINE_GETTERS.items():
            value, kept = getter(point.values), self._kept[name]
            if value is not None and len(kept) < self.window:
                self._seen[name] += 1
                if self._seen[name] > self.warmup:
                    kept.append(value)
                    changed = changed or len(kept) == self.window
        if changed:  # mean for the loss (its level), median for rates (robust to stalls)
            done = {n: v for n, v in self._kept.items() if len(v) == self.window}
            self.baseline = Baseline(**{n: fmean(v) if n == "loss" else median(v)
                                        for n, v in done.items()})
        return changed


def baseline_from(points: Sequence[MetricPoint], warmup: int = 5, window: int = 10) -> Baseline:
    """The run's own baseline from its first stable window, when no reference is given.

    Args:
        points: Logged points, oldest first.
        warmup: Values of each metric to skip first (compilation, LR warmup); >= 0.
        window: Values of each metric to summarise next (mean loss; median grad norm,
            throughput, MFU); >= 1. A metric with fewer values stays None.

    Raises:
        ValueError: ``warmup`` < 0 or ``window`` < 1.
    """
    builder = _BaselineBuilder(warmup, window)
    for point in points:
        builder.add(point)
    return builder.baseline


class AlertMonitor:
    """Runs the rules on every new point and reports each rule once per episode."""

    def __init__(self, rules: Sequence[AlertRule] | None = None,
                 baseline: Baseline | None = None, *, memory: int = 1000,
                 warmup: int = 5, window: int = 10) -> None:
        """Set up the rules and the baseline.

        Args:
            rules: The rules (default: :func:`default_rules`).
            baseline: Reference values (e.g. VP baseline); its None fields, or all of them
                without one, come from the run (``baseline_from(..., warmup, window)``).
            memory: Points kept for the rules (more than the longest rule window).
            warmup: See :func:`baseline_from`.
            window: See :func:`baseline_from`.
        """
        self.rules = tuple(rules) if rules is not None else default_rules()
        self._given = baseline or Baseline()
        self._builder = _BaselineBuilder(warmup, window)
        self._memory = max(memory, 1)
        self._points: list[MetricPoint] = []
        self._active: set[str] = set()
        self.baseline = self._merged()

    @property
    def active(self) -> frozenset[str]:
        """Names of the rules whose episode is still open."""
        return frozenset(self._active)

    def update(self, points: Sequence[MetricPoint]) -> list[Alert]:
        """Feed NEW points, oldest first (e.g. what ``MetricHistory.add_lines`` returned).

        Returns:
            Alerts of rules that started firing at one of these points (in point order).
        """
        alerts: list[Alert] = []
        for point in points:
            self._points.append(point)
            if len(self._points) > 2 * self._memory:
                del self._points[: -self._memory]
            if self._builder.add(point):
                self.baseline = self._merged()
            for rule in self.rules:
                fired = rule.check(self._points, self.baseline)
                if not fired:
                    self._active.discard(rule.name)
                elif rule.name not in self._active:
                    self._active.add(rule.name)
                    alerts.extend(fired)
        return alerts

    def _merged(self) -> Baseline:
        given = {f.name: getattr(self._given, f.name) for f in fields(Baseline)}
        return replace(self._builder.baseline, **{k: v for k, v in given.items() if v is not None})
