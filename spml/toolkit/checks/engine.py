"""Run the selected checks on a project and collect one report."""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from spml.errors import SpmlError
from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks import CHECKS, check_by_id
from spml.toolkit.checks._base import Check, Finding
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import Project, SourceFile

# UNCHECKED: the check looks at the training loop and none was found; nothing was checked,
# which is neither a pass nor a finding.
Status = Literal["PASS", "FAIL", "N/A", "UNCHECKED", "ERROR"]
NO_LOOP = ("no training loop found: no loop runs backward(), directly or through a function "
           "of the project it calls")


@dataclass
class CheckResult:
    check: type[Check]
    status: Status
    reason: str = ""
    findings: list[Finding] = field(default_factory=list)
    profile: str = "default"

    @property
    def severity(self) -> str:
        """The check's severity in the profile the report was made with."""
        return self.check.severity_in(self.profile)


@dataclass
class Report:
    files: list[str]
    lines: int
    results: list[CheckResult]
    elapsed_s: float
    context_files: int = 0  # local modules read because the analysed files import them
    training_loop: bool = True

    @property
    def unchecked(self) -> list[CheckResult]:
        """Checks that could not run because no training loop was found."""
        return [r for r in self.results if r.status == "UNCHECKED"]

    @property
    def findings(self) -> list[Finding]:
        return sorted(f for r in self.results for f in r.findings)

    @property
    def critical(self) -> int:
        return sum(f.severity == "critical" for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == "warning" for f in self.findings)

    @property
    def errors(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "ERROR"]

    @property
    def verdict(self) -> str:
        """SPML's review verdict: a critical finding blocks, warnings only comment."""
        if self.critical or self.errors:
            return "REQUEST_CHANGES"
        return "COMMENT" if self.warnings or self.unchecked else "APPROVE"


def selected_checks(select: Sequence[str], ignore: Sequence[str]) -> list[type[Check]]:
    for check_id in [*select, *ignore]:
        if check_id != "ALL":
            check_by_id(check_id)  # raises with the list of known ids
    chosen = CHECKS if "ALL" in select else tuple(c for c in CHECKS if c.id in select)
    return [] if "ALL" in ignore else [c for c in chosen if c.id not in ignore]


def analyse(paths: Iterable[Path], config: ValidateConfig | None = None,
            config_dir: Path | None = None) -> Report:
    """Parse every file under ``paths`` once and run the configured checks on the whole."""
    config = config or ValidateConfig()
    started = time.perf_counter()
    project = Project.load(paths, config.exclude)
    facts = Facts(project, config)
    results = [_run_one(check(), facts, config, config_dir)
               for check in selected_checks(config.select, config.ignore)]
    has_loop = bool(facts.training_loops)
    if not has_loop:
        results = [_unchecked(r) for r in results]
    return Report([f.display for f in project.targets], project.line_count, results,
                  time.perf_counter() - started, len(project.files) - len(project.targets),
                  has_loop)


def _unchecked(result: CheckResult) -> CheckResult:
    """A check N/A only for want of a training loop did not check anything: say so."""
    if result.status == "N/A" and ("training loop" in result.reason
                                    or "backward()" in result.reason):
        return replace(result, status="UNCHECKED", reason=NO_LOOP)
    return result


def _run_one(check: Check, facts: Facts, config: ValidateConfig,
             config_dir: Path | None) -> CheckResult:
    profile = config.profile
    try:
        applicability = check.applicability(facts)
        if not applicability.applies:
            return CheckResult(type(check), "N/A", applicability.reason, profile=profile)
        # An excluded module read only to resolve names is not reported on.
        by_path = {s.display: s for s in facts.project.files if not s.excluded}
        # Findings in imported local modules are reported too: the named files run that code
        # (a pre-commit run on a staged train.py must not PASS a bug in its model.py).
        severity = check.severity_in(profile)
        unparsed = {u.display for u in facts.project.unparsable}
        findings = merge_duplicates(
            replace(f, severity=severity) for f in check.run(facts)
            if f.path in unparsed or (f.path in by_path and not _suppressed(
                f, by_path[f.path], config, config_dir)))
    except SpmlError:
        raise
    except Exception as exc:  # noqa: BLE001 - a check's own bug must not hide the others
        return CheckResult(type(check), "ERROR", f"internal error: {type(exc).__name__}: {exc}",
                           profile=profile)
    reason = applicability.reason or check.runtime_note
    return CheckResult(type(check), "FAIL" if findings else "PASS", reason, findings, profile)


