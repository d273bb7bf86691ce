"""`develop`: each subtask through its gates, with SPML's fix loop (§1.8, §2.2).

A subtask that is not ticked gets the implementer first (when one is configured), then its
levels in order: its tests; for the ``[INTEGRATION]`` subtask also L0 and L1. A failed level
sends its report to the implementer and every level runs again (a fix for L1 must not break
the tests or L0; SPML re-runs only the failed level, which would miss that). Each level keeps
its own count of consecutive failures; the fifth one at a level, or the first one when no
implementer is configured (nothing would change between tries), asks ``decide`` what to do:
``retry`` (the count starts over), ``skip`` (leave the subtask unticked and go on) or
``stop``. The flow answers ``decide`` with a Prefect pause; the CLI stops with the report.

The implementer is any command (a coding agent, a script), configured like the Auto Research
researcher: ``{prompt_file}``, ``{subtask}``, ``{level}``, ``{attempt}`` and ``{workdir}`` are
filled in; the prompt file holds the subtask's fields and the failing level's report.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from spml.errors import ProtocolError
from spml.protocols.plan import Subtask
from spml.toolkit.pipeline.levels import LevelResult
from spml.toolkit.process.result import CommandResult
from spml.toolkit.process.runner import run_command, supervisor_path

MAX_CONSECUTIVE_FAILURES = 5
IMPLEMENTER_TIMEOUT_S = 1800.0
IMPLEMENT = "implement"  # the level named in the first implementer call of a subtask
PLACEHOLDERS = ("prompt_file", "subtask", "level", "attempt", "workdir")
Decision = Literal["retry", "skip", "stop"]
Level = tuple[str, Callable[[], LevelResult]]


@dataclass(frozen=True)
class FixRequest:
    """One call of the implementer."""

    subtask: Subtask
    level: str       # `IMPLEMENT`, or the level that failed
    attempt: int     # 1 = the first implementation; then one per fix
    report: str      # what failed, verbatim ("" for the first implementation)


@dataclass(frozen=True)
class Stuck:
    """A level that failed too often (or with nobody to fix it): the person decides."""

    subtask: Subtask
    level: str
    failures: int
    last: LevelResult
    implementer: bool
    implementer_problem: str = ""  # how the implementer's last run failed ("" if it ran)

    def message(self) -> str:
        who = (f"{self.failures} consecutive failures" if self.implementer
                else "no implementer is configured to fix it")
        problem = f"; {self.implementer_problem}" if self.implementer_problem else ""
        return (f"Subtask {self.subtask.number} '{self.subtask.title}' is stuck at "
                f"{self.level}: {self.last.summary} ({who}){problem}")


@dataclass
class SubtaskOutcome:
    """How one subtask ended: ``done``, ``skipped`` or ``stopped``."""

    status: Literal["done", "skipped", "stopped"]
    results: dict[str, LevelResult] = field(default_factory=dict)
    fixes: int = 0
    stuck: Stuck | None = None


def develop_subtask(subtask: Subtask, levels: list[Level],  # noqa: PLR0913
                    implement: Callable[[FixRequest], str | None] | None,
                    decide: Callable[[Stuck], Decision],
                    on_phase: Callable[[str], None] = lambda _: None,
                    limit: int = MAX_CONSECUTIVE_FAILURES) -> SubtaskOutcome:
    """Run ``levels`` until all pass, calling ``implement`` on each failure (module doc)."""
    attempt, problem = 0, ""
    if implement is not None:
        attempt = 1
        on_phase("Implementation")
        problem = implement(FixRequest(subtask, IMPLEMENT, attempt, "")) or ""
    failures: dict[str, int] = {}
    while True:
        results, failed = _run_levels(levels, on_phase)
        if failed is None:
            return SubtaskOutcome("done", results, max(attempt - 1, 0))
        failures[failed.level] = failures.get(failed.level, 0) + 1
        for name in results:
            if name != failed.level:
                failures[name] = 0
        count = failures[failed.level]
        if implement is None or count >= limit:
            stuck = Stuck(subtask, failed.level, count, failed, implement is not None, problem)
            decision = decide(stuck)
            if decision == "retry":
                failures[failed.level] = 0
                continue
            return SubtaskOutcome("skipped" if decision == "skip" else "stopped", results,
                                  max(attempt - 1, 0), stuck)
        attempt += 1
        on_phase(f"Fix loop ({failed.level}, attempt {count}/{limit})")
        problem = implement(FixRequest(subtask, failed.level, attempt, failed.report)) or ""


def _run_levels(levels: list[Level], on_phase: Callable[[str], None]
                ) -> tuple[dict[str, LevelResult], LevelResult | None]:
    results: dict[str, LevelResult] = {}
    for name, run in levels:
        on_phase(name)
        result = run()
        results[name] = result
        if not result.passed:
            return results, result
    return results, None


def check_implementer_command(command: str) -> str:
    """The command, if its placeholders are known (else a ProtocolError naming them)."""
    try:
        command.format(**dict.fromkeys(PLACEHOLDERS, ""))
    except (KeyError, IndexError, ValueError) as exc:
        names = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
        raise ProtocolError(f"implementer command may only use the placeholders {names} "
                            f"(write {{{{ and }}}} for literal braces); problem: {exc}") from None
    return command


def prompt_text(request: FixRequest, plan_header: dict[str, str]) -> str:
    """What the implementer reads: the subtask, the rules and (for a fix) the report."""
    sub = request.subtask
    fields = "\n".join(f"**{label}:** {value}" for label, value in sub.fields.items())
    task = ("Implement this subtask: write its tests first, see them fail, then the code."
            if request.level == IMPLEMENT else
            f"The {request.level} level failed. Fix the cause shown in the report below; "
            "change only what the fix needs.")
    parts = [f"# Subtask {sub.number}: {sub.title} (attempt {request.attempt})", "",
             f"Hypothesis: {plan_header.get('Hypothesis', '')}", "", fields, "", task, "",
             "Rules: core code never imports tests or validation code; do not weaken or "
             "delete tests to make them pass; do not touch files other subtasks own unless the "
             "fix needs it (say so)."]
    if request.report:
        parts += ["", f"## {request.level} report", "", "```", request.report.rstrip(), "```"]
    return "\n".join(parts) + "\n"


def run_implementer(command: str, exp_dir: Path, request: FixRequest, prompt: str,
                    log_dir: Path, timeout_s: float = IMPLEMENTER_TIMEOUT_S) -> CommandResult:
    """Write the prompt file and run the implementer command in ``exp_dir``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = f"subtask-{request.subtask.number}-attempt-{request.attempt}"
    prompt_file = log_dir / f"{stem}.md"
    prompt_file.write_text(prompt, encoding="utf-8")
    values = {"prompt_file": str(prompt_file), "subtask": str(request.subtask.number),
              "level": request.level, "attempt": str(request.attempt),
              "workdir": str(exp_dir)}
    filled = command.format(**{k: shlex.quote(v) for k, v in values.items()})
    return run_command(filled, cwd=exp_dir, log_dir=log_dir, name=f"implementer-{stem}",
                       env=supervisor_path(), time_limit_s=timeout_s)
