"""`spml validate static | explain | list`: the Validation Pyramid's L0 from the terminal."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spml.cli._output import EXIT_FAILED, EXIT_USAGE, console, guarded

app = typer.Typer(help="Validation Pyramid: L0 static checks of training code.",
                  no_args_is_help=True)


class Format(StrEnum):
    text = "text"
    json = "json"


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
) -> None:
    """Analyse training code; exit 0 without critical findings, 1 with any, 2 on bad usage
    (or when a check itself failed)."""
    from spml.toolkit.checks.engine import validate_static
    from spml.toolkit.checks.report import render_json, render_text

    report = guarded(lambda: validate_static(paths, _ids(select), _ids(ignore), config))
    text = (render_json(report) if output_format is Format.json
            else render_text(report, summary=summary))
    typer.echo(text, nl=False)
    if report.errors:  # a check's own bug: abnormal termination, like ruff's exit 2
        raise typer.Exit(EXIT_USAGE)
    if report.critical:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def explain(check_id: Annotated[str, typer.Argument(help="A check id, e.g. L0-06.")]) -> None:
    """Print a check's documentation: what it finds, why, a bad and a good example."""
    from spml.toolkit.checks import check_by_id

    typer.echo(guarded(lambda: check_by_id(check_id)).explain(), nl=False)


@app.command(name="list")
def list_checks() -> None:
    """Every check: id, name, severity and when it applies."""
    from spml.toolkit.checks import CHECKS

    table = Table("ID", "Name", "Severity", "Applies when", expand=True)
    for check in CHECKS:
        table.add_row(check.id, check.name, check.severity, check.condition)
    console.print(table)