def merge_duplicates(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per defect and place: the same check with the same message on the same
    line (a helper with ten ``print`` calls, called once per step, is one problem at that
    call) is reported once, at its first column, with the notes of all of them merged."""
    groups: dict[tuple[str, int, str, str], list[Finding]] = {}
    for finding in sorted(set(findings)):
        groups.setdefault((finding.path, finding.line, finding.id, finding.message),
                          []).append(finding)
    return sorted(replace(same[0], note=merge_notes([f.note for f in same]))
                  for same in groups.values())


NOTE_AT = re.compile(r"^(?P<text>.*) \((?P<file>[^()]*?):(?P<line>\d+)\)$")
MAX_NOTES = 3


def merge_notes(notes: Sequence[str]) -> str:
    """``reaches print() in bar (utils.py:9)`` + ``... (utils.py:12)`` ->
    ``reaches print() in bar (utils.py:9, 12)``; other notes joined with ``; ``."""
    merged: dict[tuple[str, str], list[str]] = {}
    for note in notes:
        if not note:
            continue
        match = NOTE_AT.match(note)
        key = (match["text"], match["file"]) if match else (note, "")
        lines = merged.setdefault(key, [])
        if match and match["line"] not in lines:
            lines.append(match["line"])
    parts = [f"{text} ({file}:{', '.join(sorted(lines, key=int))})" if file else text
             for (text, file), lines in merged.items()]
    if len(parts) > MAX_NOTES:
        parts = [*parts[:MAX_NOTES], f"and {len(parts) - MAX_NOTES} more"]
    return "; ".join(parts)


def _suppressed(finding: Finding, source: SourceFile | None, config: ValidateConfig,
                config_dir: Path | None) -> bool:
    if source is not None and source.ignored(finding.line, finding.id):
        return True
    if source is None or not config.per_file_ignores:
        return False
    path = source.path
    rel = path.relative_to(config_dir).as_posix() if config_dir and path.is_relative_to(
        config_dir) else path.as_posix()
    return any(finding.id in ids or "ALL" in ids for glob, ids in config.per_file_ignores.items()
               if fnmatch.fnmatch(rel, glob) or fnmatch.fnmatch(path.name, glob))


def validate_static(paths: Sequence[Path], select: Sequence[str] | None = None,  # noqa: PLR0913
                    ignore: Sequence[str] | None = None,
                    config_file: Path | None = None, profile: str | None = None,
                    exclude: Sequence[str] = ()) -> Report:
    """``spml validate static``: the config from ``config_file`` or the nearest
    pyproject.toml above the first path, then the command line's select/ignore on top."""
    from spml.toolkit.checks.config import find_pyproject, load_config

    config_file = config_file or find_pyproject(paths[0] if paths else Path.cwd())
    config, config_dir = load_config(config_file)
    updates: dict[str, object] = {}
    if profile:
        updates["profile"] = profile
    if exclude:
        updates["exclude"] = [*config.exclude, *exclude]
    if select:
        updates["select"] = [s.strip().upper() for s in select]
    if ignore:
        updates["ignore"] = [*config.ignore, *(s.strip().upper() for s in ignore)]
    if updates:
        config = ValidateConfig.model_validate({**config.model_dump(), **updates})
    return analyse(paths, config, config_dir)
