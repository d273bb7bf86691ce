"""The design doc: `plans/YYYY-MM-DD-<topic-slug>-design.md`, YAML front matter + free prose.

ml-brainstorming writes it; experiment-planning and the handoffs read it. `DesignDoc` validates
the front matter (pydantic v2, strict, unknown fields refused); the prose below it is the
person's and is kept byte for byte when the doc is rendered again. `check_design` adds the
rules of `spml design check` (placeholders, hypothesis form, evaluation shape, criteria the
evaluation measures) to the schema; `spml schema design` prints `design_json_schema()`.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spml.errors import ProtocolError
from spml.protocols.autoresearch import AutoresearchProtocol, Direction
from spml.protocols.frontmatter import (
    FENCE,
    FrontMatter,
    Loc,
    PositiveDuration,
    dump_front_matter,
    error_report,
    read_front_matter,
    validation_rows,
)
from spml.protocols.review_criteria import MetricName, ReviewCriteria

DESIGN_SUFFIX = "-design.md"
TaskType = Literal["recsys", "llm_pretrain", "llm_finetune", "cv", "rl", "regression", "other"]
Scale = Literal["cpu", "single_gpu", "multi_gpu", "multi_node"]
EntryMode = Literal["checkpoint", "in_memory"]
Text = Annotated[str, Field(min_length=1)]
Texts = Annotated[list[Text], Field(min_length=1)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
# The handoff fills train_command from the L1 run; until then the section is checked with this.
STAND_IN_TRAIN_COMMAND = "python train.py"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EvaluationDesign(_Section):
    """How the trained model is evaluated (`check_design` requires its shape when required)."""

    required: bool = Field(default=True, description="false: no evaluation is in scope (the "
                           "other fields may then be omitted).")
    metrics: list[MetricName] = Field(default_factory=list, description="Metric names the "
                                      "evaluation prints; the first is the primary metric.")
    direction: Direction | None = Field(default=None, description="Whether larger or smaller "
                                        "is better, of the primary metric.")
    cadence: str | None = Field(default=None, description="'every N steps' (final-epoch-only "
                                "evaluation is not acceptable).")
    scope: Text = Field(default="full validation", description="What is evaluated.")
    entry_modes: list[EntryMode] = Field(
        default_factory=lambda: ["checkpoint", "in_memory"],
        description="checkpoint (a saved model) and/or in_memory (called from training).")
    observability: str = Field(default="", description="What the evaluation prints: phase "
                               "messages, progress bar, result and efficiency summary.")
    failure_handling: str = Field(default="", description="What each entry mode does on "
                                  "failure (missing checkpoint, non-finite metric, ...).")


class Baselines(_Section):
    """Project baselines for L1; none given = anomaly detection only."""

    min_mfu: Positive | None = Field(default=None, description="Lowest acceptable MFU.")
    max_step_time_s: Positive | None = Field(default=None, description="Slowest acceptable "
                                             "step, in seconds.")
    min_throughput: Positive | None = Field(default=None, description="Lowest acceptable "
                                            "samples (or tokens) per second.")


class ValidationScope(_Section):
    """The validation pyramid decisions (L0 always runs; L1 as decided here)."""

    data_flow: Literal["real", "mock_overfit"] = Field(
        description="L1 data: real, or mock_overfit (a small repeated dataset).")
    training_volume: PositiveDuration = Field(
        default=300.0, description="L1 training time in seconds (or '5min').")
    visualization: Literal["none", "wandb", "tensorboard", "mlflow"] = Field(
        description="Logging tool L0 and L1 check.")
    baselines: Baselines = Field(default_factory=Baselines)
    extra_checks: list[Text] = Field(default_factory=list,
                                     description="Project-specific checks, in words.")


class DesignDoc(_Section):
    """The machine-readable part of a design doc."""

    schema_version: Literal[1] = Field(default=1, description="Design doc schema version.")
    topic: Text = Field(description="What the experiment is about; its slug names the file.")
    hypothesis: Text = Field(description="'Doing X is expected to cause Y'.")
    independent_variables: Texts = Field(description="What is changed.")
    dependent_variables: Texts = Field(description="What is measured (every evaluation "
                                       "metric is named here).")
    control_variables: Texts = Field(description="What stays fixed.")
    task_type: TaskType
    architecture: Text = Field(description="Model and data architecture, 2-3 sentences.")
    scale: Scale
    evaluation: EvaluationDesign
    validation_scope: ValidationScope
    review_criteria: ReviewCriteria
    autoresearch: dict[str, Any] | None = Field(
        default=None, description="Auto Research protocol fields (`spml schema autoresearch`)"
        "; train_command may be left out: the handoff fills it from the L1 run.")
    context: dict[str, Any] = Field(default_factory=dict, description="ML context collected "
                                    "by the brainstorm flow (git, versions, GPUs, datasets).")


def design_filename(topic: str, day: date) -> str:
    """``YYYY-MM-DD-<slug>-design.md``; the slug is ``[a-z0-9-]``, at most 60 characters cut at
    a word, and ``experiment`` for a topic without a latin letter or digit."""
    ascii_topic = unicodedata.normalize("NFKD", topic).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_topic.lower()).strip("-")
    if len(slug) > 60:
        slug = slug[:61].rsplit("-", 1)[0][:60].strip("-")
    return f"{day.isoformat()}-{slug or 'experiment'}{DESIGN_SUFFIX}"


def load_design(path: Path) -> DesignDoc:
    """Parse and validate a design doc: its schema, the autoresearch section's included.

    Raises:
        ProtocolError: the file is missing or malformed, or one line per schema problem.
    """
    doc, rows = _validate(read_front_matter(path))
    if doc is None or rows:
        raise ProtocolError(error_report(f"{path.name} is not a valid design doc", rows))
    return doc


def read_design(path: Path) -> tuple[DesignDoc, str]:
    """The validated front matter and the prose after it, exactly as written."""
    return load_design(path), _body(path)[0]


def render_design(doc: DesignDoc, body: str) -> str:
    """The design doc's text; `read_design` of it gives ``doc`` and ``body`` back."""
    front = dump_front_matter(doc.model_dump(mode="json", exclude_none=True))
    return f"{FENCE}\n{front}{FENCE}\n{body}"


