"""The brainstorm brief: a YAML file of the design's answers (`spml design new --from`).

Its fields are the design doc's front matter (`spml schema design`), without ``context`` (the
stage collects that itself). A malformed brief is refused with one line per problem, each
naming the field and its line in the brief.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spml.errors import ProtocolError
from spml.protocols.design import DesignDoc
from spml.protocols.frontmatter import (
    FrontMatter,
    error_report,
    parse_yaml_fields,
    read_utf8,
    validation_rows,
)


def load_brief(path: Path, complete: bool = True) -> dict[str, Any]:
    """The brief's answers, validated as a design (``complete=False``: a revision brief, which
    may give only the fields that change; each must still be a known one).

    Raises:
        ProtocolError: the file is missing, its YAML is malformed, or a field is wrong.
    """
    if not path.is_file():
        raise ProtocolError(f"brief must be an existing YAML file, got {str(path)!r}.")
    text = read_utf8(path)
    data, lines = parse_yaml_fields(path.name, text, first_line=1, kind="")
    if "context" in data:
        raise ProtocolError(f"{path.name} (line {lines[('context',)]}): context is collected by "
                            "the brainstorm stage itself — remove it from the brief.")
    if not complete:
        unknown = sorted(set(data) - set(DesignDoc.model_fields))
        if unknown:
            line = lines[(unknown[0],)]
            raise ProtocolError(f"{path.name} (line {line}): {unknown[0]!r} is not a design "
                                "field — see `spml schema design`.")
        return data
    try:
        DesignDoc.model_validate(data)
    except ValidationError as exc:
        doc = FrontMatter(data=data, body="", lines=lines)
        raise ProtocolError(error_report(f"{path.name} is not a valid brief",
                                         validation_rows(exc, doc))) from None
    return data
