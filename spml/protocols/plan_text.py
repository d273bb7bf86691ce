"""A plan's text, line by line: its syntax, the parser, and the writing of fields.

The heading and `**Label:** value` patterns, the field scanner (values run over the next lines
up to a blank line, another label, a heading, a code fence or a prose lead-in), code-fence
tracking, the one-pass parser (`parse_text`, the parts of a `PlanDoc`), and the helpers that
write headings and field lines that read back as given. `spml.protocols.plan` builds the
`PlanDoc` and its edits on top of this.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from spml.errors import ProtocolError
from spml.protocols.frontmatter import error_report
from spml.protocols.plan_schema import (
    _INTEGRATION_TITLE,
    CONCLUSION_FIELDS,
    HEADER_FIELDS,
    INTEGRATION_TAG,
    SUBTASK_FIELDS,
    RemovedSubtask,
    Span,
    Status,
    Subtask,
    SubtaskLayout,
)

SCAFFOLD_HEADING = "Shared Scaffold"
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
_HEADING_FIX = ("write '## [ ] Subtask N: <title>' ('[x]' once done, '[ ] REVISED' or '[ ] NEW' "
                "after a revision) or '## REMOVED: Subtask N: <title> — <reason>'")
_MARKERS: dict[str, str] = {"todo": "[ ] ", "done": "[x] ", "revised": "[ ] REVISED ",
                            "new": "[ ] NEW "}


@dataclass(frozen=True)
class _Field:
    label: str
    value: str
    start: int
    end: int


@dataclass(frozen=True)
class ParsedPlan:
    """What the parser reads from a plan's text: the parts `spml.protocols.plan` assembles
    into a `PlanDoc` (the same fields)."""

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


def parse_text(text: str, name: str) -> ParsedPlan:
    """Parse a plan's text into its parts (ProtocolError: see `spml.protocols.plan.parse_plan`)."""
    return _Parser(text, name).parse()


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

    def parse(self) -> ParsedPlan:
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
        return ParsedPlan(
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


def _checked(fields: Mapping[str, Any], known: tuple[str, ...], where: str) -> dict[str, Any]:
    """``fields`` by canonical label; an unknown label is refused (it would read as prose)."""
    checked: dict[str, Any] = {}
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