def find_design(exp_dir: Path) -> Path | None:
    """The experiment's one ``plans/*-design.md``, None without one.

    Raises:
        ProtocolError: there are several, so which one holds is unclear.
    """
    plans = exp_dir / "plans"
    found = sorted(p for p in plans.glob(f"*{DESIGN_SUFFIX}") if p.is_file())
    if len(found) > 1:
        raise ProtocolError(f"{plans} holds {len(found)} design docs "
                            f"({', '.join(p.name for p in found)}) — keep the current one and "
                            "delete or rename the others")
    return found[0] if found else None


def check_design(path: Path) -> list[str]:
    """`spml design check`: one ``  - <field> (line N): <problem> — <fix>`` row per problem,
    empty = pass. The content rules run once the schema holds; placeholders always.

    Raises:
        ProtocolError: the file is missing or its front matter is malformed YAML.
    """
    front = read_front_matter(path)
    doc, rows = _validate(front)
    rows += _field_placeholder_rows(front.data, (), front)
    if doc is not None:
        rows += _hypothesis_rows(doc, front) + _evaluation_rows(doc.evaluation, front)
        rows += _criteria_rows(doc, front) + _dependent_rows(doc, front)
        rows += _autoresearch_agreement_rows(doc, front)
    return rows + _prose_rows(*_body(path))


def design_json_schema() -> dict[str, Any]:
    """JSON Schema of the design doc's front matter, its autoresearch section included."""
    schema = DesignDoc.model_json_schema()
    section = AutoresearchProtocol.model_json_schema()
    schema.setdefault("$defs", {}).update(section.pop("$defs", {}))
    section["required"] = [name for name in section["required"] if name != "train_command"]
    schema["$defs"]["AutoresearchSection"] = {**section, "title": "AutoresearchSection"}
    schema["properties"]["autoresearch"]["anyOf"] = [
        {"$ref": "#/$defs/AutoresearchSection"}, {"type": "null"}]
    schema["title"] = "spml design doc (YAML front matter)"
    return schema


def autoresearch_protocol_fields(doc: DesignDoc, train_command: str) -> dict[str, Any]:
    """The design's autoresearch section (a copy) with ``train_command``, the command the L1
    run used (it wins over one the design gives), in protocol field order.

    Raises:
        ProtocolError: the design has no autoresearch section, or it is not a valid protocol.
    """
    if doc.autoresearch is None:
        raise ProtocolError("the design doc has no autoresearch section — add one (research "
                            "question, fixed, variable, eval, researcher) or use ml-iteration")
    given = {**copy.deepcopy(doc.autoresearch), "train_command": train_command}
    rows = _autoresearch_rows(given, {})
    if rows:
        raise ProtocolError(error_report("the autoresearch section is not a valid protocol",
                                         rows))
    return {name: given[name] for name in AutoresearchProtocol.model_fields if name in given}


