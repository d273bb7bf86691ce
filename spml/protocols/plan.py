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
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from spml.errors import ProtocolError
from spml.protocols.frontmatter import error_report

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
SCAFFOLD_HEADING = "Shared Scaffold"
EXECUTOR_LINE = ("> Executor: `spml develop {directory}` runs each subtask's tests and, for the "
                 "[INTEGRATION] subtask, L0 then L1.")

# `[x]` is done; only an open `[ ]` takes REVISED / NEW (a finished revision is plain `[x]`).
_SUBTASK = re.compile(r"^##[ \t]+(?:\[(?P<done>[xX])\]|\[ \](?:[ \t]+(?P<tag>REVISED|NEW))?)[ \t]+"
                      r"Subtask[ \t]+(?P<number>\d+)[ \t]*:[ \t]*(?P<title>\S.*?)[ \t]*$", re.I)
_REMOVED = re.compile(r"^##[ \t]+REMOVED[ \t]*:[ \t]*Subtask[ \t]+(?P<number>\d+)[ \t]*:[ \t]*"
                      r"(?P<title>\S.*?)[ \t]+(?:—|–|--)[ \t]+(?P<reason>\S.*?)[ \t]*$", re.I)
_CONCLUSION = re.compile(r"^##[ \t]+Conclusion[ \t]*:?[ \t]*$", re.I)
# A level-2 heading that means to be a subtask heading but follows none of the forms above.
_SUBTASK_LIKE = re.compile(r"^##[ \t]+(?:\[.{0,3}\]|REMOVED\b|REVISED\b|NEW\b|Subtask\b)", re.I)
_SECTION_HEADING = re.compile(r"^#{1,2}(?:[ \t]|$)")
_ANY_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|$)")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")
_LABEL = re.compile(r"^\*\*(?P<label>[^*:\n]+?)[ \t]*(?::\*\*|\*\*[ \t]*:)[ \t]*(?P<rest>.*)$")
# `Steps:` and the like open a prose block: they end the field value above them.
_PROSE_LEAD = re.compile(r"^[A-Za-z][^:*`]{0,40}:[ \t]*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")
_INTEGRATION_TITLE = re.compile(r"\[INTEGRATION\]\s*$", re.I)
_BACKTICKED = re.compile(r"`([^`\s]+)`")
_PY_TARGET = re.compile(r"^[\w./-]+\.py(?:::\S+)?$")
_HEADING_FIX = ("write '## [ ] Subtask N: <title>' ('[x]' once done, '[ ] REVISED' or '[ ] NEW' "
                "after a revision) or '## REMOVED: Subtask N: <title> — <reason>'")
_MARKERS: dict[str, str] = {"todo": "[ ] ", "done": "[x] ", "revised": "[ ] REVISED ",
                            "new": "[ ] NEW "}
Span = tuple[int, int]  # 0-based [start, end) line indices


@dataclass(frozen=True)
class _Field:
    label: str
    value: str
    start: int
    end: int


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


