"""Markdown files whose YAML front matter holds the machine-readable fields.

A protocol file looks like::

    ---
    research_question: ...
    max_rounds: 10
    ---
    Free prose for the researcher.

`read_front_matter` returns the parsed mapping, the prose body, and a map from each field path
(``("fixed", "time_limit")``) to its 1-based line in the file, so validation errors can say
exactly where the bad field is.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, WithJsonSchema

from spml.errors import ProtocolError

FENCE = "---"
Loc = tuple[str | int, ...]
# YAML 1.1 (PyYAML) reads `1e-4` as a string: a float needs a dot (`1.0e-4`). Protocols are
# strict, so `low: 1e-4` would be refused; read exponent floats the YAML 1.2 way instead.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_UNION_TAG_FIELDS = ("kind", "type")


class FrontMatterLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also reads exponent floats without a dot (``1e-4``)."""


class FrontMatterDumper(yaml.SafeDumper):
    """`yaml.SafeDumper` that quotes strings `FrontMatterLoader` would read as floats."""


for _cls in (FrontMatterLoader, FrontMatterDumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT,
                               list("-+0123456789"))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(value: Any) -> Any:
    """Accept seconds as a number or a string such as ``"90s"``, ``"5min"``, ``"1h"``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("must be seconds (a number) or a duration like '90s', '5min', '1h'")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


# The longest duration a protocol may give. Beyond it a limit no longer limits anything, and
# `1e400` (read as infinity) or `1e300` would disable the kill or overflow a timer.
MAX_DURATION_S = 30 * 24 * 3600.0


def bounded_duration(value: Any) -> Any:
    """`parse_duration`, refusing infinity and anything longer than 30 days."""
    seconds = parse_duration(value)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return seconds  # the type check names it
    if math.isnan(seconds):
        raise ValueError(f"must be a duration, got {value!r} (not a number); write seconds "
                         "(3600) or a duration ('1h')")
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, got {value!r} (a number too large for a "
                         "float reads as infinity); write seconds (3600) or a duration ('1h')")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"must be at most 30 days ({MAX_DURATION_S:.0f} s), got {value!r}; "
                         "write seconds (3600) or a duration ('1h')")
    return seconds


# Seconds > 0 (at most 30 days), written as a number or a duration string; the JSON Schema
# allows both forms.
PositiveDuration = Annotated[
    float,
    Field(gt=0),
    BeforeValidator(bounded_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0,
                               "maximum": MAX_DURATION_S},
                              {"type": "string", "pattern": _DURATION.pattern}]}),
]


def dump_front_matter(data: dict[str, Any]) -> str:
    """YAML text for ``data`` that `read_front_matter` reads back unchanged."""
    return yaml.dump(data, Dumper=FrontMatterDumper, sort_keys=False, allow_unicode=True)


@dataclass(frozen=True)
class FrontMatter:
    """The parsed parts of a front-matter document."""

    data: dict[str, Any]
    body: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """Line of the deepest known prefix of ``loc`` (a missing field maps to its parent;
        a missing top-level field to line 1, where the front matter opens)."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None


def read_front_matter(path: Path) -> FrontMatter:
    """Read ``path`` and split it into front matter and body.

    Raises:
        ProtocolError: the file is missing, has no ``---`` fence, or its YAML is malformed.
    """
    if not path.is_file():
        raise ProtocolError(f"{path.name}: the file must exist, got {str(path)!r}. Create it "
                            "first.")
    text = read_utf8(path)
    lines = text.splitlines()
    if not lines or lines[0].strip() != FENCE:
        raise ProtocolError(
            f"{path.name} must start with a '---' line opening its YAML front matter "
            f"(line 1). Put the protocol fields between two '---' lines at the top."
        )
    try:
        # Only a '---' at column 0 closes the front matter (YAML itself treats one there as a
        # document marker); an indented one is content of a multi-line string.
        end = next(i for i in range(1, len(lines)) if lines[i].rstrip() == FENCE)
    except StopIteration:
        raise ProtocolError(
            f"{path.name} must close its front matter with a second '---' line. "
            "Add it after the last field."
        ) from None
    yaml_text = "\n".join(lines[1:end])
    data, field_lines = parse_yaml_fields(path.name, yaml_text, first_line=2)
    field_lines[()] = 1
    body = "\n".join(lines[end + 1 :]).strip("\n")
    return FrontMatter(data=data, body=body, lines=field_lines)