# --- schema ----------------------------------------------------------------------------------

def _validate(front: FrontMatter) -> tuple[DesignDoc | None, list[str]]:
    """The model (None when invalid) and the schema rows, autoresearch section included."""
    doc: DesignDoc | None = None
    rows: list[str] = []
    try:
        doc = DesignDoc.model_validate(front.data)
    except ValidationError as exc:
        rows = _with_fix(validation_rows(exc, front))
    section = front.data.get("autoresearch")
    if isinstance(section, dict):
        lines = {loc[1:]: line for loc, line in front.lines.items()
                 if loc[:1] == ("autoresearch",)}
        rows += _autoresearch_rows({"train_command": STAND_IN_TRAIN_COMMAND, **section}, lines)
    return doc, rows


def _autoresearch_rows(section: dict[str, Any], lines: dict[Loc, int]) -> list[str]:
    """Protocol schema rows of the section, named ``autoresearch.<field>``."""
    try:
        AutoresearchProtocol.model_validate(section)
    except ValidationError as exc:
        rows = _with_fix(validation_rows(exc, FrontMatter(section, "", lines)))
        return [_in_section(row) for row in rows]
    return []


def _in_section(row: str) -> str:
    """``  - fixed.files (line 9): ...`` -> ``  - autoresearch.fixed.files (line 9): ...``."""
    rest = row.removeprefix("  - ")
    if rest.startswith("(top level)"):
        return "  - autoresearch" + rest.removeprefix("(top level)")
    return f"  - autoresearch.{rest}"


def _with_fix(rows: list[str]) -> list[str]:
    """Schema rows whose message says what the value must be get that fix spelt out."""
    return [row if " — " in row else f"{row} — change the value to what it should be"
            for row in rows]


# --- content rules ---------------------------------------------------------------------------

_HYPOTHESIS = re.compile(r"doing\s+\S.*?\s+is\s+expected\s+to\s+\w+\s+\S.*", re.I | re.S)
_CADENCE = re.compile(r"every\s+([0-9]+)\s+steps?", re.I)
_EVALUATION_FIXES = {  # field a required evaluation must fill: its fix
    "metrics": "list the metrics the evaluation prints, the primary first (e.g. [val_mse])",
    "direction": "add direction: minimize or maximize (of the primary metric)",
    "entry_modes": "list checkpoint and/or in_memory (both, unless one cannot happen)",
    "observability": "describe what the evaluation prints (phases, progress, summary)",
    "failure_handling": "describe what each entry mode does when it fails"}


def _row(front: FrontMatter, loc: Loc, problem: str, fix: str) -> str:
    line = front.line_of(loc)
    where = f" (line {line})" if line is not None else ""
    return f"  - {'.'.join(str(part) for part in loc)}{where}: {problem} — {fix}"


def _hypothesis_rows(doc: DesignDoc, front: FrontMatter) -> list[str]:
    if _HYPOTHESIS.fullmatch(doc.hypothesis.strip()):
        return []
    return [_row(front, ("hypothesis",), 'must read "doing X is expected to cause Y", got '
                 f"{doc.hypothesis!r}", 'rewrite it as "Doing <the change> is expected to '
                 '<verb> <the effect on a dependent variable>"')]


def _evaluation_rows(evaluation: EvaluationDesign, front: FrontMatter) -> list[str]:
    if not evaluation.required:
        return []
    rows = [_row(front, ("evaluation", name), "is missing or empty although "
                 "evaluation.required is true", fix) for name, fix in _EVALUATION_FIXES.items()
            if not _filled(getattr(evaluation, name))]
    match = _CADENCE.fullmatch((evaluation.cadence or "").strip())
    if not match or int(match.group(1)) < 1:
        rows.append(_row(front, ("evaluation", "cadence"), 'must read "every N steps" (N >= 1)'
                         f", got {evaluation.cadence!r}", 'evaluate during training, e.g. '
                         '"every 200 steps" (final-epoch-only evaluation is not acceptable)'))
    return rows


def _filled(value: Any) -> bool:
    return bool(value.strip() if isinstance(value, str) else value)


def _criteria_rows(doc: DesignDoc, front: FrontMatter) -> list[str]:
    measured = doc.evaluation.metrics if doc.evaluation.required else []
    if doc.evaluation.required:
        problem, fix = (f"is not one of evaluation.metrics {measured}",
                        "add it to evaluation.metrics or name a metric the evaluation prints")
    else:
        problem, fix = ("is refused: evaluation.required is false, so no evaluation design "
                        "measures it", "design the evaluation or drop the criterion")
    return [_row(front, ("review_criteria", "metrics", index), f"{item.name!r} {problem}", fix)
            for index, item in enumerate(doc.review_criteria.metrics)
            if item.name not in measured]


