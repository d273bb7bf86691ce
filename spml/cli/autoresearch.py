"""`spml autoresearch create | run | status | note | stop`."""

from __future__ import annotations

from typing import Annotated

import typer

from spml.cli._loop import DirArg, add_loop_commands, new_directory
from spml.cli._output import console
from spml.errors import ProtocolError

app = typer.Typer(help="Auto Research: a protocol-governed metric search loop.",
                  no_args_is_help=True)
KIND = "autoresearch"
RESEARCHERS = ("command", "optuna")  # the `researcher.kind`s of the protocol


add_loop_commands(app, KIND)


@app.command()
def create(
    experiment_dir: DirArg,
    question: Annotated[str, typer.Option(prompt="Research question")],
    train_command: Annotated[str, typer.Option(prompt="Training command")],
    eval_command: Annotated[str, typer.Option(prompt="Evaluation command")],
    metric: Annotated[str, typer.Option(prompt="Metric printed by the evaluation")],
    direction: Annotated[str, typer.Option(prompt="Direction (maximize/minimize)")],
    fixed: Annotated[str, typer.Option(prompt="Fixed files (comma-separated globs)")],
    variable: Annotated[str, typer.Option(prompt="Variable files (comma-separated globs)")],
    time_limit: Annotated[str, typer.Option(prompt="Training time limit (e.g. 300, 5min)")],
    max_rounds: Annotated[int, typer.Option(help="Rounds after the baseline.")] = 10,
    researcher: Annotated[str, typer.Option(
        help="command (any agent or script) or optuna")] = "command",
    researcher_command: Annotated[str | None, typer.Option(help="Agent command.")] = None,
    params_file: Annotated[str | None, typer.Option(help="Optuna params file.")] = None,
    value_range: Annotated[str, typer.Option("--range", help="What may vary.")] = "",
) -> None:
    """Scaffold `autoresearch-protocol.md` from flags (missing ones are prompted for)."""
    from spml.toolkit.loop.scaffold import researcher_settings, write_protocol

    if researcher not in RESEARCHERS:
        raise ProtocolError(
            f"--researcher must be one of {', '.join(RESEARCHERS)}, got {researcher!r}. A coding "
            "agent (claude, codex, aider, ...) is a command researcher: --researcher command "
            "--researcher-command 'my-agent --prompt-file {prompt_file}'.")
    with new_directory(experiment_dir) as exp:
        fields = {
            "research_question": question, "max_rounds": max_rounds, "target": None,
            "baseline": None, "train_command": train_command,
            "fixed": {"files": _split(fixed), "time_limit": time_limit},
            "variable": {"files": _split(variable), "range": value_range},
            "eval": {"command": eval_command, "metric": metric, "direction": direction},
            "researcher": researcher_settings(researcher, exp, researcher_command, params_file),
            "experiences_window": 5, "acceptance": {"min_delta": 0.0, "repeats": 1},
        }
        path = write_protocol(exp, fields)
    console.print(f"wrote {path}; commit it, then `spml autoresearch run {experiment_dir}`")


def _split(globs: str) -> list[str]:
    return [g.strip() for g in globs.split(",") if g.strip()]
