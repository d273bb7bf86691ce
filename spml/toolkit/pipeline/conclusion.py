"""The `## Conclusion` a subtask gets when `develop` finishes it (SPML §1.8, §6).

A code subtask records its role, ``implemented`` and the tests that pass. The integration
subtask records the hypothesis, a result, the evidence as ``metric: actual (expected:
threshold)`` from L1, the anomalies and a recommendation.

L1 is a limited validation run, never the experiment (SPML §2.1): a metric that misses its
final-quality threshold after 60 steps says nothing against the hypothesis. So from L1 alone
the result is ``effective`` (every metric criterion met by a recorded number) or
``inconclusive`` (one missed or not measured); ``ineffective`` needs full-run evidence, which
verification weighs later.
"""

from __future__ import annotations

from typing import Any

from spml.protocols.review_criteria import Criterion, ReviewCriteria
from spml.toolkit.pipeline.levels import LevelResult


def code_conclusion(role: str, tests: LevelResult, files: list[str]) -> dict[str, str]:
    """Role / Result / Evidence of a finished code subtask."""
    targets = ", ".join(tests.data.get("targets", []))
    shown = ", ".join(files) if files else "no file changed"
    return {"Role": role or "(none given)", "Result": "implemented",
            "Evidence": f"{tests.data.get('passed', 0)} tests passing ({targets}); "
                        f"files: {shown}"}


def l1_values(l1: dict[str, Any]) -> dict[str, float]:
    """Every number L1 measured, by name (stage metrics flattened; the eval metric too)."""
    values: dict[str, float] = {}
    for stage in l1.get("stages", []):
        for name, value in (stage.get("metrics") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = float(value)
    if "first_step_s" in values:  # the criteria's name for the supervisor-measured figure
        values.setdefault("first_step_time_s", values["first_step_s"])
    if "duration_s" in values:
        values.setdefault("train_time_s", values["duration_s"])
    return values


def evidence_rows(criteria: ReviewCriteria | None, values: dict[str, float]
                  ) -> list[tuple[Criterion, float | None]]:
    """Each numeric criterion (metrics, then performance) with L1's value or None."""
    if criteria is None:
        return []
    numeric = [*criteria.metrics, *criteria.performance]
    return [(c, values.get(c.name)) for c in numeric]


def integration_conclusion(hypothesis: str, criteria: ReviewCriteria | None, l0: LevelResult,
                           l1: LevelResult) -> dict[str, str]:
    """Hypothesis / Result / Evidence / Anomalies / Recommendation from L0 and L1."""
    rows = evidence_rows(criteria, l1_values(l1.data))
    evidence = [f"{c.name}: {_number(v)} (expected: {c.op} {c.threshold:g})" for c, v in rows]
    steps = next((s.get("metrics", {}).get("steps") for s in l1.data.get("stages", [])
                  if s.get("name") == "Training"), None)
    evidence.append(f"L0: {l0.summary}; L1: {l1.summary}, {l1.data.get('elapsed_s', 0):.1f} s"
                    + (f", {steps} steps" if steps else ""))
    metric_rows = [(c, v) for c, v in rows if criteria and c in criteria.metrics]
    effective = bool(metric_rows) and all(v is not None and c.met_by(v) for c, v in metric_rows)
    anomalies = _anomalies(l0, l1, rows)
    return {
        "Hypothesis": hypothesis or "(none stated)",
        "Result": "effective" if effective else "inconclusive",
        "Evidence": "; ".join(evidence),
        "Anomalies": "; ".join(anomalies) if anomalies else "none",
        "Recommendation": _recommendation(effective, anomalies, steps),
    }


def _anomalies(l0: LevelResult, l1: LevelResult, rows: list[tuple[Criterion, float | None]]
               ) -> list[str]:
    found = [f"{c.name} not measured by L1" for c, v in rows if v is None]
    if l0.data.get("warnings"):
        found.append(f"L0 warnings: {l0.data['warnings']} (see the L0 report)")
    found.extend(str(note) for note in l1.data.get("notes", []))
    return found


def _recommendation(effective: bool, anomalies: list[str], steps: object) -> str:
    if effective and not anomalies:
        return "proceed"
    if effective:
        return "proceed, after reviewing the anomalies"
    limited = f"L1 ran {steps} steps only" if steps else "L1 is a limited run"
    return (f"proceed to a full run: {limited}, so the metric thresholds are judged by the "
            "loop and verification, not here" + ("; review the anomalies" if anomalies else ""))


def _number(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.6g}"
