"""`spml iteration create | run | status | note | stop | override | demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spml.cli._loop import DirArg, Verbose, add_loop_commands, locate, new_directory
from spml.cli._output import console, quiet_prefect

app = typer.Typer(help="ml-iteration: rounds reviewed against typed criteria, a person on the "
                  "loop.", no_args_is_help=True)
KIND = "ml-iteration"


add_loop_commands(app, KIND)


@app.command()
def override(
    experiment_dir: DirArg,
    round_no: Annotated[int, typer.Option("--round", help="The round to override.")],
    verdict: Annotated[str, typer.Option(help="commit or rollback")],
) -> None:
    """Reverse a round's verdict; applied when the next round begins (never blocks the loop)."""
    from spml.toolkit.loop.overrides import queue_override

    queue_override(locate(experiment_dir, KIND), round_no, verdict)
    console.print(f"override queued: round {round_no} -> {verdict} (applied when the next "
                  "round begins)")


@app.command()
def create(
    experiment_dir: DirArg,
    goal: Annotated[str, typer.Option(prompt="Goal (one sentence)")],
    train_command: Annotated[str, typer.Option(prompt="Training command")],
    eval_command: Annotated[str, typer.Option(prompt="Evaluation command")],
    fixed: Annotated[str, typer.Option(prompt="Locked files: eval script, data loader (globs)")],
    criterion: Annotated[str, typer.Option(prompt="Metric criterion, e.g. 'val_acc >= 0.9'")],
    time_limit: Annotated[str, typer.Option(prompt="Training time limit (e.g. 300, 5min)")],
    researcher_command: Annotated[str, typer.Option(prompt="Researcher (agent) command")],
    max_rounds: Annotated[int, typer.Option(help="Rounds after the baseline.")] = 10,
) -> None:
    """Scaffold `iteration-protocol.md` from flags (missing ones are prompted for)."""
    from spml.toolkit.loop.scaffold import write_iteration_protocol

    fields = {
        "goal": goal, "max_rounds": max_rounds, "train_command": train_command,
        "fixed": {"files": [g.strip() for g in fixed.split(",") if g.strip()],
                  "time_limit": time_limit},
        "eval": {"command": eval_command},
        "researcher": {"kind": "command", "command": researcher_command},
        "review_criteria": {"metrics": [criterion],
                            "stability": {"no_nan": True, "forbid_patterns": []}},
    }
    with new_directory(experiment_dir) as exp:
        path = write_iteration_protocol(exp, fields)
    console.print(f"wrote {path}; add criteria, commit it, then `spml iteration run "
                  f"{experiment_dir}`")


@app.command()
def demo(
    directory: Annotated[Path, typer.Argument(
        help="New directory for the demo (or the one a failed demo left: it resumes).")] = Path(
        "spml-iteration-demo"),
    verbose: Verbose = False,
) -> None:
    """Copy the bundled iteration example into DIR, make it a git repo, and run ml-iteration
    (run it again on the same DIR to resume an interrupted or failed demo)."""
    quiet_prefect(verbose)
    from spml.cli.demo import run_demo

    run_demo("iteration", directory, None, KIND)
