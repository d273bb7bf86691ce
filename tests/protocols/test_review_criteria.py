"""`review_criteria`: the typed shape, the older free-text forms, and errors with their line."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import problem_rows
from pydantic import BaseModel, ConfigDict, ValidationError

from spml.protocols.frontmatter import format_validation_error, read_front_matter
from spml.protocols.review_criteria import (
    SUPERVISOR_MEASURED,
    Criterion,
    CustomCheck,
    Observability,
    ReviewCriteria,
    Stability,
    criteria_names,
    parse_criterion_text,
)

FULL: dict[str, Any] = {
    "metrics": [{"name": "acc", "op": ">=", "threshold": 0.9}],
    "performance": [{"name": "train_time_s", "op": "<=", "threshold": 3}],
    "observability": {"required_keys": ["loss", "grad_norm"]},
    "stability": {"no_nan": True, "forbid_patterns": ["UserWarning: .*autograd"]},
    "custom": [{"name": "hf_loadable", "command": "python check_hf.py"}],
}

DOC = """\
---
title: design doc
review_criteria:
  metrics:
    - {name: acc, op: ">=", threshold: 0.9}
    - "val_loss < 1.5"
  performance:
    - "first_step_time <= 30s"
    - "mfu >= 0.30"
  stability:
    no_nan: true
    forbid_patterns:
      - "UserWarning: .*autograd"
  custom:
    - {name: hf_loadable, command: python check_hf.py}
---
prose
"""


class _DesignDoc(BaseModel):
    """A stand-in for the design doc that will embed review_criteria."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    title: str
    review_criteria: ReviewCriteria


def _criteria(**fields: Any) -> ReviewCriteria:
    return ReviewCriteria.model_validate(fields)


def _refusal(**fields: Any) -> str:
    with pytest.raises(ValidationError) as info:
        _criteria(**fields)
    return str(info.value)


def _doc_errors(tmp_path: Path, old: str, new: str) -> tuple[Path, list[str]]:
    assert old in DOC, old
    path = tmp_path / "design.md"
    path.write_text(DOC.replace(old, new), encoding="utf-8")
    doc = read_front_matter(path)
    with pytest.raises(ValidationError) as info:
        _DesignDoc.model_validate(doc.data)
    message = format_validation_error(path.name, info.value, doc)
    return path, problem_rows(message)


