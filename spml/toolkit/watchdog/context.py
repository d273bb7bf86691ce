"""What the watchdog concludes, written into ``<exp>/experiment-context.md``.

The watchdog owns four level-2 sections of that file and never touches anything else (the YAML
front matter, the title, the user's sections are kept byte for byte); `spml handoff` writes a
fifth, first of them:

* ``## Handoff`` — replaced by each handoff: what was validated and how (`set_handoff`);

* ``## Watchdog Status`` — replaced on each update: ``- key: value`` lines;
* ``## Diagnosis History`` — appended ``### Issue #N — step S`` entries;
* ``## Evaluation History`` — appended ``### Eval #N — checkpoint step=S`` entries;
* ``## Alerts`` — one appended ``- <time> — <text>`` line per alert.

Numbering continues from the highest number already in the section, so a restarted watchdog
goes on with the next issue. Every write replaces the whole file atomically.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from spml.toolkit.diagnostics import HEADING as DIAGNOSTICS_HEADING
from spml.toolkit.files import write_atomic

TITLE = "# Experiment Context"
HANDOFF, STATUS, DIAGNOSES, EVALUATIONS, ALERTS = (
    "Handoff", "Watchdog Status", "Diagnosis History", "Evaluation History", "Alerts")
SECTION_ORDER = (HANDOFF, STATUS, DIAGNOSES, EVALUATIONS, ALERTS)
# `interrupted`: the watchdog itself was stopped by a signal (Ctrl-C, SIGTERM); a new
# `spml watchdog run` resumes from the newest checkpoint that verifies.
STATES = ("running", "completed", "stopped_code_failure", "stopped_crash_loop", "interrupted")
_FIELD = re.compile(r"^- ([A-Za-z_][A-Za-z0-9_]*): ?(.*)$")
_ISSUE = re.compile(r"^### Issue #(\d+)\b")
_EVAL = re.compile(r"^### Eval #(\d+)\b")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ContextFile:
    """The watchdog's sections of one ``experiment-context.md``.

    Args:
        path: The context file; created with a ``# Experiment Context`` title when missing.
        clock: Returns the current time (tests pass a fixed one); UTC by default.
    """

    def __init__(self, path: Path, clock: Callable[[], datetime] = _utc_now) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()  # the eval harvester may write beside the main loop

    def set_status(self, state: str, **fields: object) -> None:
        """Replace the status section: ``state``, the given fields (``None`` ones left out),
        and ``updated``.

        Raises:
            ValueError: ``state`` is not one of `STATES`.
        """
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        values = {"state": state, **{k: v for k, v in fields.items() if v is not None}}
        values.setdefault("updated", self._now())
        body = [f"- {key}: {_one_line(value)}" for key, value in values.items()]
        self._edit(lambda doc: doc.replace_section(STATUS, body))

    def update_status(self, **fields: object) -> None:
        """Change some fields of the status section, keeping the others (and the state)."""
        current = self.read_status()
        state = current.pop("state", "running")
        current.pop("updated", None)
        self.set_status(state if state in STATES else "running", **{**current, **fields})

    def add_diagnosis(self, step: int | None, symptom: str, classification: str,  # noqa: PLR0913
                      evidence: Sequence[str], action: str, checkpoint: str | None, *,
                      restart_from: str | None = None, skipped: Sequence[str] = (),
                      warning: str | None = None, diagnostics: Sequence[str] = ()) -> int:
        """Append ``### Issue #N — step S``; returns N (one more than the highest so far).

        Args:
            step: Last logged step of the failed attempt.
            symptom: The diagnosis's cause.
            classification: ``environment`` or ``code``.
            evidence: The lines or facts behind it.
            action: What the watchdog does next.
            checkpoint: The checkpoint the failed attempt had resumed from.
            restart_from: The checkpoint the restart resumes from (only when restarting).
            skipped: Newer checkpoints that failed verification, each with its reason.
            warning: Something the reader must not miss (a restart from scratch).
            diagnostics: SPML's diagnostics on the attempt's logged steps
                (`spml.toolkit.diagnostics.Diagnosis.line`, each naming its tree); none: no
                such bullet.
        """
        evidence_rows = [f"  - {_indent(item, 4)}" for item in evidence] or ["  - none"]
        bullets = [f"- Time: {self._now()}", f"- Symptom: {_indent(symptom)}",
                   f"- Classification: {_indent(classification)}", "- Evidence:",
                   *evidence_rows, f"- Action: {_indent(action)}",
                   f"- Checkpoint: {_indent(checkpoint or 'none')}"]
        if restart_from is not None:
            bullets.append(f"- Restart from: {_indent(restart_from)}")
        if skipped:
            bullets += ["- Skipped checkpoints:", *(f"  - {_indent(s, 4)}" for s in skipped)]
        if warning:
            bullets.append(f"- Warning: {_indent(warning)}")
        if diagnostics:
            bullets += [f"- {DIAGNOSTICS_HEADING}:",
                        *(f"  - {_indent(line, 4)}" for line in diagnostics)]
        return self._append_entry(DIAGNOSES, _ISSUE, "Issue", f"step {_step(step)}", bullets)

    def add_evaluation(self, step: int | None, summary: str, duration_s: float,
                       skipped: Sequence[str] = ()) -> int:
        """Append ``### Eval #N — checkpoint step=S``; returns N.

        Args:
            step: Training step of the evaluated checkpoint.
            summary: The metric line (e.g. ``step=1200 val_loss=2.31``) or the failure.
            duration_s: Wall-clock seconds the evaluation took.
            skipped: Checkpoints skipped since the last evaluation, each with its reason.
        """
        skipped_rows = [f"  - {_indent(item, 4)}" for item in skipped]
        bullets = [f"- Time: {self._now()}", f"- Summary: {_indent(summary)}",
                   f"- Duration: {duration_s:.1f} s",
                   f"- Skipped: {len(skipped)}" if skipped else "- Skipped: none",
                   *skipped_rows]
        return self._append_entry(EVALUATIONS, _EVAL, "Eval",
                                  f"checkpoint step={_step(step)}", bullets)

    def set_handoff(self, lines: Sequence[str]) -> None:
        """Replace the handoff section with ``- <line>`` bullets (the pre-checks, the design
        and the L1 numbers the run was handed off with)."""
        self._edit(lambda doc: doc.replace_section(HANDOFF, [f"- {_one_line(x)}" for x in lines]))

    def add_alert(self, text: str) -> None:
        """Append one ``- <time> — <text>`` line to the alerts section."""
        line = f"- {self._now()} — {_one_line(text)}"
        self._edit(lambda doc: doc.append_to_section(ALERTS, [line], blank_before=False))

    def read_status(self) -> dict[str, str]:
        """The ``key: value`` lines of the status section ({} when there is none)."""
        if not self.path.is_file():
            return {}
        doc = _Document.parse(_read(self.path))
        status: dict[str, str] = {}
        for line in doc.section_lines(STATUS):
            match = _FIELD.match(line.rstrip("\r"))
            if match:
                status[match.group(1)] = match.group(2)
        return status

    def _append_entry(self, section: str, pattern: re.Pattern[str], kind: str, suffix: str,
                      bullets: list[str]) -> int:
        number = 0

        def edit(doc: _Document) -> None:
            nonlocal number
            found = [int(m.group(1)) for line in doc.section_lines(section)
                     if (m := pattern.match(line))]
            number = max(found, default=0) + 1
            entry = [f"### {kind} #{number} — {suffix}", "", *bullets]
            doc.append_to_section(section, entry, blank_before=True)

        self._edit(edit)
        return number

    def _edit(self, change: Callable[[_Document], None]) -> None:
        with self._lock:
            text = _read(self.path) if self.path.is_file() else ""
            doc = _Document.parse(text if text.strip() else f"{TITLE}\n")
            change(doc)
            write_atomic(self.path, doc.render())

    def _now(self) -> str:
        return self._clock().astimezone(UTC).isoformat(timespec="seconds")


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")  # no newline translation: CRLF files stay CRLF


def _step(step: int | None) -> str:
    return "unknown" if step is None else str(step)


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _indent(text: str, spaces: int = 2) -> str:
    """Continuation lines of a bullet, indented so they stay inside it (never a heading)."""
    lines = str(text).strip("\n").splitlines() or [""]
    return ("\n" + " " * spaces).join(line.rstrip() for line in lines)


class _Document:
    """The lines of a markdown file and where its level-1/level-2 sections start."""

    def __init__(self, lines: list[str], newline: str) -> None:
        self.lines, self.newline = lines, newline

    @classmethod
    def parse(cls, text: str) -> _Document:
        """Split ``text`` into lines (CRLF files keep CRLF; a final newline is implied)."""
        newline = "\r\n" if "\r\n" in text else "\n"
        lines = text.split(newline)
        if text.endswith(newline):
            lines.pop()
        return cls(lines, newline)

    def render(self) -> str:
        return self.newline.join(self.lines) + self.newline

    def _headings(self) -> list[tuple[int, str]]:
        """(index, level-2 title or "" for a level-1 heading) outside front matter/fences."""
        found, fence = [], None
        start = _front_matter_end(self.lines)
        for index in range(start, len(self.lines)):
            line = self.lines[index]
            marker = _FENCE.match(line)
            if marker:
                fence = None if fence == marker.group(1) else fence or marker.group(1)
            elif fence is None and re.match(r"^#{1,2}(\s|$)", line):
                title = line.strip().rstrip("#").strip() if line.startswith("## ") else ""
                found.append((index, title.removeprefix("## ").strip()))
        return found

    def _span(self, section: str) -> tuple[int, int] | None:
        """Lines [start, end) of ``## <section>`` (its heading included), or None."""
        headings = self._headings()
        for position, (index, title) in enumerate(headings):
            if title.lower() == section.lower():
                ends = [i for i, _ in headings[position + 1:]]
                return index, ends[0] if ends else len(self.lines)
        return None

    def section_lines(self, section: str) -> list[str]:
        span = self._span(section)
        return self.lines[span[0] + 1:span[1]] if span else []

    def replace_section(self, section: str, body: list[str]) -> None:
        span = self._span(section) or self._create(section)
        end = span[1]
        tail = [""] if end < len(self.lines) else []
        self.lines[span[0]:end] = [f"## {section}", "", *_split(body), *tail]

    def append_to_section(self, section: str, entry: list[str], blank_before: bool) -> None:
        start, end = self._span(section) or self._create(section)
        last = end
        while last > start + 1 and not self.lines[last - 1].strip():
            last -= 1
        gap = [""] if blank_before or last == start + 1 else []
        tail = [""] if end < len(self.lines) else []
        self.lines[last:end] = [*gap, *_split(entry), *tail]

    def _create(self, section: str) -> tuple[int, int]:
        """Insert an empty ``## <section>`` before the next watchdog section in
        `SECTION_ORDER`, else at the end; returns its span."""
        later = SECTION_ORDER[SECTION_ORDER.index(section) + 1:]
        spans = [s for s in (self._span(name) for name in later) if s is not None]
        if spans:
            at = min(s[0] for s in spans)
            self.lines[at:at] = [f"## {section}", ""]
            return at, at + 2
        if self.lines and self.lines[-1].strip():
            self.lines.append("")
        self.lines.append(f"## {section}")
        return len(self.lines) - 1, len(self.lines)


def _split(lines: list[str]) -> list[str]:
    return [part for line in lines for part in line.split("\n")]


def _front_matter_end(lines: list[str]) -> int:
    """Index of the first line after the YAML front matter (0 when there is none)."""
    if not lines or lines[0].lstrip("\ufeff").rstrip() != "---":
        return 0
    for index in range(1, len(lines)):
        if lines[index].rstrip() == "---":
            return index + 1
    return 0