@dataclass(frozen=True)
class PlanDoc:
    """A parsed plan: the structure, and the exact lines it came from."""

    name: str
    lines: tuple[str, ...] = field(repr=False)  # with their line endings; "".join = the text
    title: str
    title_line: int | None
    header: dict[str, str]
    header_lines: dict[str, int]
    scaffold: str
    subtasks: list[Subtask]
    removed: list[RemovedSubtask]
    header_spans: dict[str, Span] = field(repr=False, compare=False)
    newline: str = field(default="\n", repr=False, compare=False)

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

    def revise(self, number: int, fields: Mapping[str, str]) -> PlanDoc:
        """Replace the given field values (adding absent ones after the last field) and mark
        the subtask `[ ] REVISED` (a `NEW` one stays `NEW`: it has no earlier results)."""
        sub = self.subtask(number)
        block = {label: _field_lines(label, value) for label, value
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
    return _Parser(text, name).parse()


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


def plan_json_schema() -> dict[str, Any]:
    """JSON Schema of a parsed plan's structure (`spml schema plan`)."""
    schema = PlanStructure.model_json_schema(by_alias=True)
    schema["title"] = "spml plan (parsed structure of plans/YYYY-MM-DD-<name>.md)"
    return schema


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


class _Parser:
    """One pass over a plan's lines; collects every structural problem before raising."""

    def __init__(self, text: str, name: str) -> None:
        self.name = name
        self.raw = _split_lines(text)
        self.contents = [_content(line) for line in self.raw]
        if self.contents:  # an editor's byte-order mark is not part of the title
            self.contents[0] = self.contents[0].removeprefix("\ufeff")
        self.fenced = _fenced(self.contents)
        self.rows: list[str] = []

    def parse(self) -> PlanDoc:
        sections = self._sections()
        header_end = sections[0][0] if sections else len(self.raw)
        header = self._fields(0, header_end, None, "header")
        subtasks, removed, scaffold = self._subtasks(sections)
        self._check_numbers(subtasks, removed)
        if self.rows:
            raise ProtocolError(error_report(f"{self.name} is not a valid plan", self.rows))
        title_at = next((i for i in range(header_end) if not self.fenced[i]
                         and self.contents[i].startswith("# ")), None)
        ending = next((line for line in self.raw if line.endswith("\n")), "\n")
        return PlanDoc(
            name=self.name, lines=tuple(self.raw),
            title="" if title_at is None else self.contents[title_at][2:].strip(),
            title_line=None if title_at is None else title_at + 1,
            header={k: f.value for k, f in header.items()},
            header_lines={k: f.start + 1 for k, f in header.items()},
            scaffold=scaffold, subtasks=subtasks, removed=removed,
            header_spans={k: (f.start, f.end) for k, f in header.items()},
            newline="\r\n" if ending.endswith("\r\n") else "\n")

    def _sections(self) -> list[Span]:
        """[start, end) of every `#`/`##` section from the first `##` heading on."""
        starts = [i for i, text in enumerate(self.contents)
                  if not self.fenced[i] and _SECTION_HEADING.match(text)]
        first = next((i for i in starts if self.contents[i].startswith("##")), len(self.raw))
        starts = [i for i in starts if i >= first]
        return list(zip(starts, [*starts[1:], len(self.raw)], strict=True))

    def _subtasks(self, sections: list[Span]) -> tuple[list[Subtask], list[RemovedSubtask], str]:
        subtasks: list[Subtask] = []
        removed: list[RemovedSubtask] = []
        scaffold = ""
        for index, (start, end) in enumerate(sections):
            text = self.contents[start].rstrip()
            if match := _SUBTASK.match(text):
                after = sections[index + 1] if index + 1 < len(sections) else None
                below = after if after and _CONCLUSION.match(self.contents[after[0]]) else None
                subtasks.append(self._subtask(match, (start, end), below))
            elif match := _REMOVED.match(text):
                removed.append(RemovedSubtask(int(match["number"]), match["title"],
                                              match["reason"], start + 1))
            elif _CONCLUSION.match(text):
                self._check_conclusion_owner(sections, index)
            elif _SUBTASK_LIKE.match(text):
                self.rows.append(f"  - heading (line {start + 1}): {text!r} is not a valid "
                                 f"subtask heading — {_HEADING_FIX}")
            elif text.lstrip("#").strip().casefold() == SCAFFOLD_HEADING.casefold():
                scaffold = _join(self.contents[start + 1:end])
        return subtasks, removed, scaffold

    def _subtask(self, match: re.Match[str], section: Span, conclusion: Span | None) -> Subtask:
        number, (start, end) = int(match["number"]), section
        own = self._fields(start + 1, end, SUBTASK_FIELDS, f"Subtask {number}")
        found = (self._fields(conclusion[0] + 1, conclusion[1], CONCLUSION_FIELDS,
                              f"Subtask {number} Conclusion") if conclusion else {})
        layout = SubtaskLayout(
            heading=start, body_end=end, end=conclusion[1] if conclusion else end,
            field_spans={k: (f.start, f.end) for k, f in own.items()},
            conclusion_heading=conclusion[0] if conclusion else None,
            conclusion_spans={k: (f.start, f.end) for k, f in found.items()})
        return Subtask(
            number=number, title=match["title"], status=_status(match["done"], match["tag"]),
            line=start + 1, fields={k: f.value for k, f in own.items()},
            field_lines={k: f.start + 1 for k, f in own.items()},
            conclusion={k: f.value for k, f in found.items()} if conclusion else None,
            conclusion_line=conclusion[0] + 1 if conclusion else None, layout=layout)

    def _check_conclusion_owner(self, sections: list[Span], index: int) -> None:
        previous = self.contents[sections[index - 1][0]] if index else ""
        if not _SUBTASK.match(previous.rstrip()):
            self.rows.append(f"  - ## Conclusion (line {sections[index][0] + 1}): has no subtask "
                             "directly above it — move it right after its subtask's content "
                             "(before the next heading) or delete it")

    def _fields(self, start: int, end: int, known: tuple[str, ...] | None,
                where: str) -> dict[str, _Field]:
        """The fields in [start, end) by canonical label (``known=None``: every label, for
        the header); a known label given twice is a structural problem."""
        found: dict[str, _Field] = {}
        for item in _scan_fields(self.contents, self.fenced, start, end):
            label = _canonical(item.label, known or HEADER_FIELDS)
            if label is None and known is None:
                label = " ".join(item.label.split())
            if label is None:
                continue
            if label in found:
                self.rows.append(f"  - {where} (line {item.start + 1}): **{label}:** is given "
                                 f"twice (first on line {found[label].start + 1}) — keep one")
                continue
            found[label] = replace(item, label=label)
        return found

    def _check_numbers(self, subtasks: list[Subtask], removed: list[RemovedSubtask]) -> None:
        seen: dict[int, int] = {}
        for number, line in sorted([(s.number, s.line) for s in subtasks]
                                   + [(r.number, r.line) for r in removed], key=lambda p: p[1]):
            if number in seen:
                self.rows.append(f"  - Subtask {number} (line {line}): the number {number} is "
                                 f"already used on line {seen[number]} — renumber one of them")
            seen.setdefault(number, line)


def _scan_fields(contents: list[str], fenced: list[bool], start: int, end: int) -> list[_Field]:
    """Every `**Label:** value` field in [start, end), labels as written."""
    found: list[_Field] = []
    index = start
    while index < end:
        match = None if fenced[index] else _LABEL.match(contents[index])
        if match is None:
            index += 1
            continue
        stop = _value_end(contents, fenced, index + 1, end, bool(match["rest"].strip()))
        value = _join([match["rest"], *contents[index + 1:stop]])
        found.append(_Field(match["label"], value, index, stop))
        index = stop
    return found


def _value_end(contents: list[str], fenced: list[bool], index: int, end: int,
               inline: bool) -> int:
    """End of a value whose continuation lines start at ``index``; a label with nothing
    after it may be separated from its list by blank lines."""
    if not inline:
        ahead = index
        while ahead < end and not contents[ahead].strip():
            ahead += 1
        if ahead < end and _continues(contents, fenced, ahead):
            index = ahead
    while index < end and _continues(contents, fenced, index):
        index += 1
    return index


def _continues(contents: list[str], fenced: list[bool], index: int) -> bool:
    text = contents[index]
    return not fenced[index] and bool(text.strip()) and not (
        _LABEL.match(text) or _ANY_HEADING.match(text) or _PROSE_LEAD.match(text))


def _fenced(contents: list[str]) -> list[bool]:
    """Which lines are inside a code fence (the fence lines included)."""
    inside: list[bool] = []
    fence = ""
    for text in contents:
        if not fence:
            opened = _FENCE_OPEN.match(text)
            fence = opened.group(1) if opened else ""
            inside.append(bool(opened))
            continue
        inside.append(True)
        closed = _FENCE_CLOSE.match(text)
        if closed and closed.group(1)[0] == fence[0] and len(closed.group(1)) >= len(fence):
            fence = ""
    return inside


def _field_block(fields: Mapping[str, str], known: tuple[str, ...], where: str) -> list[str]:
    return [line for label, value in _checked(fields, known, where).items()
            for line in _field_lines(label, value)]


def _checked(fields: Mapping[str, str], known: tuple[str, ...], where: str) -> dict[str, str]:
    """``fields`` by canonical label; an unknown label is refused (it would read as prose)."""
    checked: dict[str, str] = {}
    for label, value in fields.items():
        canonical = _canonical(label, known)
        if canonical is None:
            raise ProtocolError(f"{where}: **{label}:** is not a known field — use one of "
                                f"{', '.join(known)}")
        checked[canonical] = value
    return checked


def _field_lines(label: str, value: str) -> list[str]:
    """The lines of `**label:** value`; refused when they would not read back as ``value``."""
    lines = _normalize(value).split("\n")
    if not lines[0]:
        rendered = [f"**{label}:**"]
    elif _LIST_ITEM.match(lines[0]):
        rendered = [f"**{label}:**", *lines]
    else:
        rendered = [f"**{label}:** {lines[0]}", *lines[1:]]
    parsed = _scan_fields(rendered, [False] * len(rendered), 0, len(rendered))
    if len(parsed) != 1 or parsed[0].value != _normalize(value) or parsed[0].end != len(rendered):
        raise ProtocolError(f"**{label}:** (value {value!r}): cannot be written as one plan field "
                            "— write it without blank lines, headings, code fences, bold "
                            "'**Label:**' lines or prose lead-ins such as 'Steps:'")
    return rendered


def _subtask_block(number: int, title: str, status: Status, fields: Mapping[str, str],
                   steps: Sequence[str]) -> list[str]:
    if not title.strip() or "\n" in title.strip():
        raise ProtocolError(f"Subtask {number}: the title must be one non-empty line, "
                            f"got {title!r}")
    block = [_heading(number, title.strip(), status),
             *_field_block(fields, SUBTASK_FIELDS, f"Subtask {number}")]
    if steps:
        block += ["", "Steps:", *(f"{i}. {step}" for i, step in enumerate(steps, 1))]
    return block


def _heading(number: int, title: str, status: Status) -> str:
    if status not in _MARKERS:
        raise ProtocolError(f"Subtask {number}: status must be one of {', '.join(_MARKERS)}, "
                            f"got {status!r}")
    return f"## {_MARKERS[status]}Subtask {number}: {title}"


def _titled(title: str, integration: bool) -> str:
    title = title.strip()
    if integration and not _INTEGRATION_TITLE.search(title):
        return f"{title} {INTEGRATION_TAG}"
    return title


def _status(done: str | None, tag: str | None) -> Status:
    if done:
        return "done"
    if tag:
        return "revised" if tag.upper() == "REVISED" else "new"
    return "todo"


def _canonical(label: str, known: tuple[str, ...]) -> str | None:
    key = " ".join(label.split()).casefold()
    return next((name for name in known if name.casefold() == key), None)


def _is_test(target: str) -> bool:
    path = target.split("::", 1)[0]
    base = path.rsplit("/", 1)[-1]
    return ("::" in target or base.startswith("test_") or base.endswith("_test.py")
            or "tests" in path.split("/")[:-1])


def _split_lines(text: str) -> list[str]:
    """Lines with their endings, split at '\\n' only (a form feed or U+2028 in prose is not
    a line break here, unlike `str.splitlines`)."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _content(line: str) -> str:
    return line.removesuffix("\n").removesuffix("\r")


def _join(lines: list[str]) -> str:
    return "\n".join(line.rstrip() for line in lines).strip()


def _normalize(value: str) -> str:
    return _join(value.replace("\r\n", "\n").split("\n"))
