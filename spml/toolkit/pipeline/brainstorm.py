"""The brainstorm stage's writing: answers + collected context -> the design doc (SPML §1.6).

A new design goes to ``plans/YYYY-MM-DD-<topic>-design.md``. When the experiment already has
one, the stage runs in revision mode: the changed fields are written into the same file (its
prose kept byte for byte) and a ``## Impact on Plan`` section lists them, so `plan` knows what
to revise; SPML never allows a second design.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spml.errors import ProtocolError
from spml.protocols.design import (
    DesignDoc,
    design_filename,
    find_design,
    read_design,
    render_design,
)
from spml.protocols.frontmatter import error_report
from spml.toolkit.files import write_atomic

PLANS_DIR = "plans"
IMPACT = "## Impact on Plan"


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
                 day: date, source: str = "the brief") -> DesignWritten:
    """Write a new design, or revise the existing one in place."""
    design = validate_answers({**answers, "context": context}, source)
    existing = find_design(exp_dir)
    if existing is None:
        path = exp_dir / PLANS_DIR / design_filename(design.topic, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, render_design(design, _new_body(design)))
        return DesignWritten(path, False, [])
    old, body = read_design(existing)
    changed = changed_fields(old, design)
    if changed:
        write_atomic(existing, render_design(design, _with_impact(body, changed, day)))
    return DesignWritten(existing, True, changed)


def changed_fields(old: DesignDoc, new: DesignDoc) -> list[str]:
    """Top-level design fields whose values differ (the collected context does not count)."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return [name for name in after if name != "context" and before.get(name) != after[name]]


def _new_body(design: DesignDoc) -> str:
    lines = [f"# {design.topic}: design", "",
             "Written by `spml design new`; the front matter above is the design, this prose "
             "is yours to extend (background, approaches considered, decisions).", "",
             "## Approach", "", design.architecture.strip(), "",
             "## Validation", "",
             "L0 (SPML's static checks) and L1 (a limited runtime run) validate the assembled "
             "training script before any loop runs; the review criteria above judge it."]
    return "\n".join(lines) + "\n"


def _with_impact(body: str, changed: list[str], day: date) -> str:
    """``body`` with its Impact on Plan section replaced (or added at the end)."""
    section = [IMPACT, "", f"Revised on {day.isoformat()}: {', '.join(changed)} changed. "
               "`spml plan` marks the subtasks these fields shape `[ ] REVISED`; a revised "
               "integration subtask runs L0 and L1 again."]
    lines = body.splitlines()
    if IMPACT in lines:
        start = lines.index(IMPACT)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        lines[start:end] = [*section, ""] if end < len(lines) else section
    else:
        lines += ["", *section] if lines and lines[-1].strip() else section
    return "\n".join(lines) + "\n"