def _line(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


# --- the typed shape -------------------------------------------------------------------------


def test_full_typed_shape_loads() -> None:
    criteria = ReviewCriteria.model_validate(FULL)

    assert criteria.metrics == [Criterion(name="acc", op=">=", threshold=0.9)]
    assert criteria.performance[0].threshold == 3.0
    assert isinstance(criteria.performance[0].threshold, float)
    assert criteria.observability == Observability(required_keys=["loss", "grad_norm"])
    assert criteria.stability == Stability(no_nan=True,
                                           forbid_patterns=["UserWarning: .*autograd"])
    assert criteria.custom == [CustomCheck(name="hf_loadable", command="python check_hf.py")]
    assert criteria.custom[0].timeout is None
    assert criteria_names(criteria) == ["metrics.acc", "performance.train_time_s",
                                        "observability", "stability", "custom.hf_loadable"]
    assert SUPERVISOR_MEASURED == ("train_time_s", "first_step_time_s")


def test_every_dimension_defaults_to_empty() -> None:
    criteria = _criteria(metrics=[{"name": "acc", "op": ">=", "threshold": 1}])

    assert criteria.performance == []
    assert criteria.observability is None
    assert criteria.stability is None
    assert criteria.custom == []
    assert criteria_names(criteria) == ["metrics.acc"]


def test_dimension_fields_have_defaults() -> None:
    criteria = _criteria(observability={}, stability={},
                         custom=[{"name": "ok", "command": "true", "timeout": "2min"}])

    assert criteria.observability == Observability(required_keys=[])
    assert criteria.stability == Stability(no_nan=True, forbid_patterns=[])
    assert criteria.custom[0].timeout == 120.0
    # An empty observability checks nothing; a default stability checks for NaN.
    assert criteria_names(criteria) == ["stability", "custom.ok"]


@pytest.mark.parametrize("fields", [
    {}, {"metrics": [], "performance": [], "custom": []}, {"observability": {}},
    {"stability": {"no_nan": False}}, {"observability": {"required_keys": []},
                                       "stability": {"no_nan": False, "forbid_patterns": []}},
])
def test_a_review_with_nothing_to_check_is_refused(fields: dict[str, Any]) -> None:
    message = _refusal(**fields)

    assert "review_criteria has nothing to check: add at least one of metrics" in message
    assert "observability.required_keys" in message
    assert "custom" in message


@pytest.mark.parametrize(("fields", "words"), [
    ({"metrics": [{"name": "acc", "op": ">=", "threshold": 0.9},
                  {"name": "acc", "op": "<=", "threshold": 1}]},
     "metrics names must be unique, got acc more than once"),
    ({"performance": ["mfu >= 0.3", "mfu >= 0.4"]},
     "performance names must be unique, got mfu more than once"),
    ({"custom": [{"name": "hf", "command": "a"}, {"name": "hf", "command": "b"}]},
     "custom names must be unique, got hf more than once"),
])
def test_names_must_be_unique_within_a_dimension(fields: dict[str, Any], words: str) -> None:
    assert words in _refusal(**fields)


def test_the_same_name_may_appear_in_metrics_and_performance() -> None:
    criteria = _criteria(metrics=["x >= 1"], performance=["x <= 5"])

    assert criteria_names(criteria) == ["metrics.x", "performance.x"]


@pytest.mark.parametrize(("fields", "words"), [
    ({"metrics": [{"name": "acc", "op": "=>", "threshold": 0.9}]}, "'>=', '<=', '>', '<' or '=='"),
    ({"metrics": [{"name": "my acc", "op": ">=", "threshold": 0.9}]}, "pattern"),
    ({"metrics": [{"name": "acc", "op": ">=", "threshold": float("nan")}]}, "finite"),
    ({"metrics": [{"name": "acc", "op": ">=", "threshold": "0.9"}]}, "valid number"),
    ({"metrics": [{"name": "acc", "op": ">=", "threshold": 0.9, "unit": "%"}]}, "Extra inputs"),
    ({"metrics": [{"name": "acc", "op": ">=", "direction": ">=", "threshold": 1}]},
     "give op only (direction is its older name), not both"),
    ({"custom": [{"name": "hf", "command": "  "}]}, "command must not be empty"),
    ({"custom": [{"name": "hf"}]}, "Field required"),
    ({"custom": [{"name": "hf", "command": "x", "timeout": 0}]}, "greater than 0"),
    ({"observability": {"required_keys": ["loss", "grad norm"]}}, "pattern"),
    ({"stability": {"no_nan": "yes"}}, "valid boolean"),
])
def test_typed_fields_are_checked(fields: dict[str, Any], words: str) -> None:
    assert words in _refusal(**fields)


def test_older_metric_dict_reads_direction_as_op() -> None:
    criteria = _criteria(metrics=[{"name": "acc", "direction": ">=", "threshold": 0.9}])

    assert criteria.metrics == [Criterion(name="acc", op=">=", threshold=0.9)]


# --- free text -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "name", "op", "threshold"), [
    ("first_step_time <= 30s", "first_step_time_s", "<=", 30.0),
    ("mfu >= 0.30", "mfu", ">=", 0.3),
    ("acc>=0.9", "acc", ">=", 0.9),
    ("val_loss < 1.5", "val_loss", "<", 1.5),
    ("  loss  ==  0  ", "loss", "==", 0.0),
    ("delta > -0.5", "delta", ">", -0.5),
    ("lr <= 1e-3", "lr", "<=", 0.001),
    ("train_time <= 2min", "train_time_s", "<=", 120.0),
    ("epoch_time < 1h", "epoch_time_s", "<", 3600.0),
    ("step_time <= 500ms", "step_time_s", "<=", 0.5),
    ("step_time <= 0.5", "step_time", "<=", 0.5),  # no unit: the name is kept
    ("train_time <= 30", "train_time_s", "<=", 30.0),  # the supervisor's own, in seconds
    ("first_step_time < 9", "first_step_time_s", "<", 9.0),
    ("train_time_s <= 5min", "train_time_s", "<=", 300.0),
    ("eval/acc >= 0.8", "eval/acc", ">=", 0.8),
    ("wall <= 30 s", "wall", "<=", 30.0),
])
def test_free_text_is_read_as_a_criterion(text: str, name: str, op: str,
                                          threshold: float) -> None:
    assert parse_criterion_text(text) == {"name": name, "op": op, "threshold": threshold}
    criteria = _criteria(performance=[text])
    assert criteria.performance == [Criterion(name=name, op=op, threshold=threshold)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "words"), [
    ("per-step loss / grad_norm / step_time", 'must read "name op value"'),
    ("tqdm progress bar per phase", 'write it as "name op value", e.g. "mfu >= 0.30"'),
    ("no NaN / Inf", "or use observability.required_keys / stability.no_nan"),
    ("acc => 0.9", 'must read "name op value"'),
    ("acc >=", 'must read "name op value"'),
    ("loss < grad_norm", "must be a number or a duration such as '30s'"),
    ("mfu >= 30%", "got '30%'"),
    ("acc >= nan", "must be a number or a duration"),
    ("acc >= inf", "must be a number or a duration"),
    ("first_step_time <= 30 minutes", "got '30 minutes'"),
])
def test_free_text_that_does_not_read_name_op_value_is_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        parse_criterion_text(text)
    message = _refusal(metrics=[text])
    assert words in message
    assert repr(text) in message  # the item is named


