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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from spml.errors import ProtocolError

FENCE = "---"
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class FrontMatter:
    """The parsed parts of a front-matter document."""

    data: dict[str, Any]
    body: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """Line of the deepest known prefix of ``loc`` (a missing field maps to its parent)."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None


def read_front_matter(path: Path) -> FrontMatter:
    """Read ``path`` and split it into front matter and body.

    Raises:
        ProtocolError: the file is missing, has no ``---`` fence, or its YAML is malformed.
    """
    if not path.is_file():
        raise ProtocolError(f"protocol file must exist, got {str(path)!r}. Create it first.")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if not lines or lines[0].strip() != FENCE:
        raise ProtocolError(
            f"{path.name} must start with a '---' line opening its YAML front matter "
            f"(line 1). Put the protocol fields between two '---' lines at the top."
        )
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == FENCE)
    except StopIteration:
        raise ProtocolError(
            f"{path.name} must close its front matter with a second '---' line. "
            "Add it after the last field."
        ) from None
    yaml_text = "\n".join(lines[1:end])
    data, field_lines = _parse_yaml(path.name, yaml_text, first_line=2)
    body = "\n".join(lines[end + 1 :]).strip("\n")
    return FrontMatter(data=data, body=body, lines=field_lines)


def _parse_yaml(name: str, text: str, first_line: int) -> tuple[dict[str, Any], dict[Loc, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + first_line}" if mark is not None else "front matter"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProtocolError(
            f"{name} ({where}): the YAML front matter is malformed: {problem}."
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(f"{name}: the front matter must be a mapping of fields, got "
                            f"{type(data).__name__}.")
    field_lines: dict[Loc, int] = {}
    _collect_lines(node, (), first_line, field_lines)
    return data, field_lines


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


def format_validation_error(name: str, exc: ValidationError, doc: FrontMatter) -> str:
    """One line per error: ``- <field path> (line N): <message>``."""
    rows = [f"{name} is not a valid protocol ({exc.error_count()} error(s)):"]
    for err in exc.errors(include_url=False):
        loc = _document_path(tuple(err["loc"]), doc)
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        line = doc.line_of(loc)
        where = f" (line {line})" if line is not None else ""
        rows.append(f"  - {dotted}{where}: {err['msg']}{_hint(err)}")
    return "\n".join(rows)


def _document_path(loc: Loc, doc: FrontMatter) -> Loc:
    """Drop the parts pydantic adds for unions (a tag such as 'optuna' or 'float').

    A part is kept when the document has it, or when it is the last part (a missing field).
    """
    kept: Loc = ()
    for index, part in enumerate(loc):
        if (*kept, part) in doc.lines or index == len(loc) - 1:
            kept = (*kept, part)
    return kept


def _hint(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return " — remove it or check its spelling"
    if err["type"] == "missing":
        return " — add this field"
    return f", got {err['input']!r}" if not isinstance(err.get("input"), dict) else ""
