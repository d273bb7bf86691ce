"""The `spml` command line: a thin layer over spml.flows and spml.toolkit."""

from __future__ import annotations

import json

import typer

from spml.cli import autoresearch, iteration, toolkit, validate, watchdog
from spml.cli._output import console
from spml.cli.demo import demo

app = typer.Typer(help="spml: ML experiment workflows as Prefect flows.", no_args_is_help=True)
app.add_typer(autoresearch.app, name="autoresearch")
app.add_typer(iteration.app, name="iteration")
app.add_typer(watchdog.app, name="watchdog")
app.add_typer(validate.app, name="validate")
app.add_typer(toolkit.app, name="toolkit")
app.command()(demo)


@app.command()
def schema(kind: str = typer.Argument("autoresearch", help="autoresearch or iteration.")) -> None:
    """Print the JSON Schema of a protocol's front matter."""
    from spml.protocols import autoresearch as autoresearch_protocol
    from spml.protocols import iteration as iteration_protocol

    schemas = {"autoresearch": autoresearch_protocol.protocol_json_schema,
               "iteration": iteration_protocol.protocol_json_schema}
    if kind not in schemas:
        console.print(f"[red]error:[/] kind must be 'autoresearch' or 'iteration', got {kind!r}")
        raise typer.Exit(2)
    typer.echo(json.dumps(schemas[kind](), indent=2))


def main() -> None:
    """Console-script entry point."""
    app()
