"""The L1 report: six stages, each PASS/FAIL/SKIP with a one-line summary and its evidence.

Rendered as SPML's one text block, as JSON, and as markdown for a Prefect artifact. A run that
failed or passed with warnings/anomalies ends with SPML's diagnostics (``diagnostics``: one
`spml.toolkit.diagnostics.Diagnosis.line` each, computed from its per-step records by `run_l1`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

from spml.toolkit.diagnostics import HEADING as DIAGNOSTICS_HEADING

StageStatus = Literal["PASS", "FAIL", "SKIP"]
STAGES = ("Data Loading", "Model Init", "Training", "Checkpoint", "Inference", "Evaluation")
Metric = float | int | str | bool | None
_WARNING = re.compile(r"^\s*warning\b|\banomaly\b", re.IGNORECASE)


@dataclass
class StageResult:
    """One stage's verdict. ``summary`` is the report line; ``evidence`` says why (numbers,
    file:line, the failing parameter); ``metrics`` are the measured values."""

    name: str
    status: StageStatus
    summary: str
    evidence: list[str] = field(default_factory=list)
    metrics: dict[str, Metric] = field(default_factory=dict)

    @classmethod
    def failed(cls, name: str, summary: str, *evidence: str) -> StageResult:
        return cls(name, "FAIL", summary, list(evidence))

    @classmethod
    def skipped(cls, name: str, why: str) -> StageResult:
        return cls(name, "SKIP", why)


@dataclass
class L1Report:
    """All stages of one L1 run, in order; PASS only when every stage passed."""

    target: str
    mode: str  # "entry" | "command"
    stages: list[StageResult]
    elapsed_s: float
    notes: list[str] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return len(self.stages) == len(STAGES) and all(s.status == "PASS" for s in self.stages)

    @property
    def warnings(self) -> list[str]:
        """Evidence lines that report a warning or an anomaly (a spike, a low MFU)."""
        return [line.strip() for stage in self.stages for line in stage.evidence
                if _WARNING.search(line)]

    @property
    def needs_diagnosis(self) -> bool:
        """Failed, or passed with warnings/anomalies: SPML's trees say where to look."""
        return not self.passed or bool(self.warnings)

    def text(self) -> str:
        """SPML's block: ``[Stage] STATUS summary`` plus indented evidence lines."""
        lines = ["=== L1 Runtime Validation Report ===", f"target: {self.target} ({self.mode})"]
        for stage in self.stages:
            lines.append(f"{'[' + stage.name + ']':<16} {stage.status} {stage.summary}")
            lines.extend(f"   {line}" for line in stage.evidence)
        passed = sum(s.status == "PASS" for s in self.stages)
        verdict = "PASS" if self.passed else "FAIL"
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"RESULT: {verdict} ({passed}/{len(STAGES)} stages)   "
                     f"Total time: {_duration(self.elapsed_s)}")
        if self.diagnostics:
            lines += [f"{DIAGNOSTICS_HEADING}:", *(f"  {d}" for d in self.diagnostics)]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, object]:
        return {"target": self.target, "mode": self.mode, "passed": self.passed,
                "elapsed_s": round(self.elapsed_s, 3), "notes": self.notes,
                "stages": [asdict(s) for s in self.stages], "diagnostics": self.diagnostics}

    def json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=str) + "\n"

    def markdown(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        lines = [f"# L1 runtime validation: {verdict}", "",
                 f"`{self.target}` ({self.mode}), {_duration(self.elapsed_s)}", "",
                 "| Stage | Status | Summary | Evidence |", "|---|---|---|---|"]
        for s in self.stages:
            evidence = "<br>".join(_cell(e) for e in s.evidence)
            lines.append(f"| {s.name} | {s.status} | {_cell(s.summary)} | {evidence} |")
        lines.extend(f"\n> {n}" for n in self.notes)
        if self.diagnostics:
            lines += ["", f"## {DIAGNOSTICS_HEADING}", "",
                      *(f"- {_cell(d)}" for d in self.diagnostics)]
        return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:04.1f}s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