@pytest.mark.parametrize(("field", "value", "shape"), [
    ("observability", ["per-step loss / grad_norm / step_time"],
     "{required_keys: [loss, grad_norm]}"),
    ("observability", "loss and grad_norm", "{required_keys: [loss, grad_norm]}"),
    ("stability", ["no NaN / Inf", "no torch autograd warnings"],
     "{no_nan: true, forbid_patterns: ['UserWarning: .*autograd']}"),
    ("custom", ["checkpoint is HF AutoModel compatible"],
     "{name: hf_loadable, command: 'python check_hf.py'}"),
])
def test_free_text_in_the_other_dimensions_is_refused_with_the_typed_shape(
        field: str, value: Any, shape: str) -> None:
    message = _refusal(**{field: value})

    assert f"takes the typed form {shape}, got free text" in message


@pytest.mark.parametrize("pattern", ["(unclosed", "[a-", "*warning", "a{2,1}"])
def test_a_pattern_that_does_not_compile_is_refused_by_name(pattern: str) -> None:
    message = _refusal(stability={"forbid_patterns": ["ok", pattern]})

    assert ("forbid_patterns entries must be valid Python regular expressions, "
            f"got {pattern!r}") in message
    assert "stability.forbid_patterns.1" in message


# --- Criterion behaviour ---------------------------------------------------------------------


@pytest.mark.parametrize(("op", "value", "met"), [
    (">=", 0.9, True), (">=", 0.95, True), (">=", 0.89, False),
    (">", 0.9, False), (">", 0.91, True),
    ("<=", 0.9, True), ("<=", 0.91, False), ("<", 0.9, False), ("<", 0.5, True),
    ("==", 0.9, True), ("==", 0.9 + 1e-12, True), ("==", 0.9001, False),
    (">=", math.inf, True), ("<=", -math.inf, True),
])
def test_met_by_compares_with_the_threshold(op: str, value: float, met: bool) -> None:
    assert Criterion(name="m", op=op, threshold=0.9).met_by(value) is met  # type: ignore[arg-type]


