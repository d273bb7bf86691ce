"""`verification.md`: the verdict in YAML front matter, then the checklist and the evidence.

Front matter (machine-readable; `spml experiment next` and later tools read it)::

    verdict: effective | ineffective | inconclusive
    estimate: 0.0123            # the improvement, oriented so that positive is better
    interval: [0.004, 0.021]    # two-sided, at `confidence` (null: single runs)
    n: {baseline: 5, chosen: 5}
    statistics: effective       # the statistics alone, before the checklist
    ...

The final verdict is the statistical one, except that an ``effective`` result with a failed
integrity item of the checklist is ``inconclusive``: a gain measured on code that broke a
control, or on runs that printed NaN, is not evidence. Unmet review criteria are named in the
reason and leave the verdict alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spml.protocols.frontmatter import FENCE, dump_front_matter, read_front_matter
from spml.toolkit.verification.checklist import Item
from spml.toolkit.verification.statistics import Verdict, Verification

REPORT_FILENAME = "verification.md"
_MARK = {"pass": "✅ pass", "fail": "❌ fail", "unknown": "❔ unknown"}


@dataclass(frozen=True)
class Report:
    """Everything `verification.md` says."""

    stats: Verification
    metric: str
    direction: str
    commits: dict[str, str]                       # baseline, chosen
    arms: dict[str, list[tuple[int, float]]]      # side -> (seed, value) per fresh run
    items: list[Item]
    evidence: list[str] = field(default_factory=list)   # bullet lines
    plot: str = ""                                # the PNG's file name, beside the report

    @property
    def verdict(self) -> Verdict:
        """The statistics' verdict, unless the checklist failed under an ``effective`` one."""
        return "inconclusive" if self.stats.verdict == "effective" and self.failed else \
            self.stats.verdict

    @property
    def failed(self) -> list[Item]:
        """The integrity items of the checklist that failed."""
        return [item for item in self.items if item.status == "fail" and item.integrity]

    @property
    def reason(self) -> str:
        """Why the verdict is what it is, in a sentence."""
        if self.verdict != self.stats.verdict:
            names = ", ".join(item.name for item in self.failed)
            return (f"the statistics say effective ({self.stats.reason}), but the checklist "
                    f"failed ({names}): the gain is not evidence until those are fixed")
        unmet = [item for item in self.items if item.status == "fail" and not item.integrity]
        return self.stats.reason + "".join(f"; {item.name} not met ({item.detail})"
                                           for item in unmet)

    def front_matter(self) -> dict[str, Any]:
        """The report's YAML front matter."""
        s = self.stats
        interval = None if s.low is None else [_round(s.low), _round(s.high)]
        return {"verdict": self.verdict, "estimate": _round(s.improvement),
                "interval": interval, "n": {"baseline": s.n_baseline, "chosen": s.n_treatment},
                "metric": self.metric, "direction": self.direction,
                "min_effect": s.min_effect, "confidence": s.confidence, "method": s.method,
                "statistics": s.verdict, "baseline_commit": self.commits["baseline"],
                "chosen_commit": self.commits["chosen"],
                "checklist": {item.name: item.status for item in self.items}}

    def markdown(self) -> str:
        """The whole file."""
        lines = [FENCE, dump_front_matter(self.front_matter()).rstrip("\n"), FENCE, "",
                 f"# Verification — {self.verdict}", "", self.reason + ".", "",
                 *(f"- {line}" for line in self.stats.lines()[1:]), "", "## Checklist", "",
                 "| item | status | detail |", "|---|---|---|"]
        lines += [f"| {item.name} | {_MARK[item.status]} | {_cell(item.detail)} |"
                  for item in self.items]
        lines += ["", "## Fresh runs", "", f"| arm | commit | seed | {self.metric} |",
                  "|---|---|---|---|"]
        for side in ("baseline", "chosen"):
            lines += [f"| {side} | {self.commits[side][:12]} | {seed} | {value:.6g} |"
                      for seed, value in self.arms.get(side, [])]
        lines += ["", "## Evidence", "", *(f"- {line}" for line in self.evidence)]
        if self.plot:
            lines += ["", f"![{self.metric} per round and per seed]({self.plot})"]
        return "\n".join(lines) + "\n"


def read_report(path: Path) -> dict[str, Any]:
    """The front matter of a written `verification.md`."""
    return dict(read_front_matter(path).data)


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
