"""The experiment plan `plans/YYYY-MM-DD-<name>.md`, read and edited text-preserving.

The planner writes it (`render_plan`), a person may edit it, and the executor (`spml develop`)
reads it and records progress in it. `render()` of an unedited plan returns the text it was
parsed from byte for byte (LF or CRLF, final newline or not), and every edit rewrites only
the lines it changes, so a person's prose, steps and notes survive::

    # MLP regression Implementation Plan
    **Goal:** ...                          <- header: the bold labels before the first `##`
    ## Shared Scaffold                     <- prose, kept verbatim
    ## [ ] Subtask 1: Model core           <- `[x]` done, `[ ] REVISED` / `[ ] NEW` (revision)
    **Role:** ...                          <- a field: `**Label:** value` at a line's start; the
    **Unit Tests:**                           value runs over the next lines up to a blank line,
    - `tests/test_model.py` - ...             another bold label, a heading, a code fence or a
    ## Conclusion                             prose lead-in such as `Steps:`
    **Result:** implemented                <- directly after a subtask: that subtask's conclusion
    ## REMOVED: Subtask 4: Augmentation — out of scope

Headings and labels inside code fences are prose. Edits never mutate a `PlanDoc`: each one
returns a new `PlanDoc`, parsed again from the edited text.

The labels and structures live in `plan_schema`, the line syntax, the parser and the field
writers in `plan_text`; every public name of both is importable from here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from spml.errors import ProtocolError
from spml.protocols.plan_schema import (
    _INTEGRATION_TITLE,
    CONCLUSION_FIELDS,
    HEADER_FIELDS,
    INTEGRATION_TAG,
    SUBTASK_FIELDS,
    ConclusionLabel,
    PlanHeader,
    PlanStructure,
    RemovedStructure,
    RemovedSubtask,
    Span,
    Status,
    Subtask,
    SubtaskLabel,
    SubtaskLayout,
    SubtaskStructure,
    plan_json_schema,
)
from spml.protocols.plan_text import (
    SCAFFOLD_HEADING,
    ParsedPlan,
    _canonical,
    _checked,
    _content,
    _field_block,
    _field_lines,
    _heading,
    _normalize,
    _subtask_block,
    _titled,
    parse_text,
)

__all__ = ["CONCLUSION_FIELDS", "EXECUTOR_LINE", "HEADER_FIELDS", "INTEGRATION_TAG",
           "SCAFFOLD_HEADING", "SUBTASK_FIELDS", "ConclusionLabel", "PlanDoc", "PlanHeader",
           "PlanStructure", "RemovedStructure", "RemovedSubtask", "Span", "Status", "Subtask",
           "SubtaskDraft", "SubtaskLabel", "SubtaskLayout", "SubtaskStructure", "load_plan",
           "parse_plan", "plan_json_schema", "render_plan"]

EXECUTOR_LINE = ("> Executor: `spml develop {directory}` runs each subtask's tests and, for the "
                 "[INTEGRATION] subtask, L0 then L1.")


@dataclass(frozen=True)
class PlanDoc(ParsedPlan):
    """A parsed plan: the structure, and the exact lines it came from (the fields of
    `ParsedPlan`), with the edits that rewrite only the lines they must."""

    def render(self) -> str:
        """The plan's text (unedited: exactly the parsed text)."""
        return "".join(self.lines)

    @property
    def integration(self) -> Subtask | None:
        """The `[INTEGRATION]` subtask (the first, when the plan wrongly has several)."""
        return next((s for s in self.subtasks if s.integration), None)

    def subtask(self, number: int) -> Subtask:
        """The active subtask ``number``. Raises ProtocolError naming the ones there are."""
        for sub in self.subtasks:
            if sub.number == number:
                return sub
        gone = [r for r in self.removed if r.number == number]
        what = f"is REMOVED (line {gone[0].line})" if gone else "does not exist"
        numbers = ", ".join(str(s.number) for s in self.subtasks) or "none"
        raise ProtocolError(f"{self.name}: Subtask {number} {what} — the active subtasks are: "
                            f"{numbers}")

    def field_text(self, subtask: Subtask, label: str) -> list[tuple[int, str]]:
        """A field's lines as (1-based line, text), the label line first."""
        start, end = subtask.layout.field_spans[label]
        return [(i + 1, _content(self.lines[i])) for i in range(start, end)]

    def structure(self) -> PlanStructure:
        """The parsed structure as the pydantic model `plan_json_schema` describes."""
        return PlanStructure(
            title=self.title, header=PlanHeader.model_validate(self.header),
            scaffold=self.scaffold,
            subtasks=[SubtaskStructure(number=s.number, title=s.title, integration=s.integration,
                                       status=s.status, line=s.line, fields=s.fields,
                                       conclusion=s.conclusion) for s in self.subtasks],
            removed=[RemovedStructure(number=r.number, title=r.title, reason=r.reason,
                                      line=r.line) for r in self.removed])

    # Edits: each returns a new PlanDoc; `self` is unchanged.

    def mark(self, number: int, status: Status) -> PlanDoc:
        """Rewrite subtask ``number``'s heading with ``status``'s marker (only that line)."""
        sub = self.subtask(number)
        heading = sub.layout.heading
        return self._edit([(heading, heading + 1, [_heading(number, sub.title, status)])])

    def set_conclusion(self, number: int, fields: Mapping[str, str]) -> PlanDoc:
        """Write the subtask's `## Conclusion` fields: an existing Conclusion's fields are
        replaced (its other prose is kept); without one, a Conclusion is added at the end
        of the subtask."""
        sub = self.subtask(number)
        block = _field_block(fields, CONCLUSION_FIELDS, "Conclusion")
        layout = sub.layout
        if layout.conclusion_heading is None:
            return self._edit([self._insertion(layout.heading, layout.end,
                                               ["## Conclusion", *block])])
        spans = sorted(layout.conclusion_spans.values())
        if not spans:
            at = layout.conclusion_heading + 1
            return self._edit([(at, at, block)])
        first, *rest = spans
        return self._edit([(first[0], first[1], block), *((s, e, []) for s, e in rest)])

    def remove(self, number: int, reason: str) -> PlanDoc:
        """Replace subtask ``number`` (its Conclusion included) with its REMOVED line."""
        sub = self.subtask(number)
        if not reason.strip() or "\n" in reason.strip():
            raise ProtocolError(f"{self.name}: the reason for removing Subtask {number} must be "
                                f"one non-empty line, got {reason!r}")
        line = f"## REMOVED: Subtask {number}: {sub.title} — {reason.strip()}"
        return self._edit([(sub.layout.heading, self._content_end(sub.layout.heading,
                                                                  sub.layout.end), [line])])

    def add_subtask(self, title: str, fields: Mapping[str, str], integration: bool = False,
                    steps: Sequence[str] = ()) -> PlanDoc:
        """Add a `[ ] NEW` subtask numbered one above every number used (removed included):
        before the integration subtask, or, when it is the integration subtask or there is
        none, after the last subtask."""
        numbers = [s.number for s in self.subtasks] + [r.number for r in self.removed]
        block = _subtask_block(max(numbers, default=0) + 1, _titled(title, integration), "new",
                               fields, steps)
        target = self.integration
        if target is not None and not (integration or _INTEGRATION_TITLE.search(title)):
            at = target.layout.heading
            return self._edit([(at, at, [*block, ""])])
        ends = [s.layout.end for s in self.subtasks] + [r.line for r in self.removed]
        return self._edit([self._insertion(0, max(ends, default=len(self.lines)), block)])

    def revise(self, number: int, fields: Mapping[str, str | None]) -> PlanDoc:
        """Replace the given field values (adding absent ones after the last field; a None
        value removes the field) and mark the subtask `[ ] REVISED` (a `NEW` one stays `NEW`:
        it has no earlier results)."""
        sub = self.subtask(number)
        block = {label: [] if value is None else _field_lines(label, value) for label, value
                 in _checked(fields, SUBTASK_FIELDS, f"Subtask {number}").items()}
        layout = sub.layout
        status: Status = "new" if sub.status == "new" else "revised"
        edits = [(layout.heading, layout.heading + 1, [_heading(number, sub.title, status)])]
        spans = layout.field_spans
        edits += [(*spans[label], lines) for label, lines in block.items() if label in spans]
        after = max((end for _, end in spans.values()), default=layout.heading + 1)
        added = [line for label, lines in block.items() if label not in spans for line in lines]
        if added:
            edits.append((after, after, added))
        return self._edit(edits)

    def update_header(self, label: str, value: str) -> PlanDoc:
        """Set header field ``label`` (added after the last header field when absent)."""
        label = _canonical(label, HEADER_FIELDS) or " ".join(label.split())
        lines = _field_lines(label, value)
        if label in self.header_spans:
            return self._edit([(*self.header_spans[label], lines)])
        if self.header_spans:
            after = max(end for _, end in self.header_spans.values())
            return self._edit([(after, after, lines)])
        top = self.title_line or 0
        return self._edit([self._insertion(0, top, lines) if top else (0, 0, [*lines, ""])])

    def _edit(self, edits: list[tuple[int, int, list[str]]]) -> PlanDoc:
        """Apply non-overlapping (start, end, new line texts) edits and parse the result."""
        result = list(self.lines)
        for start, end, texts in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
            result[start:end] = [text + self.newline for text in texts]
        if self.lines and not self.lines[-1].endswith("\n") and result:
            # The file had no final newline: keep it that way, whatever the edit touched.
            result = [line if line.endswith("\n") else line + self.newline
                      for line in result[:-1]] + [_content(result[-1])]
        return parse_plan("".join(result), self.name)

    def _insertion(self, start: int, end: int, block: list[str]) -> tuple[int, int, list[str]]:
        """Insert ``block`` after the last non-blank line of [start, end), a blank line
        before it (and after it, when the next line is not blank)."""
        at = self._content_end(start, end)
        tail = [""] if at < len(self.lines) and _content(self.lines[at]).strip() else []
        return at, at, ["", *block, *tail]

    def _content_end(self, start: int, end: int) -> int:
        while end > start + 1 and not _content(self.lines[end - 1]).strip():
            end -= 1
        return end