@pytest.mark.parametrize("op", [">=", "<=", ">", "<", "=="])
def test_nan_never_meets_a_criterion(op: str) -> None:
    assert Criterion(name="m", op=op, threshold=0.0).met_by(math.nan) is False  # type: ignore[arg-type]


def test_equality_near_zero_uses_an_absolute_tolerance() -> None:
    criterion = Criterion(name="m", op="==", threshold=0)

    assert criterion.met_by(1e-13)
    assert not criterion.met_by(1e-9)


@pytest.mark.parametrize(("op", "direction"), [
    (">=", "maximize"), (">", "maximize"), ("<=", "minimize"), ("<", "minimize"),
    ("==", "target"),
])
def test_direction_and_description(op: str, direction: str) -> None:
    criterion = Criterion(name="acc", op=op, threshold=0.9)  # type: ignore[arg-type]

    assert criterion.direction == direction
    assert criterion.describe() == f"acc {op} 0.9"


@pytest.mark.parametrize(("threshold", "shown"), [
    (300, "300"), (0.30, "0.3"), (1234567.5, "1234567.5"), (1e-4, "0.0001"), (-2.0, "-2")])
def test_description_keeps_the_threshold_exact(threshold: float, shown: str) -> None:
    assert Criterion(name="t", op="<=", threshold=threshold).describe() == f"t <= {shown}"


def test_models_are_frozen() -> None:
    criteria = ReviewCriteria.model_validate(FULL)

    with pytest.raises(ValidationError, match="frozen"):
        criteria.metrics[0].threshold = 1.0  # type: ignore[misc]


# --- through the front matter: errors name the field and its line ----------------------------


def test_the_design_doc_form_loads(tmp_path: Path) -> None:
    path = tmp_path / "design.md"
    path.write_text(DOC, encoding="utf-8")

    criteria = _DesignDoc.model_validate(read_front_matter(path).data).review_criteria

    assert criteria_names(criteria) == [
        "metrics.acc", "metrics.val_loss", "performance.first_step_time_s",
        "performance.mfu", "stability", "custom.hf_loadable"]


@pytest.mark.parametrize(("old", "new", "field", "line_of", "words"), [
    ('    - "mfu >= 0.30"', '    - "tqdm progress bar per phase"',
     "review_criteria.performance.1", "tqdm", 'must read "name op value"'),
    ('    - "val_loss < 1.5"', '    - "val_loss < lots"',
     "review_criteria.metrics.1", "val_loss < lots", "must be a number or a duration"),
    ('      - "UserWarning: .*autograd"', '      - "UserWarning: .*autograd"\n      - "(oops"',
     "review_criteria.stability.forbid_patterns.1", "(oops",
     "must be valid Python regular expressions, got '(oops'"),
    ("    - {name: hf_loadable, command: python check_hf.py}",
     "    - {name: hf_loadable, command: python check_hf.py}\n    - HF AutoModel loads",
     "review_criteria.custom.1", "HF AutoModel", "typed form"),
    ('    - {name: acc, op: ">=", threshold: 0.9}', '    - {name: acc, op: "=>", threshold: 0.9}',
     "review_criteria.metrics.0.op", "=>", "'>=', '<=', '>', '<' or '=='"),
    ("  stability:\n    no_nan: true", "  observability: [per-step loss]\n  stability:\n"
     "    no_nan: true", "review_criteria.observability", "observability:", "typed form"),
])
def test_errors_name_the_item_and_its_line(tmp_path: Path, old: str, new: str, field: str,
                                           line_of: str, words: str) -> None:
    path, rows = _doc_errors(tmp_path, old, new)

    expected = f"- {field} (line {_line(path, line_of)}): "
    assert any(row.startswith(expected) and words in row for row in rows), rows
