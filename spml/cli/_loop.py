"""What `spml autoresearch ...` and `spml iteration ...` share: run, status, note, stop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spml.cli._output import console, guarded, ledger_header, ledger_table, quiet_prefect

DirArg = Annotated[Path, typer.Argument(help="Experiment directory (holds the protocol).")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")]
MaxRounds = Annotated[int | None, typer.Option(help="Cap the rounds for this run.")]


def add_loop_commands(app: typer.Typer, kind: str) -> None:
    """`run`, `status`, `note` and `stop`, the same for every loop kind."""

    @app.command()
    def run(experiment_dir: DirArg, max_rounds: MaxRounds = None,
            verbose: Verbose = False) -> None:
        """Run or resume the loop (exit 0 when it ends normally, 2 on a bad protocol)."""
        quiet_prefect(verbose)
        guarded(lambda: run_loop(check_protocol(experiment_dir, kind), max_rounds, kind))

    @app.command()
    def status(experiment_dir: DirArg) -> None:
        """Show the ledger, the round in flight, queued notes and overrides."""
        guarded(lambda: show_status(experiment_dir, kind))

    @app.command()
    def note(experiment_dir: DirArg,
             text: Annotated[str, typer.Argument(help="Guidance.")]) -> None:
        """Add guidance for the next round's brief (and its Note / User Hint column)."""
        guarded(lambda: add_note(experiment_dir, kind, text))

    @app.command()
    def stop(experiment_dir: DirArg) -> None:
        """Ask the running loop to end after its current step."""
        guarded(lambda: request_stop(experiment_dir, kind))


def run_loop(exp_dir: Path, max_rounds: int | None, kind: str = "autoresearch") -> None:
    """Run the kind's flow with live progress, then print the final table."""
    from spml.cli.progress import LedgerWatcher
    from spml.toolkit.loop.experiment import LEDGER_FILENAME
    from spml.toolkit.loop.kind import kind_named
    from spml.toolkit.loop.ledger import read_ledger
    from spml.toolkit.loop.session import LoopSession

    loop_kind = kind_named(kind)
    if kind == "autoresearch":
        from spml.flows.autoresearch import autoresearch_flow as loop_flow
    else:
        from spml.flows.iteration import iteration_flow as loop_flow
    console.print(f"[bold]{loop_kind.title}[/] in {exp_dir} (Prefect starts in a few seconds)")
    with LedgerWatcher(exp_dir / LEDGER_FILENAME):
        summary = loop_flow(str(exp_dir), max_rounds)
    ledger = read_ledger(LoopSession.load(exp_dir, loop_kind).experiment)
    if ledger is not None:
        console.print(ledger_table(ledger))
    console.print(f"[bold]{summary.status}[/]: {summary.headline()} · {summary.commits} "
                  f"commit(s) in {summary.rounds_done} round(s)", highlight=False)


def check_protocol(experiment_dir: Path, kind: str) -> Path:
    """Fail fast on a bad protocol, before Prefect starts; the resolved experiment dir."""
    from spml.toolkit.loop.experiment import Experiment
    from spml.toolkit.loop.kind import kind_named, refuse_other_kinds
    from spml.toolkit.loop.ledger import read_ledger
    from spml.toolkit.loop.lifecycle import refuse_locked_edits
    from spml.toolkit.loop.session import accepted_protocol

    loop_kind = kind_named(kind)
    experiment = Experiment.locate(experiment_dir, loop_kind.protocol_filename)
    refuse_other_kinds(loop_kind, experiment.exp_dir)
    protocol = loop_kind.load_protocol(experiment.protocol_path)
    read_ledger(experiment)  # a hand-broken ledger is named here, not in a task's traceback
    previous = accepted_protocol(experiment, loop_kind)
    if previous is not None:
        refuse_locked_edits(loop_kind, previous, protocol)
    return experiment.exp_dir


def show_status(experiment_dir: Path, kind: str) -> None:
    """The ledger, the round in flight, queued notes, overrides and stop request."""
    from spml.toolkit.loop import control
    from spml.toolkit.loop.ledger import read_journal, read_ledger
    from spml.toolkit.loop.overrides import pending_overrides

    experiment = locate(experiment_dir, kind)
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
    for override in pending_overrides(experiment):
        console.print(f"queued override: round {override.round} -> {override.verdict}")
    if reason := control.stop_requested(experiment):
        console.print(f"stop requested: {reason}", highlight=False)


def locate(experiment_dir: Path, kind: str):  # noqa: ANN201 - Experiment, imported lazily
    """The experiment of ``kind`` in ``experiment_dir``."""
    from spml.toolkit.loop.experiment import Experiment
    from spml.toolkit.loop.kind import kind_named

    return Experiment.locate(experiment_dir, kind_named(kind).protocol_filename)


def add_note(experiment_dir: Path, kind: str, text: str) -> None:
    """Queue guidance for the next round."""
    from spml.toolkit.loop import control

    control.add_note(locate(experiment_dir, kind), text)
    console.print("note queued for the next round")


def request_stop(experiment_dir: Path, kind: str) -> None:
    """Ask the running loop to end after its current step."""
    from spml.toolkit.loop import control

    control.request_stop(locate(experiment_dir, kind))
    console.print("stop requested: the loop ends after its current step")
