"""The `spml` command line: a thin layer over spml.flows and spml.toolkit."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from spml.cli import autoresearch, experiment, iteration, pipeline, toolkit, validate, watchdog
from spml.cli._output import SpmlGroup, start_invocation
from spml.cli.demo import demo
from spml.cli.verify import verify
from spml.errors import SpmlError

app = typer.Typer(cls=SpmlGroup, no_args_is_help=True)
app.add_typer(autoresearch.app, name="autoresearch")
app.add_typer(iteration.app, name="iteration")
app.add_typer(watchdog.app, name="watchdog")
app.add_typer(validate.app, name="validate")
app.add_typer(toolkit.app, name="toolkit")
app.add_typer(pipeline.design_app, name="design")
app.add_typer(pipeline.plan_app, name="plan")
app.command()(pipeline.develop)
app.command()(pipeline.handoff)
app.add_typer(experiment.app, name="experiment")
app.command()(demo)
app.command()(verify)


@app.callback()
def options(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show the traceback of an error, and Prefect's logs.")] = False,
            ) -> None:
    """spml: ML experiment workflows as Prefect flows.

    Exit 0: success. Exit 1: the work ran and failed (a failed baseline or check).

    Exit 2: bad input (protocol, config, arguments, git state), as one message (-v: traceback).
    """
    start_invocation(verbose)


@app.command()
def schema(kind: str = typer.Argument(
        "autoresearch", help="autoresearch, iteration, design or plan.")) -> None:
    """Print the JSON Schema of a protocol's front matter, the design doc's front matter, or
    the plan's parsed structure."""
    from spml.protocols import autoresearch as autoresearch_protocol
    from spml.protocols import iteration as iteration_protocol
    from spml.protocols.design import design_json_schema
    from spml.protocols.plan import plan_json_schema

    schemas = {"autoresearch": autoresearch_protocol.protocol_json_schema,
               "iteration": iteration_protocol.protocol_json_schema,
               "design": design_json_schema, "plan": plan_json_schema}
    if kind not in schemas:
        raise SpmlError(f"kind must be one of {', '.join(schemas)}, got {kind!r}.")
    typer.echo(json.dumps(schemas[kind](), indent=2))


def main() -> None:
    """Console-script entry point."""
    app()