def load_plan(path: Path) -> PlanDoc:
    """Read and parse the plan at ``path`` (ProtocolError: missing, not UTF-8, malformed)."""
    if not path.is_file():
        raise ProtocolError(f"plan file must exist, got {str(path)!r} — write the plan first")
    try:
        text = path.read_bytes().decode("utf-8")  # bytes: keep CRLF line endings as they are
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{path.name} (byte {exc.start}): is not UTF-8 text — save it as "
                            "UTF-8") from None
    return parse_plan(text, path.name)


def parse_plan(text: str, name: str = "plan.md") -> PlanDoc:
    """Parse a plan's text. Raises ProtocolError, one line-numbered row per structural problem:
    a malformed subtask heading, a duplicate subtask number, a `## Conclusion` with no subtask
    above it, a field given twice in one subtask or in the header."""
    parts = parse_text(text, name)
    return PlanDoc(**{item.name: getattr(parts, item.name) for item in fields(ParsedPlan)})


@dataclass(frozen=True)
class SubtaskDraft:
    """A subtask for `render_plan`: numbered in order, written as `[ ] Subtask N`."""

    title: str
    fields: Mapping[str, str]
    integration: bool = False
    steps: Sequence[str] = ()


def render_plan(title: str, header: Mapping[str, str], scaffold: str,
                subtasks: Sequence[SubtaskDraft | Mapping[str, Any]]) -> str:
    """A fresh plan's text; `parse_plan` reads back the same title, header, scaffold and
    subtasks. ``subtasks`` are `SubtaskDraft`s or mappings with the same keys.

    Raises:
        ProtocolError: a value that cannot be written as given (a blank line, a heading or a
            bold label inside a field value, an unknown subtask field, a multi-line title).
    """
    drafts = [d if isinstance(d, SubtaskDraft) else SubtaskDraft(**d) for d in subtasks]
    header = {_canonical(label, HEADER_FIELDS) or label: value for label, value in header.items()}
    directory = header.get("Experiment directory") or "<experiment dir>"
    lines = [f"# {title.strip()}", "", EXECUTOR_LINE.format(directory=directory), ""]
    lines += [line for label, value in header.items() for line in _field_lines(label, value)]
    lines += ["", f"## {SCAFFOLD_HEADING}", *_normalize(scaffold).split("\n")]
    for number, draft in enumerate(drafts, 1):
        block = _subtask_block(number, _titled(draft.title, draft.integration), "todo",
                               draft.fields, draft.steps)
        lines += ["", *block]
    text = "\n".join(lines) + "\n"
    _check_rendered(parse_plan(text), title, header, scaffold, drafts)
    return text


def _check_rendered(doc: PlanDoc, title: str, header: Mapping[str, str], scaffold: str,
                    drafts: list[SubtaskDraft]) -> None:
    wanted = (title.strip(), {k: _normalize(v) for k, v in header.items()}, _normalize(scaffold),
              [_titled(d.title, d.integration) for d in drafts])
    got = (doc.title, doc.header, doc.scaffold, [s.title for s in doc.subtasks])
    for part, want, have in zip(("title", "header", "Shared Scaffold", "subtask titles"),
                                wanted, got, strict=True):
        if want != have:
            raise ProtocolError(f"render_plan: the {part} does not read back as given "
                                f"({want!r} became {have!r}) — write it without headings, "
                                "blank lines inside values or line breaks in titles")