def _dependent_rows(doc: DesignDoc, front: FrontMatter) -> list[str]:
    if not doc.evaluation.required:
        return []
    named = " ".join(doc.dependent_variables).lower()
    return [_row(front, ("dependent_variables",), f"does not name the evaluation metric "
                 f"{metric!r}", f"add {metric} (what the evaluation measures is the dependent "
                 "variable)") for metric in doc.evaluation.metrics if metric.lower() not in named]


def _autoresearch_agreement_rows(doc: DesignDoc, front: FrontMatter) -> list[str]:
    try:
        protocol = AutoresearchProtocol.model_validate(
            {"train_command": STAND_IN_TRAIN_COMMAND, **(doc.autoresearch or {})})
    except ValidationError:
        return []  # absent, or its schema rows say what to fix first
    evaluation, rows, at = doc.evaluation, [], ("autoresearch", "eval")
    measured = evaluation.metrics if evaluation.required else []
    if protocol.eval.metric not in measured:
        rows.append(_row(front, (*at, "metric"), f"{protocol.eval.metric!r} is not one of "
                         f"evaluation.metrics {measured}", "optimise a metric the evaluation "
                         "design measures, or add it to evaluation.metrics"))
    if evaluation.direction is not None and protocol.eval.direction != evaluation.direction:
        rows.append(_row(front, (*at, "direction"), f"{protocol.eval.direction!r} differs from "
                         f"evaluation.direction {evaluation.direction!r}", "make them agree"))
    return rows


# --- placeholders ----------------------------------------------------------------------------

_PLACEHOLDER_WORD = re.compile(r"\b(?:TBD|TODO|FIXME)\b|\?\?\?")
_TEMPLATE = re.compile(r"<([A-Za-z][^<>\n]*)>")
_CODE_SPAN = re.compile(r"(`+).+?\1")
_HTML_TAGS = frozenset("a abbr b br code del details div em hr i img kbd li ol p pre s small "
                       "span strong sub summary sup table tbody td th thead tr u ul".split())
# Machine-collected facts (commit messages, device names), not decisions a person fills in.
_UNCHECKED_FIELDS = frozenset({"context"})


def _placeholders(text: str, in_code: bool = False) -> list[str]:
    """TBD/TODO/FIXME/??? anywhere; a ``<template>`` outside code, HTML tags and links."""
    found = [match.group(0) for match in _PLACEHOLDER_WORD.finditer(text)]
    if not in_code:
        found += [match.group(0) for match in _TEMPLATE.finditer(_CODE_SPAN.sub("", text))
                  if not ("://" in match.group(1) or "@" in match.group(1)
                          or match.group(1).split()[0].rstrip("/").lower() in _HTML_TAGS)]
    return found


def _placeholder_problem(found: list[str]) -> str:
    return f"holds the placeholder{'s' * (len(found) > 1)} {', '.join(map(repr, found))}"


def _field_placeholder_rows(value: Any, loc: Loc, front: FrontMatter) -> list[str]:
    if isinstance(value, str):
        found = _placeholders(value)
        fix = "replace it with the decided value"
        return [_row(front, loc, _placeholder_problem(found), fix)] if found else []
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    return [row for key, item in items if (*loc, key)[0] not in _UNCHECKED_FIELDS
            for row in _field_placeholder_rows(item, (*loc, key), front)]


def _prose_rows(body: str, first_line: int) -> list[str]:
    """Placeholders in the prose, by line (``<...>`` in code blocks and spans is syntax)."""
    rows, fenced = [], False
    for number, line in enumerate(body.splitlines(), start=first_line):
        fenced ^= line.lstrip().startswith(("```", "~~~"))
        found = _placeholders(line, in_code=fenced)
        if found:
            rows.append(f"  - prose (line {number}): {_placeholder_problem(found)} — write the "
                        "decided content in its place")
    return rows


def _body(path: Path) -> tuple[str, int]:
    """The prose after the closing fence, verbatim, and its first line (the fences are found
    as `read_front_matter` finds them: call it first, for its errors)."""
    lines = path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    end = next(i for i in range(1, len(lines)) if lines[i].rstrip() == FENCE)
    return "".join(lines[end + 1:]), end + 2
