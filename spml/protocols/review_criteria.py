"""`review_criteria`: what a round (or a run) must achieve, in five typed dimensions.

Shared by the ml-iteration protocol and, later, the design doc::

    review_criteria:
      metrics:       [{name: acc, op: ">=", threshold: 0.9}]         # from the eval output
      performance:   [{name: train_time_s, op: "<=", threshold: 3}]  # measured or logged
      observability: {required_keys: [loss, grad_norm]}              # per-step training lines
      stability:     {no_nan: true, forbid_patterns: ["UserWarning: .*autograd"]}
      custom:        [{name: hf_loadable, command: "python check_hf.py"}]   # exit 0 = pass

Every dimension is optional, but at least one criterion is required. SPML's older free-text
form is read where it is unambiguous: ``"first_step_time <= 30s"`` in `metrics`/`performance`
becomes ``{name: first_step_time_s, op: "<=", threshold: 30}``, and the metric dict form
``{name, direction: ">=", threshold}`` reads ``direction`` as ``op``. Free text elsewhere is
refused with the typed shape to write instead.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from spml.protocols.frontmatter import PositiveDuration, parse_duration

# Measured by the supervisor around the training run; every other performance name is read
# from the training log ("reported by the trained code").
SUPERVISOR_MEASURED: tuple[str, ...] = ("train_time_s", "first_step_time_s")

NAME_PATTERN = r"^[A-Za-z0-9_./-]+$"
Op = Literal[">=", "<=", ">", "<", "=="]
CriterionDirection = Literal["maximize", "minimize", "target"]
_OPS = ">=|<=|==|>|<"
# "name op value": `acc>=0.9`, `val_loss < 1.5`, `first_step_time <= 30s`.
FREE_TEXT = re.compile(
    rf"^\s*(?P<name>[A-Za-z0-9_./-]+)\s*(?P<op>{_OPS})\s*(?P<value>[^\s<>=].*?)\s*$")
_DURATION_VALUE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|sec|min|m|h)$")
_FREE_TEXT_SCHEMA = {
    "type": "string",
    "pattern": rf"^\s*[A-Za-z0-9_./-]+\s*({_OPS})\s*[^\s<>=].*$",
    "description": "Older free-text form 'name op value', e.g. 'mfu >= 0.30' or "
    "'first_step_time <= 30s' (read as first_step_time_s <= 30).",
}
_FREE_TEXT_FIX = ('write it as "name op value", e.g. "mfu >= 0.30", or use '
                  "observability.required_keys / stability.no_nan")
MetricName = Annotated[str, Field(pattern=NAME_PATTERN)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Criterion(_Model):
    """One threshold on one named number: ``acc >= 0.9``."""

    name: MetricName = Field(description="Metric key (as printed by the eval or training "
                             "output, or one of train_time_s / first_step_time_s).")
    op: Op = Field(description="Comparison the value must satisfy against threshold.")
    threshold: float = Field(allow_inf_nan=False, description="Finite number to compare with.")

    @model_validator(mode="before")
    @classmethod
    def _older_forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            return parse_criterion_text(data)
        if isinstance(data, dict) and "direction" in data:
            if "op" in data:
                raise ValueError("give op only (direction is its older name), not both")
            data = {("op" if key == "direction" else key): value for key, value in data.items()}
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The object form, or the older ``"name op value"`` string (also accepted)."""
        return {"anyOf": [handler(core_schema), _FREE_TEXT_SCHEMA]}

    def met_by(self, value: float) -> bool:
        """Whether ``value`` satisfies the criterion (NaN never does)."""
        if math.isnan(value):
            return False
        if self.op == "==":
            return math.isclose(value, self.threshold, rel_tol=1e-9, abs_tol=1e-12)
        return {
            ">=": value >= self.threshold, "<=": value <= self.threshold,
            ">": value > self.threshold, "<": value < self.threshold,
        }[self.op]

    @property
    def direction(self) -> CriterionDirection:
        """Which way is better: maximize (>=, >), minimize (<=, <) or target (==)."""
        if self.op in (">=", ">"):
            return "maximize"
        return "target" if self.op == "==" else "minimize"

    def describe(self) -> str:
        """Human-readable form, e.g. ``acc >= 0.9``."""
        value = self.threshold
        shown = str(int(value)) if value.is_integer() else repr(value)
        return f"{self.name} {self.op} {shown}"


