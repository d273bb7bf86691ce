"""`spml autoresearch create | run | status | note | stop`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spml.cli._output import console, guarded, ledger_header, ledger_table, quiet_prefect

app = typer.Typer(help="Auto Research: a protocol-governed metric search loop.",
                  no_args_is_help=True)
DirArg = Annotated[Path, typer.Argument(help="Experiment directory (holds the protocol).")]


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
    from spml.protocols.autoresearch import PROTOCOL_FILENAME, load_protocol
    from spml.toolkit.loop.experiment import Experiment

    experiment = Experiment.locate(experiment_dir, PROTOCOL_FILENAME)
    load_protocol(experiment.protocol_path)  # fail fast, before Prefect starts
    run_loop(experiment.exp_dir, max_rounds)


def run_loop(exp_dir: Path, max_rounds: int | None) -> None:
    """Run the flow with live progress, then print the final table."""
    from spml.cli.progress import LedgerWatcher
    from spml.flows.autoresearch import autoresearch_flow
    from spml.toolkit.loop.experiment import LEDGER_FILENAME
    from spml.toolkit.loop.ledger import read_ledger
    from spml.toolkit.loop.session import LoopSession

    console.print(f"[bold]Auto Research[/] in {exp_dir} (Prefect starts in a few seconds)")
    with LedgerWatcher(exp_dir / LEDGER_FILENAME):
        summary = autoresearch_flow(str(exp_dir), max_rounds)
    ledger = read_ledger(LoopSession.load(exp_dir).experiment)
    if ledger is not None:
        console.print(ledger_table(ledger))
    console.print(f"[bold]{summary.status}[/]: {summary.headline()} · {summary.commits} "
                  f"commit(s) in {summary.rounds_done} round(s)", highlight=False)


@app.command()
def status(experiment_dir: DirArg) -> None:
    """Show the ledger, the round in flight and queued notes."""
    guarded(lambda: _status(experiment_dir))


def _status(experiment_dir: Path) -> None:
    from spml.protocols.autoresearch import PROTOCOL_FILENAME
    from spml.toolkit.loop import control
    from spml.toolkit.loop.experiment import Experiment
    from spml.toolkit.loop.ledger import read_journal, read_ledger

    experiment = Experiment.locate(experiment_dir, PROTOCOL_FILENAME)
    ledger = read_ledger(experiment)
    if ledger is None:
        console.print("not started (no experiences.md yet)")
        return
    console.print(ledger_header(ledger), highlight=False)
    console.print(ledger_table(ledger))
    if (journal := read_journal(experiment)) is not None:
        console.print(f"round {journal.round} in flight (phase {journal.phase})")
    for note in control.pending_notes(experiment):
        console.print(f"queued note: {note}", highlight=False)
    if reason := control.stop_requested(experiment):
        console.print(f"stop requested: {reason}", highlight=False)


@app.command()
def note(experiment_dir: DirArg, text: Annotated[str, typer.Argument(help="Guidance.")]) -> None:
    """Add guidance for the next round's brief (and its Note column)."""
    def _note() -> None:
        from spml.protocols.autoresearch import PROTOCOL_FILENAME
        from spml.toolkit.loop import control
        from spml.toolkit.loop.experiment import Experiment

        control.add_note(Experiment.locate(experiment_dir, PROTOCOL_FILENAME), text)
        console.print("note queued for the next round")

    guarded(_note)


@app.command()
def stop(experiment_dir: DirArg) -> None:
    """Ask the running loop to end after its current step."""
    def _stop() -> None:
        from spml.protocols.autoresearch import PROTOCOL_FILENAME
        from spml.toolkit.loop import control
        from spml.toolkit.loop.experiment import Experiment

        control.request_stop(Experiment.locate(experiment_dir, PROTOCOL_FILENAME))
        console.print("stop requested: the loop ends after its current step")

    guarded(_stop)


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
