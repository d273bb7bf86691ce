"""The gates a subtask passes in `develop`: its tests, then (integration only) L0 and L1.

Each level is a plain function returning a `LevelResult`: passed or not, a one-line summary
for the task list, the full report an implementer needs to fix it, and the numbers the
conclusion cites. Everything runs as a real subprocess through the shared command runner
(process group, time limit) or through the Validation Pyramid's own engines.
"""

from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spml.toolkit.diagnostics import diagnostics_text as diagnostics_text  # re-exported
from spml.toolkit.process.runner import run_command

TESTS, L0, L1 = "tests", "L0", "L1"
TEST_TIMEOUT_S = 600.0
_PYTEST_COUNTS = re.compile(r"(\d+) (passed|failed|error|errors|skipped)")
_REPORT_TAIL = 60  # lines of pytest output an implementer gets


@dataclass(frozen=True)
class LevelResult:
    """One run of one level."""

    level: str
    passed: bool
    summary: str
    report: str
    data: dict[str, Any] = field(default_factory=dict)


def run_tests(exp_dir: Path, targets: list[str], log_dir: Path | None = None,
              timeout_s: float = TEST_TIMEOUT_S) -> LevelResult:
    """``python -m pytest`` on ``targets`` inside ``exp_dir`` (the project's own tests)."""
    if not targets:
        return LevelResult(TESTS, False, "no test file named",
                           "The subtask names no test file; add one to its Unit Tests / "
                           "Integration Tests field (e.g. `tests/test_model.py`).")
    missing = [t for t in targets if not (exp_dir / t.split("::")[0]).is_file()]
    if missing:
        return LevelResult(TESTS, False, f"missing test file(s): {', '.join(missing)}",
                           "These test files do not exist yet (write the tests first): "
                           + ", ".join(missing))
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="spml-tests-"))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets]
    result = run_command(command, cwd=exp_dir, log_dir=log_dir, name="pytest",
                         time_limit_s=timeout_s, env={"PYTHONDONTWRITEBYTECODE": "1"})
    output = result.stdout_text() + result.stderr_tail(_REPORT_TAIL)
    counts = {kind.rstrip("s"): int(n) for n, kind in _PYTEST_COUNTS.findall(output)}
    passed_tests = counts.get("passed", 0)
    tail = "\n".join(output.splitlines()[-_REPORT_TAIL:])
    if result.ok and passed_tests:
        return LevelResult(TESTS, True, f"{passed_tests} tests passing", tail,
                           {"passed": passed_tests, "targets": targets})
    failed = counts.get("failed", 0) + counts.get("error", 0)
    why = (f"{failed} failing, {passed_tests} passing" if failed
           else f"pytest {result.describe()}")
    return LevelResult(TESTS, False, why, tail, {"passed": passed_tests, "failed": failed})


def run_static(exp_dir: Path, profile: str = "spml") -> LevelResult:
    """L0 with SPML's profile: a critical finding fails the level."""
    from spml.toolkit.checks.engine import validate_static
    from spml.toolkit.checks.report import render_text

    report = validate_static([exp_dir], profile=profile)
    summary = f"{report.critical} critical, {report.warnings} warnings"
    passed = not report.critical and not report.errors
    return LevelResult(L0, passed, summary, render_text(report, summary=False),
                       {"critical": report.critical, "warnings": report.warnings})


def run_runtime(exp_dir: Path, overrides: dict[str, Any] | None = None,
                log_dir: Path | None = None) -> LevelResult:
    """L1 with the project's [tool.spml.validate.runtime] settings."""
    from spml.toolkit.runtime.run import load_runtime_settings, run_l1

    settings = load_runtime_settings(exp_dir, overrides)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="spml-l1-"))
    report = run_l1(exp_dir, settings, log_dir)
    passed_stages = sum(s.status == "PASS" for s in report.stages)
    summary = f"{'PASS' if report.passed else 'FAIL'} ({passed_stages}/6 stages)"
    # run_l1 ends a failed (or warned) report with SPML's diagnostics: where to look first.
    return LevelResult(L1, report.passed, summary, report.text(), report.as_dict())
