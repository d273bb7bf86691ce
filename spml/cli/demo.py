"""`spml demo [DIR]`: a short Auto Research loop on a bundled CPU example."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spml.cli._output import console, guarded, quiet_prefect


def demo(
    directory: Annotated[Path, typer.Argument(help="New directory for the demo.")] = Path(
        "spml-demo"),
    rounds: Annotated[int | None, typer.Option(help="Rounds (default: the protocol's).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    """Copy the bundled example into DIR, make it a git repo, and run Auto Research on it."""
    quiet_prefect(verbose)

    def _demo() -> None:
        from spml.cli._loop import run_loop
        from spml.protocols.autoresearch import PROTOCOL_FILENAME
        from spml.toolkit.examples import DEMO_EXAMPLE, copy_example
        from spml.toolkit.loop.experiment import Experiment
        from spml.toolkit.loop.session import STAGE

        target = copy_example(DEMO_EXAMPLE, directory.resolve())
        console.print(f"copied the [bold]{DEMO_EXAMPLE}[/] example to {target} (a new git repo)")
        run_loop(target, rounds)
        branch = Experiment.locate(target, PROTOCOL_FILENAME).branch(STAGE)
        console.print(f"inspect: git -C {target} log --oneline {branch}  ·  "
                      f"cat {target}/experiences.md", highlight=False)

    guarded(_demo)
