"""L1 training-health judgements over per-step records (both modes; spml-reference §2.4).

A record is a dict with (some of) `contract.RECORD_KEYS`: ``step``, ``loss``, ``grad_norm``,
``nonfinite_grads``, ``lr``, ``step_time_s``, ``throughput``, ``mfu``, ... A missing or
``None`` value means "not measured". Every judge is a pure function returning a
:class:`Judgement`: ``ok``, a one-line ``summary`` for the report and ``evidence`` lines.

Rules (SPML's defaults, `Thresholds`):

- loss trend: the mean of the last window (a third of the steps, at least 3) must be below the
  mean of the first window by more than ``loss_drop_min`` (relative); any NaN/Inf loss fails;
  a loss above ``loss_spike_factor`` x the mean of the previous 10 is reported, not failed.
- gradients: NaN/Inf fails (first step named); a grad norm of 0 on every step means no
  gradient reached the parameters; every norm below ``grad_vanishing`` is vanishing; any
  above ``grad_exploding`` is exploding; a 10x jump over the previous 10 is reported.
- parameter drift ``||θ-θ0|| / ||θ0||`` must lie strictly between ``drift_min`` and
  ``drift_max``.
- throughput: median step time over the steady state (`profiling.mfu`); MFU below
  ``mfu_anomaly`` is an anomaly, judged only when an MFU value was recorded.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from spml.toolkit.profiling.mfu import find_steady_start
from spml.toolkit.runtime.thresholds import Thresholds

Record = Mapping[str, Any]
_MIN_WINDOW = 3
_SPIKE_HISTORY = 10
_FLAT = 1e-6  # a relative change this small is no change (float noise)


class Judgement(NamedTuple):
    """One health verdict: whether it passed, the report line, and why."""

    ok: bool
    summary: str
    evidence: list[str]


def _series(records: Iterable[Record], key: str) -> list[tuple[Any, float]]:
    """``(step, value)`` for every record holding a numeric ``key`` (None = not measured)."""
    points = []
    for index, record in enumerate(records):
        value = record.get(key)
        if value is None or isinstance(value, bool):
            continue
        points.append((record.get("step", index), float(value)))
    return points


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _spikes(points: Sequence[tuple[Any, float]], factor: float) -> list[str]:
    """Values above ``factor`` x the mean of the previous (up to) 10 positive values."""
    found = []
    for i in range(_MIN_WINDOW, len(points)):
        history = [v for _, v in points[max(0, i - _SPIKE_HISTORY):i]]
        mean = statistics.fmean(history)
        step, value = points[i]
        if mean > 0 and value > factor * mean:
            found.append(f"step {step}: {_fmt(value)} > {factor:g}x the mean of the previous "
                         f"{len(history)} ({_fmt(mean)})")
    return found


def judge_loss_trend(records: Sequence[Record], thresholds: Thresholds) -> Judgement:
    """Loss must be finite and trend down: mean of the last window < mean of the first."""
    points = _series(records, "loss")
    if not points:
        return Judgement(False, "no loss recorded", ["no step record holds a 'loss' value"])
    bad = [(step, value) for step, value in points if not math.isfinite(value)]
    if bad:
        step, value = bad[0]
        return Judgement(False, f"loss is {value} at step {step}",
                         [f"{len(bad)} of {len(points)} losses are NaN/Inf, "
                          f"the first at step {step}"])
    if len(points) < 2 * _MIN_WINDOW:
        return Judgement(False, f"too few losses to judge the trend: {len(points)} "
                         f"(need >= {2 * _MIN_WINDOW})", ["run more steps (SPML_MAX_STEPS)"])
    window = max(_MIN_WINDOW, len(points) // 3)
    first = statistics.fmean(v for _, v in points[:window])
    last = statistics.fmean(v for _, v in points[-window:])
    drop = (first - last) / (abs(first) or 1.0)
    change = f"{_fmt(first)} -> {_fmt(last)}"
    evidence = [f"mean loss of the first {window} steps {_fmt(first)}, "
                f"of the last {window} steps {_fmt(last)}"]
    evidence += [f"warning: loss spike at {s}" for s in _spikes(points,
                                                                 thresholds.loss_spike_factor)]
    if drop > max(thresholds.loss_drop_min, _FLAT):
        return Judgement(True, f"loss {change} (down {drop:.0%})", evidence)
    fitted = _fitted_drop([v for _, v in points])
    if fitted > max(thresholds.loss_drop_min, _FLAT):
        # Per-batch losses are noisy and the windows may not line up with epochs: a slow
        # but real decrease shows in the least-squares line over every step.
        evidence.append(f"least-squares line over {len(points)} steps falls {fitted:.1%}")
        return Judgement(True, f"loss trending down: {change} (fitted down {fitted:.1%})",
                         evidence)
    if abs(drop) <= _FLAT:
        return Judgement(False, f"loss not decreasing: {change} (flat)", evidence)
    if drop < 0:
        return Judgement(False, f"loss rising: {change} (up {-drop:.0%})", evidence)
    return Judgement(False, f"loss not decreasing enough: {change} (down {drop:.1%}, "
                     f"needs > {thresholds.loss_drop_min:.1%})", evidence)


def _fitted_drop(values: Sequence[float]) -> float:
    """Relative drop of the least-squares line from the first step to the last."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    var = sum((i - mean_x) ** 2 for i in range(n))
    slope = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / var
    return -slope * (n - 1) / (abs(mean_y) or 1.0)


