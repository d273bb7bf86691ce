"""The brainstorm stage's writing: answers + collected context -> the design doc (SPML §1.6).

A new design goes to ``plans/YYYY-MM-DD-<topic>-design.md``. When the experiment already has
one, the stage runs in revision mode: the answers are laid over the design's current fields
(fields the answers do not give are kept), the changed fields are written into the same file
(its prose and line endings kept) and a dated line in ``## Impact on Plan`` lists them, so
`plan` knows what to revise; SPML never allows a second design. Nothing is written that fails
`design check`: the candidate text is checked first, and a failure leaves the file as it was.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from spml.errors import ProtocolError
from spml.protocols.design import (
    DesignDoc,
    check_design,
    design_filename,
    find_design,
    read_design,
    render_design,
)
from spml.protocols.frontmatter import error_report
from spml.toolkit.files import write_atomic

PLANS_DIR = "plans"
IMPACT = "## Impact on Plan"
Merge = Literal["fields", "deep"]  # a brief replaces whole fields; typed answers nested values


@dataclass(frozen=True)
class DesignWritten:
    """What the stage wrote: the file, and for a revision the fields that changed."""

    path: Path
    revised: bool
    changed: list[str]


def validate_answers(answers: dict[str, Any], source: str) -> DesignDoc:
    """The answers as a design (one line per problem, naming the field, on failure)."""
    try:
        return DesignDoc.model_validate(answers)
    except ValidationError as exc:
        rows = [f"  - {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
                for err in exc.errors(include_url=False)]
        raise ProtocolError(error_report(f"{source} is not a valid design brief", rows)) from None


def write_design(exp_dir: Path, answers: dict[str, Any], context: dict[str, Any],
                 day: date, source: str = "the brief", merge: Merge = "fields"
                 ) -> DesignWritten:
    """Write a new design, or revise the existing one in place (module doc)."""
    existing = find_design(exp_dir)
    if existing is None:
        design = validate_answers({**answers, "context": context}, source)
        path = exp_dir / PLANS_DIR / design_filename(design.topic, day)
        write_checked(path, render_design(design, _new_body(design)))
        return DesignWritten(path, False, [])
    old, body = read_design(existing)
    current = old.model_dump(mode="json", exclude_none=True)
    merged = (_deep_merge(current, answers) if merge == "deep" else {**current, **answers})
    design = validate_answers({**merged, "context": context}, source)
    changed = changed_fields(old, design)
    if changed:
        text = render_design(design, _with_impact(body, changed, day))
        write_checked(existing, _newlines_like(existing, text))
    return DesignWritten(existing, True, changed)


def write_checked(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` only if it passes `design check` (else ProtocolError with
    the rows; ``path`` is untouched)."""
    with tempfile.TemporaryDirectory(prefix="spml-design-") as scratch:
        candidate = Path(scratch) / path.name
        candidate.write_text(text, encoding="utf-8")
        rows = check_design(candidate)
    if rows:
        raise ProtocolError(error_report(f"{path.name} would fail its self-review (`spml "
                                         "design check`), so it was not written", rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def changed_fields(old: DesignDoc, new: DesignDoc) -> list[str]:
    """Top-level design fields whose values differ (the collected context does not count)."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return [name for name in after if name != "context" and before.get(name) != after[name]]


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        merged[key] = (_deep_merge(old, value) if isinstance(old, dict)
                       and isinstance(value, dict) else value)
    return merged


def _new_body(design: DesignDoc) -> str:
    lines = [f"# {design.topic}: design", "",
             "Written by `spml design new`; the front matter above is the design, this prose "
             "is yours to extend (background, approaches considered, decisions).", "",
             "## Approach", "", " ".join(design.architecture.split()), "",
             "## Validation", "",
             "L0 (SPML's static checks) and L1 (a limited runtime run) validate the assembled "
             "training script before any loop runs; the review criteria above judge it."]
    return "\n".join(lines) + "\n"


def _with_impact(body: str, changed: list[str], day: date) -> str:
    """``body`` with a dated line added to its Impact on Plan section (created at the end)."""
    entry = (f"- {day.isoformat()}: {', '.join(changed)} changed. `spml plan new` marks the "
             "subtasks these fields shape `[ ] REVISED`; a revised integration subtask runs L0 "
             "and L1 again.")
    lines = body.splitlines()
    if IMPACT not in lines:
        return "\n".join([*lines, *([""] if lines and lines[-1].strip() else []), IMPACT, "",
                          entry]) + "\n"
    start = lines.index(IMPACT)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    lines[end:end] = [entry]
    return "\n".join(lines) + "\n"


def _newlines_like(path: Path, text: str) -> str:
    """``text`` with the line endings ``path`` uses (a CRLF file stays CRLF)."""
    return text.replace("\n", "\r\n") if b"\r\n" in path.read_bytes() else text
