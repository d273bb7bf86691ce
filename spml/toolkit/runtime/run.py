"""L1 from settings: read ``[tool.spml.validate.runtime]``, run the entry point or the
commands, return one report."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spml.errors import ProtocolError
from spml.protocols.validate import RuntimeSettings
from spml.toolkit.checks.config import find_pyproject, load_config
from spml.toolkit.diagnostics import diagnosis_lines, evidence_from_l1_log_dir
from spml.toolkit.runtime.report import L1Report
from spml.toolkit.runtime.thresholds import Thresholds


class L1NotConfigured(ProtocolError):
    """The project has no L1 settings (neither an entry point nor a training command)."""


NOT_CONFIGURED = ("L1 is not configured: add [tool.spml.validate.runtime] with entry = "
                  "'module:function' or train-command = '...' to {where}, or pass --entry / "
                  "--train-command")


def load_runtime_settings(project: Path, overrides: dict[str, Any] | None = None
                          ) -> RuntimeSettings:
    """The project's L1 settings (its pyproject.toml), with ``overrides`` (CLI flags) on top."""
    if not project.is_dir():
        raise ProtocolError(f"{project}: no such folder (L1 runs a project folder)")
    pyproject = find_pyproject(project)
    config, _ = load_config(pyproject)
    flags = by_alias({k: v for k, v in (overrides or {}).items() if v is not None})
    merged = {**by_alias(config.runtime or {}), **flags}
    if not (merged.get("entry") or merged.get("train-command")):
        raise L1NotConfigured(NOT_CONFIGURED.format(
            where=pyproject or project / "pyproject.toml"))
    try:
        return RuntimeSettings.model_validate(merged)
    except ValidationError as exc:
        raise ProtocolError(_blame(exc, flags, pyproject)) from None


def _blame(exc: ValidationError, flags: dict[str, Any], pyproject: Path | None) -> str:
    """Each bad value named where it came from: a command-line flag, or the pyproject table."""
    table = f"[tool.spml.validate.runtime] in {pyproject}" if pyproject else \
        "[tool.spml.validate.runtime]"
    parts = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        if field in flags:
            parts.append(f"--{field} {flags[field]!r}: {message} (command line)")
        elif field:
            parts.append(f"{table}: {field}: {message}")
        else:  # a rule across fields: the flags and the table together broke it
            parts.append(f"{table}{' with the command-line flags' if flags else ''}: {message}")
    return "; ".join(parts)


def require_entry_module(settings: RuntimeSettings, project: Path, source: str) -> None:
    """Refuse an entry point whose module cannot be found: a configuration error (the CLI's
    exit 2), where L1 would only report a failed stage (the pipeline did not load).

    Args:
        settings: The L1 settings; nothing to check in command mode.
        project: The project folder (L1 imports the entry module from there).
        source: Where the entry point was set, for the message (a flag or the table).
    """
    if not settings.entry:
        return
    top = settings.entry.split(":", 1)[0].split(".", 1)[0]
    if importlib.machinery.PathFinder.find_spec(top, [str(project.resolve()), *sys.path]):
        return
    raise ProtocolError(f"{source} {settings.entry!r} names module {top!r}, which is not in the "
                        f"project folder {project.resolve()} (no {top}.py or {top}/) nor "
                        "installed. Fix the entry point 'module:function' or the project folder.")


def by_alias(values: dict[str, Any]) -> dict[str, Any]:
    """``max_steps`` and ``max-steps`` mean the same field: key everything by its alias."""
    aliases = {name: field.alias or name for name, field in RuntimeSettings.model_fields.items()}
    return {aliases.get(key, key): value for key, value in values.items()}


def thresholds_of(settings: RuntimeSettings) -> Thresholds:
    known = {f.name for f in dataclasses.fields(Thresholds)}
    unknown = sorted(set(settings.thresholds) - known)
    if unknown:
        raise ProtocolError(f"[tool.spml.validate.runtime] thresholds: unknown {unknown}; "
                            f"known: {sorted(known)}")
    values: dict[str, float | int] = {}
    for name, value in settings.thresholds.items():
        if isinstance(getattr(Thresholds(), name), int):  # inference_passes = 5, not 5.0
            if value != int(value) or value < 1:
                raise ProtocolError(f"[tool.spml.validate.runtime] thresholds.{name} must be "
                                    f"a whole number >= 1, got {value}")
            value = int(value)
        values[name] = value
    return dataclasses.replace(Thresholds(), **values)


def run_l1(project: Path, settings: RuntimeSettings, log_dir: Path | None = None) -> L1Report:
    """Run L1 on ``project`` (a folder); logs and the checkpoint go to ``log_dir``."""
    from spml.toolkit.runtime.command import CommandSettings, run_commands
    from spml.toolkit.runtime.entry import EntryOptions, run_entry_with

    project = project.resolve()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="spml-l1-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    thresholds = thresholds_of(settings)
    if settings.entry:
        report = run_entry_with(settings.entry, project, EntryOptions(
            log_dir=log_dir, max_steps=settings.max_steps, time_limit_s=settings.time_limit,
            total_timeout_s=settings.total_timeout, thresholds=thresholds, seed=settings.seed))
    else:
        assert settings.train_command is not None
        commands = CommandSettings(
            train_command=settings.train_command, eval_command=settings.eval_command,
            metric=settings.metric, checkpoint_glob=settings.checkpoint_glob,
            max_steps=settings.max_steps, time_limit_s=settings.time_limit,
            limit_check_s=settings.limit_check, total_timeout_s=settings.total_timeout,
            seed=settings.seed)
        report = run_commands(commands, project, thresholds=thresholds, log_dir=log_dir)
    return add_diagnostics(report, log_dir, thresholds)


def add_diagnostics(report: L1Report, log_dir: Path, thresholds: Thresholds) -> L1Report:
    """A failed run, or one that passed with warnings/anomalies, gets SPML's diagnostics from
    the per-step records it left in ``log_dir``; no records, no diagnostics (never a guess)."""
    if report.needs_diagnosis:
        evidence = evidence_from_l1_log_dir(log_dir, report.mode)
        report.diagnostics = diagnosis_lines(evidence, thresholds)
    return report