def read_utf8(path: Path) -> str:
    """``path``'s text (an editor's byte-order mark is not content).

    Raises:
        ProtocolError: the file is not UTF-8 (naming the byte).
    """
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{path.name}: not UTF-8 text (byte {exc.start}: "
                            f"{exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8."
                            ) from None


def parse_yaml_fields(name: str, text: str, first_line: int,
                      kind: str = "front matter") -> tuple[dict[str, Any], dict[Loc, int]]:
    """Parse a YAML mapping and the line of every field (``first_line`` = its first line).

    ``kind`` names the text in errors ("front matter"; "" for a whole YAML file).
    """
    try:
        node = yaml.compose(text, Loader=FrontMatterLoader)
        data = yaml.load(text, Loader=FrontMatterLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + first_line}" if mark is not None else "front matter"
        problem = getattr(exc, "problem", None) or str(exc)
        # The problem is often found a line after its cause (an unclosed bracket or quote):
        # name the line where the construct being parsed began as well.
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start is not None and (mark is None or start.line != mark.line):
            problem = f"{problem} ({context} that begins on line {start.line + first_line})"
        raise ProtocolError(
            f"{name} ({where}): the YAML{' ' + kind if kind else ''} is malformed: {problem}."
        ) from None
    if data is None:
        data = {}
    _refuse_aliases_and_repeats(name, node, first_line)
    if not isinstance(data, dict):
        subject = f"the {kind} must" if kind else "must"
        raise ProtocolError(f"{name} (line {first_line}): {subject} be a mapping of fields "
                            f"(`name: value` lines), got {type(data).__name__}.")
    field_lines: dict[Loc, int] = {}
    _collect_lines(node, (), first_line, field_lines)
    return data, field_lines


