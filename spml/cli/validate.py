"""`spml validate static | runtime | explain | list`: the Validation Pyramid from the terminal."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spml.cli._output import (
    EXIT_FAILED,
    EXIT_USAGE,
    console,
    err_console,
    stop_signals_interrupt,
    use_json_errors,
)

app = typer.Typer(help="Validation Pyramid: L0 static checks of training code.",
                  no_args_is_help=True)


class Format(StrEnum):
    text = "text"
    json = "json"


class Profile(StrEnum):
    default = "default"
    spml = "spml"


def _ids(values: list[str] | None) -> list[str]:
    return [i.strip() for v in values or [] for i in v.split(",") if i.strip()]


@app.command()
def static(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to analyse.")],
    output_format: Annotated[Format, typer.Option("--format", help="text or json.")] = Format.text,
    select: Annotated[list[str] | None, typer.Option(help="Only these ids (L0-06,L0-19).")] = None,
    ignore: Annotated[list[str] | None, typer.Option(help="Skip these ids.")] = None,
    config: Annotated[Path | None, typer.Option(help="pyproject.toml to read.")] = None,
    summary: Annotated[bool, typer.Option(help="Print the per-check summary.")] = True,
    exclude: Annotated[list[str] | None, typer.Option(
        help="Skip files or folders matching this glob (repeatable).")] = None,
    profile: Annotated[Profile | None, typer.Option(
        help="default (critical = a correctness defect) or spml (SPML's mandatory practices "
        "are critical too); overrides the config.")] = None,
) -> None:
    """Analyse training code; exit 0 without critical findings, 1 with any, 2 on bad usage
    (or when a check itself failed)."""
    use_json_errors(output_format is Format.json)
    from spml.toolkit.checks.engine import validate_static
    from spml.toolkit.checks.report import render_json, render_text

    report = validate_static(paths, _ids(select), _ids(ignore), config,
                             profile.value if profile else None, exclude or [])
    text = (render_json(report) if output_format is Format.json
            else render_text(report, summary=summary))
    typer.echo(text, nl=False)
    if report.errors:  # a check's own bug: abnormal termination, like ruff's exit 2
        raise typer.Exit(EXIT_USAGE)
    if report.critical:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def runtime(
    project: Annotated[Path, typer.Argument(help="The project folder (its pyproject.toml "
                                                 "holds \\[tool.spml.validate.runtime]).")],
    entry: Annotated[str | None, typer.Option(help="module:function entry point.")] = None,
    train_command: Annotated[str | None, typer.Option(help="Training command.")] = None,
    eval_command: Annotated[str | None, typer.Option(help="Eval command ({checkpoint}).")] = None,
    metric: Annotated[str | None, typer.Option(help="Metric the eval command prints.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="SPML_MAX_STEPS.")] = None,
    time_limit: Annotated[str | None, typer.Option(help="SPML_TIME_LIMIT (300, 5min).")] = None,
    output_format: Annotated[Format, typer.Option("--format", help="text or json.")] = Format.text,
    static: Annotated[bool, typer.Option(help="Run L0 first; refuse L1 on a critical finding.")
                      ] = True,
    log_dir: Annotated[Path | None, typer.Option(help="Where logs and checkpoints go.")] = None,
) -> None:
    """L1: run the assembled pipeline for a limited time and judge it (six stages).

    Exit 0 only when every stage passed; 1 on a failed stage or when L0 has a critical
    finding; 2 on a bad or missing configuration.
    """
    use_json_errors(output_format is Format.json)
    from spml.toolkit.checks.engine import validate_static
    from spml.toolkit.checks.report import render_text
    from spml.toolkit.runtime.run import load_runtime_settings, require_entry_module, run_l1

    overrides = {"entry": entry, "train_command": train_command, "eval_command": eval_command,
                 "metric": metric, "max_steps": max_steps, "time_limit": time_limit}
    settings = load_runtime_settings(project, overrides)
    require_entry_module(settings, project, "--entry" if entry else
                         "[tool.spml.validate.runtime] entry")
    if static:
        l0 = validate_static([project])
        if l0.critical:
            typer.echo(render_text(l0, summary=False), nl=False)
            typer.echo(f"L1 refused: L0 has {l0.critical} critical finding(s); fix them first "
                       "(or pass --no-static)")
            raise typer.Exit(EXIT_FAILED)
    try:
        with stop_signals_interrupt():
            report = run_l1(project, settings, log_dir)
    except KeyboardInterrupt as exc:
        err_console.print(f"interrupted ({exc or 'Ctrl-C'}): the runs L1 started were stopped")
        raise typer.Exit(130) from None
    typer.echo(report.json() if output_format is Format.json else report.text(), nl=False)
    if not report.passed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def explain(check_id: Annotated[str, typer.Argument(help="A check id, e.g. L0-06.")]) -> None:
    """Print a check's documentation: what it finds, why, a bad and a good example."""
    from spml.toolkit.checks import check_by_id

    typer.echo(check_by_id(check_id).explain(), nl=False)


@app.command(name="list")
def list_checks() -> None:
    """Every check: id, name, severity per profile and when it applies."""
    from spml.toolkit.checks import CHECKS

    table = Table("ID", "Name", "default", "spml", "Applies when", expand=True)
    for check in CHECKS:
        table.add_row(check.id, check.name, check.severity_in("default"),
                      check.severity_in("spml"), check.condition)
    console.print(table)



