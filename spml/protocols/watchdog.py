"""Watchdog settings: what the watchdog launches, watches and tolerates for one long run.

The settings come from three layers, later ones winning field by field:

1. the YAML front matter of ``<exp>/experiment-context.md`` (the file may have none),
2. ``<exp>/watchdog.yaml`` (a plain YAML mapping of the same fields),
3. command-line overrides (only values that are not ``None``).

`load_watchdog_settings` merges them and validates the result with `WatchdogSettings` (pydantic
v2, strict, unknown fields refused). Every error names the field, the file and line (or the
command-line flag) that supplied it, and for a missing field the ways to set it.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from spml.errors import ProtocolError
from spml.protocols.frontmatter import (
    FENCE,
    MAX_DURATION_S,
    FrontMatter,
    Loc,
    PositiveDuration,
    bounded_duration,
    error_report,
    parse_yaml_fields,
    read_front_matter,
    validation_rows,
)

CONTEXT_FILENAME = "experiment-context.md"
SETTINGS_FILENAME = "watchdog.yaml"
EVAL_PLACEHOLDERS = ("checkpoint",)

# Seconds >= 0 (at most 30 days), as a number or a duration string (``"30s"``); 0 means "at
# once"; infinity is refused (it would disable what the duration limits).
NonNegativeDuration = Annotated[
    float,
    Field(ge=0),
    BeforeValidator(bounded_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_DURATION_S},
                              {"type": "string"}]}),
]


def _relative(value: str) -> str:
    path = PurePosixPath(value)
    if not value.strip() or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"must be a path relative to the experiment directory, got {value!r}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class BaselineSpec(_Section):
    """Reference values of a healthy run (from VP L1); deviations raise report-only alerts."""

    loss: float | None = Field(default=None, allow_inf_nan=False, description="Initial loss.")
    grad_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                    description="Typical gradient norm.")
    throughput: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                     description="Samples or tokens per second.")
    mfu: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False,
                              description="Model FLOPs utilisation as a fraction (0.42, not 42).")


class WatchdogSettings(_Section):
    """Everything the watchdog needs to keep one training run alive."""

    train_command: str = Field(min_length=1, description="Training command, run verbatim; "
                               "it must resume from its newest checkpoint by itself.")
    checkpoint_glob: str = Field(description="Glob of checkpoint files, relative to the "
                                 "experiment directory (e.g. 'ckpt/step_*.pt').")
    log_file: str = Field(description="Training log, relative to the experiment directory.")
    eval_command: str | None = Field(default=None, min_length=1, description="Evaluation "
                                     "of a new checkpoint; '{checkpoint}' is its path.")
    checkpoint_check: str | None = Field(
        default=None, min_length=1, description="Completeness check of a checkpoint before a "
        "restart resumes from it ('{checkpoint}' is its path; exit 0 = complete); replaces "
        "the built-in verification.")
    checkpoint_check_timeout: PositiveDuration = Field(
        default=300, description="Time limit of one checkpoint_check run; over it = not "
        "complete.")
    checkpoint_interval: int | None = Field(
        default=None, ge=1, description="Steps between checkpoints, if known: a glob that "
        "still matches nothing after this many steps is warned about.")
    hang_timeout: PositiveDuration = Field(default=600, description="Seconds without a new "
                                           "log line before a live run counts as hung.")
    startup_grace: NonNegativeDuration = Field(default=900, description="Seconds after a "
                                               "launch during which silence is never a hang "
                                               "(0 = no grace).")
    restart_delay: NonNegativeDuration = Field(default=30, description="Base of the "
                                               "exponential restart backoff (0 = at once).")
    restart_cap: PositiveDuration = Field(default=600, description="Longest restart delay.")
    max_restarts: int | None = Field(default=None, ge=0, description="Environment restarts "
                                     "per run; null/omitted = no limit, 0 = never restart.")
    max_restarts_per_hour: int | None = Field(
        default=None, ge=0, description="Environment restarts in any 60-minute window; "
        "null/omitted = no limit (a progressing run is never given up).")
    max_no_progress: int | None = Field(
        default=10, ge=1, description="Backstop: this many failed attempts in a row that "
        "neither logged a step past the furthest reached before nor left a newer checkpoint "
        "(and did not run healthily for 30 min), whatever their causes, stop the run; "
        "null = off. The same failure at the same step without progress twice always stops "
        "it.")
    poll_interval: PositiveDuration = Field(
        default=1, description="Seconds between checks; a hang is killed within "
        "hang_timeout + about one poll interval.")
    checkpoint_stable: PositiveDuration = Field(default=5, description="Seconds a checkpoint's "
                                                "size and mtime must stay unchanged, while "
                                                "training runs, before it is evaluated.")
    total_steps: int | None = Field(default=None, ge=1, description="Planned steps "
                                    "(progress, plateau window).")
    baseline: BaselineSpec | None = Field(default=None, description="Healthy-run reference.")

    _paths = field_validator("checkpoint_glob", "log_file")(_relative)

    @field_validator("eval_command", "checkpoint_check")
    @classmethod
    def _known_placeholders(cls, command: str | None) -> str | None:
        if command is None:
            return None
        try:
            names = {field for _, field, _, _ in string.Formatter().parse(command)}
            unknown = sorted(f"{{{n}}}" for n in names - {None, *EVAL_PLACEHOLDERS})
            problem = f"unknown placeholder(s) {', '.join(unknown)}" if unknown else ""
        except ValueError as exc:
            problem = str(exc)
        if problem:
            raise ValueError("may only use the placeholder {checkpoint} (write {{ and }} for "
                             f"literal braces); problem: {problem}")
        return command


@dataclass(frozen=True)
class _Source:
    """One settings layer: a file (with field lines) or the command line (``doc is None``)."""

    name: str
    data: dict[str, Any]
    doc: FrontMatter | None = None

    @property
    def is_command_line(self) -> bool:
        """Whether the values came from command-line flags (no file, no lines)."""
        return self.doc is None


def load_watchdog_settings(exp_dir: Path, overrides: dict[str, Any]) -> WatchdogSettings:
    """Merge the settings layers of ``exp_dir`` with ``overrides`` and validate them.

    Args:
        exp_dir: The experiment directory (holds the context file and ``watchdog.yaml``).
        overrides: Field values from the command line; ``None`` values are ignored.

    Raises:
        ProtocolError: a file is malformed, or fields are missing or invalid (one line each,
            naming the field and its file and line, or its command-line flag).
    """
    if not exp_dir.is_dir():
        raise ProtocolError(f"experiment directory must exist, got {str(exp_dir)!r}.")
    sources = [s for s in (_context_source(exp_dir / CONTEXT_FILENAME),
                           _yaml_source(exp_dir / SETTINGS_FILENAME)) if s is not None]
    sources.append(_Source("command line", _drop_none(overrides)))
    merged: dict[str, Any] = {}
    origin: dict[Loc, _Source] = {}
    for source in sources:
        _merge(merged, source.data, source, (), origin)
    try:
        return WatchdogSettings.model_validate(merged)
    except ValidationError as exc:
        raise ProtocolError(_describe(exc, origin)) from None


def _context_source(path: Path) -> _Source | None:
    if not path.is_file():
        return None
    first = path.read_text(encoding="utf-8-sig").split("\n", 1)[0]
    if first.strip() != FENCE:
        return None  # a context file without front matter holds no settings
    doc = read_front_matter(path)
    return _Source(path.name, doc.data, doc)


def _yaml_source(path: Path) -> _Source | None:
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8-sig")
    data, lines = parse_yaml_fields(path.name, text, first_line=1, kind="")
    lines[()] = 1
    return _Source(path.name, data, FrontMatter(data=data, body="", lines=lines))


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: (_drop_none(value) if isinstance(value, dict) else value)
            for key, value in values.items() if value is not None}


def _merge(into: dict[str, Any], data: dict[str, Any], source: _Source, loc: Loc,
           origin: dict[Loc, _Source]) -> None:
    """Copy ``data`` over ``into``; nested mappings merge key by key. Records each origin."""
    for key, value in data.items():
        here = (*loc, key)
        origin[here] = source
        if isinstance(value, dict):
            if not isinstance(into.get(key), dict):
                into[key] = {}
            _merge(into[key], value, source, here, origin)
        else:
            into[key] = value


def _describe(exc: ValidationError, origin: dict[Loc, _Source]) -> str:
    """One line per error, naming the field and the file+line or flag that set it."""
    errors = exc.errors(include_url=False)
    rows: list[str] = []
    groups: dict[str, tuple[_Source, list[dict[str, Any]]]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "missing" and len(loc) == 1:
            rows.append(_missing_row(str(loc[0])))
            continue
        source = _source_of(loc, origin)
        groups.setdefault(source.name, (source, []))[1].append(err)
    for source, errs in groups.values():
        rows.extend(_source_rows(source, exc.title, errs))
    return error_report("watchdog settings are not valid", rows)


def _source_of(loc: Loc, origin: dict[Loc, _Source]) -> _Source:
    for end in range(len(loc), 0, -1):
        if loc[:end] in origin:
            return origin[loc[:end]]
    return _Source("the merged settings", {}, FrontMatter(data={}, body=""))


def _missing_row(name: str) -> str:
    flag = "--" + name.replace("_", "-")
    return (f"  - {name}: missing — add it to {SETTINGS_FILENAME} (or the front matter of "
            f"{CONTEXT_FILENAME}) or pass {flag}")


_ROW = re.compile(r"^  - (?P<field>\S+)(?: \(line (?P<line>\d+)\))?: ")


def _source_rows(source: _Source, title: str, errs: list[dict[str, Any]]) -> list[str]:
    """Rows of `format_validation_error` for one source, each naming that source."""
    details: list[Any] = [{k: v for k, v in e.items() if k in ("type", "loc", "input", "ctx")}
                          for e in errs]
    sub = ValidationError.from_exception_data(title, details)
    doc = source.doc or FrontMatter(data=source.data, body="")
    found = validation_rows(sub, doc)

    def where(match: re.Match[str]) -> str:
        field, line = match.group("field"), match.group("line")
        if source.is_command_line:
            place = "--" + field.replace(".", "-").replace("_", "-")
        else:
            place = f"{source.name} line {line}" if line else source.name
        return f"  - {field} ({place}): "

    return [_ROW.sub(where, row) for row in found]
