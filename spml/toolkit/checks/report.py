"""The report in SPML's review format (text) and as JSON."""

from __future__ import annotations

import json

from spml.toolkit.checks._base import Finding
from spml.toolkit.checks.engine import NO_LOOP, CheckResult, Report

ORDER = {"ERROR": 0, "FAIL": 1, "UNCHECKED": 2, "PASS": 3, "N/A": 4}


def _sort_key(result: CheckResult) -> tuple[int, int, str]:
    return ORDER[result.status], result.severity != "critical", result.check.id


def summary_lines(report: Report) -> list[str]:
    """``[PASS|FAIL|N/A] L0-NN name (severity) — reason``, critical failures first."""
    imported = f" + {report.context_files} they import" if report.context_files else ""
    lines = [f"ML Static Analysis Results (L0: {len(report.files)} files{imported}, "
             f"{report.lines} lines, {report.elapsed_s:.2f} s)"]
    for result in sorted(report.results, key=_sort_key):
        check = result.check
        reason = result.reason
        if result.status == "FAIL":
            count = len(result.findings)
            reason = f"{count} finding{'s' * (count != 1)}" + (f"; {reason}" if reason else "")
        tag = f"[{result.status}]".ljust(7)
        if result.status == "UNCHECKED":
            reason = "could not run: no training loop found"
        lines.append(f"{tag} {check.id} {check.name} ({result.severity})"
                     + (f" — {reason}" if reason else ""))
    if report.unchecked:
        lines.append(f"Not checked: {NO_LOOP}; {len(report.unchecked)} checks could not run ("
                     + ", ".join(r.check.id for r in report.unchecked) + ")")
    lines.append(f"Critical: {report.critical} · Warnings: {report.warnings}"
                 + (f" · Check errors: {len(report.errors)}" if report.errors else ""))
    lines.append(f"Verdict: {report.verdict}")
    return lines


def finding_text(finding: Finding) -> str:
    """A finding as the terminal shows it: ``train.py:12:5 L0-01 [critical] message``, then
    its note and fix; the severity on the line says which lines made the exit status 1
    (also with ``--no-summary``)."""
    head, _, rest = finding.text().partition("\n")
    where = f"{finding.path}:{finding.line}:{finding.col} {finding.id} "
    line = where + f"[{finding.severity}] " + head.removeprefix(where)
    return line + ("\n" + rest if rest else "")


def render_text(report: Report, summary: bool = True) -> str:
    parts = [finding_text(f) for f in report.findings]
    if summary:
        parts.extend(["", *summary_lines(report)] if parts else summary_lines(report))
    return "\n".join(parts) + "\n"


def render_json(report: Report) -> str:
    return json.dumps({
        "findings": [f.as_dict() for f in report.findings],
        "checks": [{"id": r.check.id, "name": r.check.name, "severity": r.severity,
                    "status": r.status, "reason": r.reason, "findings": len(r.findings)}
                   for r in sorted(report.results, key=lambda r: r.check.id)],
        "training_loop": report.training_loop,
        "unchecked": [r.check.id for r in report.unchecked],
        "files": report.files,
        "lines": report.lines,
        "elapsed_s": round(report.elapsed_s, 4),
        "critical": report.critical,
        "warnings": report.warnings,
        "verdict": report.verdict,
    }, indent=2) + "\n"


def _problem(finding: Finding) -> str:
    """The message, and the note saying where the cause continues (a helper), if any."""
    return f"{finding.message} ({finding.note})" if finding.note else finding.message


def render_markdown(report: Report) -> str:
    """The report for a Prefect markdown artifact: verdict, findings table, check table."""
    lines = [f"# L0 static checks: {report.verdict}", "",
             f"{len(report.files)} files, {report.lines} lines, {report.elapsed_s:.2f} s · "
             f"critical {report.critical} · warnings {report.warnings}", ""]
    if report.findings:
        lines += ["| Where | Check | Severity | Problem | Fix |", "|---|---|---|---|---|"]
        lines += [f"| `{f.path}:{f.line}:{f.col}` | {f.id} | {f.severity} | "
                  f"{_cell(_problem(f))} | {_cell(f.fix)} |" for f in report.findings]
        lines.append("")
    lines += ["| Check | Status | Reason |", "|---|---|---|"]
    lines += [f"| {r.check.id} {r.check.name} ({r.severity}) | {r.status} | "
              f"{_cell(r.reason)} |" for r in sorted(report.results, key=_sort_key)]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