def _refuse_aliases_and_repeats(name: str, root: yaml.Node | None, first_line: int) -> None:
    """No YAML alias (``*x`` makes an exponentially large document from a few lines, and no
    spml document needs one) and no key given twice in one mapping (YAML keeps the last one
    silently, so the first is lost without a word)."""
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:  # a node met twice is an alias of an anchored one
            raise ProtocolError(f"{name} (line {node.start_mark.line + first_line}): YAML "
                                "aliases (*name) are not supported; write the value out.")
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, int] = {}
            for key, value in node.value:
                line = key.start_mark.line + first_line
                if isinstance(key, yaml.ScalarNode) and key.value in keys:
                    raise ProtocolError(f"{name} (line {line}): {key.value!r} is given twice "
                                        f"(first on line {keys[key.value]}); keep one.")
                keys[getattr(key, "value", "")] = line
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _collect_lines(node: yaml.Node | None, loc: Loc, offset: int, out: dict[Loc, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*loc, key)] = key_node.start_mark.line + offset
            _collect_lines(value_node, (*loc, key), offset, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[(*loc, index)] = item.start_mark.line + offset
            _collect_lines(item, (*loc, index), offset, out)


ModelT = TypeVar("ModelT", bound=BaseModel)


def load_model(path: Path, model: type[ModelT]) -> ModelT:
    """Read ``path``'s front matter and validate it as ``model``.

    Raises:
        ProtocolError: one line per problem, naming the field, its line, and the fix.
    """
    doc = read_front_matter(path)
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        raise ProtocolError(format_validation_error(path.name, exc, doc)) from None


def changed_fields(old: BaseModel, new: BaseModel, dotted_names: tuple[str, ...]) -> list[str]:
    """The dotted field names (``researcher.kind``) whose values differ between two models."""
    return [name for name in dotted_names if _get(old, name) != _get(new, name)]


def _get(model: BaseModel, dotted: str) -> Any:
    value: Any = model
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def format_validation_error(name: str, exc: ValidationError, doc: FrontMatter) -> str:
    """The first problem on the first line; with several, one line each below it."""
    return error_report(f"{name} is not a valid protocol", validation_rows(exc, doc))


def error_report(title: str, rows: list[str]) -> str:
    """``title: <first problem>`` first (what a terminal or a log line shows first), then,
    when there are several, every problem on a line of its own."""
    first = rows[0].removeprefix("  - ")
    if len(rows) == 1:
        return f"{title}: {first}"
    return "\n".join([f"{title} ({len(rows)} problems; all below): {first}", *rows])


def validation_rows(exc: ValidationError, doc: FrontMatter) -> list[str]:
    """One line per error: ``  - <field path> (line N): <message>``."""
    errors = exc.errors(include_url=False)
    missing = {tuple(e["loc"]) for e in errors if e["type"] == "missing"}
    # A misspelt field (`max_round`) is one problem, not two: its "did you mean" row stands
    # for the missing field it was meant to be, and comes first.
    meant = {loc: close for e in errors if e["type"] == "extra_forbidden"
             and (close := _closest(loc := tuple(e["loc"]), missing))}
    covered = {loc[:-1] + (close,) for loc, close in meant.items()}
    errors = sorted((e for e in errors if tuple(e["loc"]) not in covered),
                    key=lambda e: tuple(e["loc"]) not in meant)
    rows = []
    for err in errors:
        loc = _document_path(tuple(err["loc"]), doc, err["type"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        line = doc.line_of(loc)
        where = f" (line {line})" if line is not None else ""
        rows.append(f"  - {dotted}{where}: {_message(err)}"
                    f"{_hint(err, meant.get(tuple(err['loc'])))}")
    return rows


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "union_tag_invalid":  # `kind: claude`: say which kinds there are
        ctx = err.get("ctx", {})
        return (f"must be one of {ctx.get('expected_tags', '?')}, got "
                f"{ctx.get('tag', err.get('input'))!r}")
    return err["msg"]


def _document_path(loc: Loc, doc: FrontMatter, err_type: str) -> Loc:
    """Map pydantic's error location onto the document's field path.

    Pydantic adds the tag of a union member to the location: the `kind`/`type` value of a
    discriminated union (`researcher.optuna.space`, `space.lr.float`) or the member type of a
    plain union (`choices.0.str`). Those parts are not fields of the document and are dropped.
    A part the document lacks is kept only as the last part of a `missing` error.
    """
    kept: Loc = ()
    node: Any = doc.data
    tag_seen = False
    for index, part in enumerate(loc):
        if not tag_seen and _is_union_tag(node, part):
            tag_seen = True
            continue
        if _has_part(node, part):
            kept, node, tag_seen = (*kept, part), node[part], False
        elif index == len(loc) - 1 and err_type == "missing":
            kept = (*kept, part)
    return kept


def _is_union_tag(node: Any, part: str | int) -> bool:
    return isinstance(node, dict) and isinstance(part, str) and any(
        node.get(name) == part for name in _UNION_TAG_FIELDS)


def _has_part(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _closest(loc: Loc, missing: set[Loc]) -> str | None:
    """The missing sibling field an unknown field ``loc`` most likely misspells."""
    siblings = [str(m[-1]) for m in missing if m[:-1] == loc[:-1]]
    close = difflib.get_close_matches(str(loc[-1]), siblings, n=1, cutoff=0.6)
    return close[0] if close else None


def _hint(err: dict[str, Any], meant: str | None = None) -> str:
    """How to fix it; ``meant``: the field an unknown one most likely misspells."""
    if err["type"] == "extra_forbidden":
        return f" — did you mean {meant!r}?" if meant else " — remove it or check its spelling"
    if err["type"] == "union_tag_invalid":
        return ""
    if err["type"] == "missing":
        return " — add this field"
    if isinstance(err.get("input"), dict) or "got " in err["msg"]:
        return ""  # a mapping is too long to echo; a validator message already shows the value
    return f", got {err['input']!r}"
