"""What a check is, what it reports, and how a finding is placed in a file.

A check is one class: an id (``L0-NN``, SPML's numbering; new checks from ``L0-26``), a
kebab-case ``name`` of the bad pattern, a ``severity`` (``critical`` for SPML's mandatory
checks, ``warning`` for advisory ones), a one-line ``message``, an imperative ``fix`` and a
docstring with the sections What it does / Why is this bad? / Example / Use instead.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from spml.toolkit.checks.patterns import Facts
    from spml.toolkit.checks.project import SourceFile

Severity = Literal["critical", "warning"]
DOC_SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead")


@dataclass(frozen=True, order=True)
class Finding:
    """One problem at one place; sorted by path, line, col, id."""

    path: str
    line: int
    col: int
    id: str
    message: str
    severity: Severity = "warning"
    fix: str = ""
    # Where the cause continues when the finding sits at a call site: the helper that
    # really prints or writes (``prints in ProgressMeter.display (main.py:500)``).
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "id": self.id, "severity": self.severity, "path": self.path, "line": self.line,
            "col": self.col, "message": self.message, "fix": self.fix}
        if self.note:  # only when there is one: the common case keeps its seven keys
            data["note"] = self.note
        return data

    def text(self) -> str:
        lines = [f"{self.path}:{self.line}:{self.col} {self.id} {self.message}"]
        lines += [f"  note: {self.note}"] if self.note else []
        lines += [f"  fix: {self.fix}"] if self.fix else []
        return "\n".join(lines)


@dataclass(frozen=True)
class Applicability:
    """Whether a check applies to a project; ``reason`` says why (shown for N/A)."""

    applies: bool
    reason: str = ""


APPLIES = Applicability(True)


def not_applicable(reason: str) -> Applicability:
    return Applicability(False, reason)


class Check:
    """Base class of every L0 check; subclasses set the class attributes and ``run``."""

    id: ClassVar[str]
    name: ClassVar[str]
    severity: ClassVar[Severity]
    message: ClassVar[str]
    fix: ClassVar[str]
    # The SPML applicability condition in words ("uses CUDA", "always", ...).
    condition: ClassVar[str] = "always"
    # What only a run can tell; printed with PASS so nobody reads a static pass as proof.
    runtime_note: ClassVar[str] = ""
    # A practice SPML mandates (logging destinations, loader tuning, fused attention), not a
    # defect that corrupts results: a warning in the default profile, critical in `spml`.
    policy: ClassVar[bool] = False

    @classmethod
    def severity_in(cls, profile: str) -> Severity:
        """This check's severity in a profile (`default` or `spml`)."""
        return "warning" if profile == "default" and cls.policy else cls.severity

    def applicability(self, facts: Facts) -> Applicability:
        """Override to say N/A (with the reason) when the condition does not hold."""
        return APPLIES

    def run(self, facts: Facts) -> Iterator[Finding]:
        raise NotImplementedError

    def finding(self, source: SourceFile, node: ast.AST, message: str | None = None,
                fix: str | None = None, note: str = "") -> Finding:
        """A finding at ``node`` in ``source`` with this check's id and severity."""
        return Finding(path=source.display, line=getattr(node, "lineno", 1),
                       col=getattr(node, "col_offset", 0) + 1, id=self.id,
                       message=message or self.message, severity=self.severity,
                       fix=self.fix if fix is None else fix, note=note)

    @classmethod
    def doc(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def doc_sections(cls) -> dict[str, str]:
        """The docstring split at its ``## Section`` headings."""
        sections: dict[str, str] = {}
        for block in re.split(r"^## ", cls.doc(), flags=re.MULTILINE)[1:]:
            title, _, body = block.partition("\n")
            sections[title.strip()] = body.strip()
        return sections

    @classmethod
    def explain(cls) -> str:
        """The text ``spml validate explain ID`` prints (and the docs page is made of)."""
        profiles = (f"{cls.severity_in('default')} (default profile), "
                    f"{cls.severity_in('spml')} (spml profile)")
        head = (f"{cls.id} {cls.name} ({profiles})\n"
                f"Applies when: {cls.condition}\nMessage: {cls.message}\nFix: {cls.fix}\n")
        return head + "\n" + cls.doc() + "\n"
