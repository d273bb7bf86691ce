"""`spml demo [DIR]`: a short Auto Research loop on a bundled CPU example."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spml.cli._output import console, quiet_prefect
from spml.errors import ProtocolError


def demo(
    directory: Annotated[Path, typer.Argument(
        help="New directory for the demo (or the one a failed demo left: it resumes).")] = Path(
        "spml-demo"),
    rounds: Annotated[int | None, typer.Option(help="Rounds (default: the protocol's).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    """Copy the bundled example into DIR, make it a git repo, and run Auto Research on it
    (run it again on the same DIR to resume an interrupted or failed demo)."""
    quiet_prefect(verbose)
    from spml.toolkit.examples import DEMO_EXAMPLE

    run_demo(DEMO_EXAMPLE, directory, rounds, "autoresearch")


def run_demo(example: str, directory: Path, rounds: int | None, kind: str) -> None:
    """Copy ``example`` into ``directory`` (or resume a demo already there) and run its loop."""
    from spml.cli._loop import check_protocol, locate, new_directory, run_loop
    from spml.toolkit.examples import copy_example, is_example_copy
    from spml.toolkit.loop.kind import kind_named

    if rounds is not None and rounds < 0:  # refused before anything is copied
        raise ProtocolError(f"--rounds must be >= 0, got {rounds}.")
    target = directory.resolve()
    if is_example_copy(target, example):
        console.print(f"resuming the [bold]{example}[/] demo in {target}", soft_wrap=True)
    else:
        with new_directory(target):  # a failed copy leaves nothing behind
            copy_example(example, target)
        console.print(f"copied the [bold]{example}[/] example to {target} (a new git repo)",
                      soft_wrap=True)
    run_loop(check_protocol(target, kind, rounds), rounds, kind)
    branch = locate(target, kind).branch(kind_named(kind).name)
    console.print(f"inspect: git -C {target} log --oneline {branch}  ·  "
                  f"cat {target}/experiences.md", highlight=False)
