"""`spml autoresearch create | run | status | note | stop`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spml.cli._loop import add_note, check_protocol, request_stop, run_loop, show_status
from spml.cli._output import console, guarded, quiet_prefect

app = typer.Typer(help="Auto Research: a protocol-governed metric search loop.",
                  no_args_is_help=True)
DirArg = Annotated[Path, typer.Argument(help="Experiment directory (holds the protocol).")]
KIND = "autoresearch"


@app.command()
def run(
    experiment_dir: DirArg,
    max_rounds: Annotated[int | None, typer.Option(help="Cap the rounds for this run.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    """Run or resume the loop (exit 0 when it ends normally, 2 on a bad protocol)."""
    quiet_prefect(verbose)
    guarded(lambda: _run(experiment_dir, max_rounds))


def _run(experiment_dir: Path, max_rounds: int | None) -> None:
    run_loop(check_protocol(experiment_dir, KIND), max_rounds, KIND)


@app.command()
def status(experiment_dir: DirArg) -> None:
    """Show the ledger, the round in flight and queued notes."""
    guarded(lambda: show_status(experiment_dir, KIND))


@app.command()
def note(experiment_dir: DirArg, text: Annotated[str, typer.Argument(help="Guidance.")]) -> None:
    """Add guidance for the next round's brief (and its Note column)."""
    guarded(lambda: add_note(experiment_dir, KIND, text))


@app.command()
def stop(experiment_dir: DirArg) -> None:
    """Ask the running loop to end after its current step."""
    guarded(lambda: request_stop(experiment_dir, KIND))


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
    researcher: Annotated[str, typer.Option(help="command or optuna")] = "command",
    researcher_command: Annotated[str | None, typer.Option(help="Agent command.")] = None,
    params_file: Annotated[str | None, typer.Option(help="Optuna params file.")] = None,
    value_range: Annotated[str, typer.Option("--range", help="What may vary.")] = "",
) -> None:
    """Scaffold `autoresearch-protocol.md` from flags (missing ones are prompted for)."""
    def _create() -> None:
        from spml.toolkit.loop.scaffold import researcher_settings, write_protocol

        exp = experiment_dir.resolve()
        exp.mkdir(parents=True, exist_ok=True)
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

    guarded(_create)


def _split(globs: str) -> list[str]:
    return [g.strip() for g in globs.split(",") if g.strip()]