def judge_learning_rate(records: Sequence[Record]) -> Judgement:
    """A learning rate of 0 on every logged step cannot train (a warm-up from 0 is fine)."""
    rates = [v for _, v in _series(records, "lr")]
    if not rates:
        return Judgement(True, "learning rate not recorded", [])
    if all(rate == 0 for rate in rates):
        return Judgement(False, "learning rate is 0 on every step",
                         [f"lr = 0 on all {len(rates)} logged steps: parameters cannot move"])
    return Judgement(True, f"lr {_fmt(rates[0])} .. {_fmt(rates[-1])}", [])


def _nonfinite_steps(records: Sequence[Record]) -> list[tuple[Any, int]]:
    """``(step, bad tensor count)`` of steps whose gradients held NaN/Inf."""
    steps = []
    for index, record in enumerate(records):
        norm, count = record.get("grad_norm"), record.get("nonfinite_grads") or 0
        if count > 0 or (norm is not None and not math.isfinite(float(norm))):
            steps.append((record.get("step", index), int(count)))
    return steps


def judge_gradients(records: Sequence[Record], thresholds: Thresholds) -> Judgement:
    """Gradients must be finite, reach the parameters, and neither vanish nor explode."""
    bad = _nonfinite_steps(records)
    if bad:
        step, count = bad[0]
        tensors = f" ({count} parameter tensors)" if count else ""
        return Judgement(False, f"NaN/Inf gradients at step {step}",
                         [f"non-finite gradients on {len(bad)} of {len(records)} steps, "
                          f"the first at step {step}{tensors}"])
    points = _series(records, "grad_norm")
    if not points:
        return Judgement(True, "gradient norms not recorded",
                         ["no step record holds 'grad_norm'; log it to check gradient health"])
    norms = [v for _, v in points]
    if all(v == 0 for v in norms):
        return Judgement(False, "no gradients reached the parameters",
                         [f"grad norm 0 on all {len(norms)} steps: the loss is not connected "
                          "to the parameters (detached?) or every parameter is frozen"])
    if max(norms) < thresholds.grad_vanishing:
        return Judgement(False, f"vanishing gradients: max grad norm {max(norms):.3g} "
                         f"< {thresholds.grad_vanishing:g}", [f"on all {len(norms)} steps"])
    big = [(s, v) for s, v in points if v > thresholds.grad_exploding]
    if big:
        step, value = big[0]
        return Judgement(False, f"exploding gradients: grad norm {value:.3g} > "
                         f"{thresholds.grad_exploding:g} at step {step}",
                         [f"{len(big)} of {len(norms)} steps above {thresholds.grad_exploding:g}"])
    evidence = [f"warning: grad norm spike at {s}"
                for s in _spikes(points, thresholds.loss_spike_factor)]
    return Judgement(True, f"grad norm {min(norms):.3g} .. {max(norms):.3g}, no NaN/Inf",
                     evidence)


def judge_drift(drift: float | None, thresholds: Thresholds) -> Judgement:
    """Relative parameter drift ``||θ-θ0||/||θ0||`` must be in (drift_min, drift_max)."""
    if drift is None:
        return Judgement(True, "parameter drift not recorded", [])
    bounds = f"must be > {thresholds.drift_min:g} and < {thresholds.drift_max:g}"
    if not math.isfinite(drift):
        return Judgement(False, f"parameter drift is {drift}", [bounds])
    if drift <= thresholds.drift_min:
        return Judgement(False, f"parameters did not move: drift {drift:.3g}", [bounds])
    if drift >= thresholds.drift_max:
        return Judgement(False, f"parameters moved too far: drift {drift:.3g}", [bounds])
    return Judgement(True, f"param drift {drift:.3g}", [])


def _median_of(records: Sequence[Record], key: str) -> float | None:
    values = [v for _, v in _series(records, key) if math.isfinite(v)]
    return statistics.median(values) if values else None


def judge_throughput(records: Sequence[Record],
                     thresholds: Thresholds | None = None) -> Judgement:
    """Median step time over the steady state; MFU below ``mfu_anomaly`` is an anomaly."""
    thresholds = thresholds or Thresholds()
    points = [(s, v) for s, v in _series(records, "step_time_s") if math.isfinite(v) and v > 0]
    if not points:
        return Judgement(True, "step times not recorded", [])
    times = [v for _, v in points]
    start = find_steady_start(times)
    steady = times[start.index:] if start else times
    where = (f"steady from step {points[start.index][0]}" + (" (forced)" if start.forced else "")
             if start else f"no steady state in {len(times)} steps")
    parts = [f"median step {statistics.median(steady) * 1e3:.3g} ms ({where})"]
    for key, unit in (("throughput", "samples/s"), ("tokens_per_s", "tokens/s")):
        value = _median_of(records, key)
        if value is not None:
            parts.append(f"{value:,.0f} {unit}")
    mfu = _median_of(records, "mfu")
    if mfu is None:
        return Judgement(True, ", ".join(parts), [])
    parts.append(f"MFU {mfu:.1%}")
    if mfu < thresholds.mfu_anomaly:
        return Judgement(False, ", ".join(parts),
                         [f"MFU {mfu:.2%} < {thresholds.mfu_anomaly:.0%}: anomaly"])
    return Judgement(True, ", ".join(parts), [])