def parse_criterion_text(text: str) -> dict[str, Any]:
    """Read ``"name op value"`` into Criterion fields; durations become seconds.

    A duration given to a name ending in ``_time`` renames it ``<name>_s``; so does any value
    for the supervisor's own ``train_time`` / ``first_step_time`` (they are in seconds).

    Raises:
        ValueError: the text does not read ``name op value`` with a number or duration value.
    """
    match = FREE_TEXT.match(text)
    if match is None:
        raise ValueError(f'must read "name op value" (op one of >=, <=, >, <, ==), got '
                         f"{text!r}: {_FREE_TEXT_FIX}")
    name, value = match["name"], match["value"]
    number = _number(value)
    if number is None:
        number = _seconds(value)
        if number is None:
            raise ValueError(f"the value of {text!r} must be a number or a duration such as "
                             f"'30s', '2min', '1h', '500ms', got {value!r}")
        if name.endswith("_time"):
            name = f"{name}_s"
    if f"{name}_s" in SUPERVISOR_MEASURED:
        name = f"{name}_s"
    return {"name": name, "op": match["op"], "threshold": number}


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _seconds(text: str) -> float | None:
    match = _DURATION_VALUE.match(text)
    if match is None:
        return None
    if match["unit"] == "ms":
        return float(parse_duration(f"{match['number']}s")) / 1000
    return float(parse_duration(f"{match['number']}{match['unit']}"))


def _refuse_free_text(data: Any, field: str, shape: str) -> Any:
    if isinstance(data, str | list):
        raise ValueError(f"{field} takes the typed form {shape}, got free text {data!r}")
    return data


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"forbid_patterns entries must be valid Python regular expressions, "
                         f"got {pattern!r} ({exc}): escape special characters such as ( [ * "
                         "with a backslash") from None
    return pattern


def _not_blank(command: str) -> str:
    if not command.strip():
        raise ValueError("command must not be empty: give the shell command whose exit 0 = pass")
    return command


class Observability(_Model):
    """Keys every per-step line of the training output must carry."""

    required_keys: list[MetricName] = Field(
        default_factory=list, description="Keys present in the per-step training lines.")

    @model_validator(mode="before")
    @classmethod
    def _typed_only(cls, data: Any) -> Any:
        return _refuse_free_text(data, "observability", "{required_keys: [loss, grad_norm]}")


class Stability(_Model):
    """What must never appear in the training output."""

    no_nan: bool = Field(default=True, description="No NaN / Inf values in the training log.")
    forbid_patterns: list[Annotated[str, AfterValidator(_compiles)]] = Field(
        default_factory=list, description="Python regexes that must match no training-output "
        "line, e.g. 'UserWarning: .*autograd'.")

    @model_validator(mode="before")
    @classmethod
    def _typed_only(cls, data: Any) -> Any:
        return _refuse_free_text(
            data, "stability", "{no_nan: true, forbid_patterns: ['UserWarning: .*autograd']}")


class CustomCheck(_Model):
    """A command that judges one criterion: exit status 0 = pass."""

    name: MetricName = Field(description="Short unique name, e.g. hf_loadable.")
    command: Annotated[str, AfterValidator(_not_blank)] = Field(
        description="Shell command; exit 0 = pass.")
    timeout: PositiveDuration | None = Field(
        default=None, description="Seconds (or '2min') before the check is killed and fails.")

    @model_validator(mode="before")
    @classmethod
    def _typed_only(cls, data: Any) -> Any:
        return _refuse_free_text(
            data, "each custom entry", "{name: hf_loadable, command: 'python check_hf.py'}")


class ReviewCriteria(_Model):
    """The compound criteria a round is reviewed against (every dimension optional)."""

    metrics: list[Criterion] = Field(
        default_factory=list, description="Thresholds on numbers printed by the eval command.")
    performance: list[Criterion] = Field(
        default_factory=list, description="Thresholds on speed: train_time_s and "
        "first_step_time_s are measured by the supervisor, other names read from the "
        "training log.")
    observability: Observability | None = Field(
        default=None, description="Keys the per-step training lines must carry.")
    stability: Stability | None = Field(
        default=None, description="NaN / forbidden patterns in the training output.")
    custom: list[CustomCheck] = Field(
        default_factory=list, description="Commands judged by exit status (0 = pass).")

    @field_validator("metrics", "performance", "custom")
    @classmethod
    def _unique_names(cls, items: list[Any], info: ValidationInfo) -> list[Any]:
        names = [item.name for item in items]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{info.field_name} names must be unique, got "
                             f"{', '.join(repeated)} more than once: merge or rename them")
        return items

    @model_validator(mode="after")
    def _not_empty(self) -> ReviewCriteria:
        if not criteria_names(self):
            raise ValueError(
                "review_criteria has nothing to check: add at least one of metrics "
                "([{name: acc, op: '>=', threshold: 0.9}]), performance, "
                "observability.required_keys, stability (no_nan / forbid_patterns) or custom")
        return self


def criteria_names(criteria: ReviewCriteria) -> list[str]:
    """Every criterion that will be checked: ``metrics.acc``, ``performance.train_time_s``,
    ``observability``, ``stability``, ``custom.hf_loadable`` (empty dimensions left out)."""
    names = [f"metrics.{item.name}" for item in criteria.metrics]
    names += [f"performance.{item.name}" for item in criteria.performance]
    if criteria.observability is not None and criteria.observability.required_keys:
        names.append("observability")
    stability = criteria.stability
    if stability is not None and (stability.no_nan or stability.forbid_patterns):
        names.append("stability")
    names += [f"custom.{item.name}" for item in criteria.custom]
    return names
