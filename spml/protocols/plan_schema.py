"""The plan's vocabulary and parsed structure (used by `spml.protocols.plan`).

The status and field labels a plan uses, the frozen dataclasses the parser builds (`Subtask`,
`RemovedSubtask`, `SubtaskLayout`), and the pydantic models of `plan_json_schema`
(`spml schema plan`). No text handling here: reading and writing a plan's lines lives in
`spml.protocols.plan_text`, the document and its edits in `spml.protocols.plan`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["todo", "done", "revised", "new"]
SubtaskLabel = Literal["Role", "Hypothesis", "Components", "Implementation", "Unit Tests",
                       "Integration Tests", "Validation Pyramid", "Evaluation Contract",
                       "Expected Conclusion"]
ConclusionLabel = Literal["Role", "Hypothesis", "Result", "Evidence", "Anomalies",
                          "Recommendation"]
SUBTASK_FIELDS: tuple[str, ...] = get_args(SubtaskLabel)
CONCLUSION_FIELDS: tuple[str, ...] = get_args(ConclusionLabel)
HEADER_FIELDS = ("Goal", "Experiment directory", "Hypothesis", "Validation scope",
                 "Evaluation design", "Architecture")
INTEGRATION_TAG = "[INTEGRATION]"
_INTEGRATION_TITLE = re.compile(r"\[INTEGRATION\]\s*$", re.I)
_BACKTICKED = re.compile(r"`([^`\s]+)`")
_PY_TARGET = re.compile(r"^[\w./-]+\.py(?:::\S+)?$")
Span = tuple[int, int]  # 0-based [start, end) line indices


@dataclass(frozen=True)
class SubtaskLayout:
    """Where a subtask's parts are (0-based line indices): what the edits rewrite."""

    heading: int
    body_end: int  # end of its own content: where its Conclusion starts, or its section ends
    end: int  # end of its section, Conclusion included
    field_spans: dict[str, Span]
    conclusion_heading: int | None = None
    conclusion_spans: dict[str, Span] = field(default_factory=dict)


@dataclass(frozen=True)
class Subtask:
    """One active subtask; `line` and `field_lines` are 1-based."""

    number: int
    title: str
    status: Status
    line: int
    fields: dict[str, str]
    field_lines: dict[str, int]
    conclusion: dict[str, str] | None = None
    conclusion_line: int | None = None
    layout: SubtaskLayout = field(default=SubtaskLayout(0, 0, 0, {}), repr=False, compare=False)

    @property
    def integration(self) -> bool:
        """Whether the title ends with `[INTEGRATION]`: the subtask assembling everything."""
        return bool(_INTEGRATION_TITLE.search(self.title))

    @property
    def tests(self) -> list[str]:
        """Pytest targets named in Unit Tests / Integration Tests, in order, each once.

        A target is a backticked `.py` path with an optional `::node`; a path with no node
        counts only when it names a test file (`test_*.py`, `*_test.py`, or under `tests/`),
        so a module mentioned in passing (`model.py`) is not run as a test.
        """
        text = "\n".join(self.fields.get(label, "") for label in
                         ("Unit Tests", "Integration Tests"))
        found = [t for t in _BACKTICKED.findall(text) if _PY_TARGET.match(t) and _is_test(t)]
        return list(dict.fromkeys(found))


@dataclass(frozen=True)
class RemovedSubtask:
    """A subtask dropped by a revision, kept as `## REMOVED: Subtask N: <title> — <reason>`."""

    number: int
    title: str
    reason: str
    line: int


def _is_test(target: str) -> bool:
    path = target.split("::", 1)[0]
    base = path.rsplit("/", 1)[-1]
    return ("::" in target or base.startswith("test_") or base.endswith("_test.py")
            or "tests" in path.split("/")[:-1])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanHeader(BaseModel):
    """The bold `**Label:** value` lines between the title and the first `##` heading."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    goal: str | None = Field(None, alias="Goal", description="What the experiment delivers.")
    experiment_directory: str | None = Field(None, alias="Experiment directory")
    hypothesis: str | None = Field(None, alias="Hypothesis",
                                   description="Doing X is expected to cause Y.")
    validation_scope: str | None = Field(None, alias="Validation scope",
                                         description="L0/L1, data flow, baselines.")
    evaluation_design: str | None = Field(
        None, alias="Evaluation design", description="Cadence (every N steps), scope, both "
        "entry modes, observability, failure handling; 'none' when out of scope.")
    architecture: str | None = Field(None, alias="Architecture", description="2-3 sentences.")


class SubtaskStructure(_Model):
    """An active subtask."""

    number: int = Field(ge=0)
    title: str = Field(description="Ends with ' [INTEGRATION]' for the integration subtask.")
    integration: bool
    status: Status = Field(description="todo '[ ]', done '[x]', revised '[ ] REVISED', "
                           "new '[ ] NEW'.")
    line: int = Field(ge=1, description="1-based line of the heading.")
    fields: dict[SubtaskLabel, str]
    conclusion: dict[ConclusionLabel, str] | None = Field(
        None, description="The fields of the `## Conclusion` right after the subtask.")


class RemovedStructure(_Model):
    """A `## REMOVED: Subtask N: <title> — <reason>` line."""

    number: int = Field(ge=0)
    title: str
    reason: str
    line: int = Field(ge=1)


class PlanStructure(_Model):
    """A plan as `spml.protocols.plan.parse_plan` reads it."""

    title: str = Field(description="The '# <title>' line.")
    header: PlanHeader
    scaffold: str = Field(description="The '## Shared Scaffold' section's text.")
    subtasks: list[SubtaskStructure]
    removed: list[RemovedStructure]


def plan_json_schema() -> dict[str, Any]:
    """JSON Schema of a parsed plan's structure (`spml schema plan`)."""
    schema = PlanStructure.model_json_schema(by_alias=True)
    schema["title"] = "spml plan (parsed structure of plans/YYYY-MM-DD-<name>.md)"
    return schema
