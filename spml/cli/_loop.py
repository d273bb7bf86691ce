"""What `spml autoresearch ...` and `spml iteration ...` share: run, status, note, stop."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from spml.cli._output import (
    console,
    expected_errors_off_console,
    ledger_header,
    ledger_table,
    quiet_prefect,
)
from spml.errors import ProtocolError
from spml.protocols.experiences import Experiences

DirArg = Annotated[Path, typer.Argument(help="Experiment directory (holds the protocol).")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")]
MaxRounds = Annotated[int | None, typer.Option(help="Cap the rounds for this run.")]
Plot = Annotated[bool, typer.Option(
    "--plot", help="Also draw the ledger as experiences.png beside experiences.md.")]
AllowDirty = Annotated[bool, typer.Option(
    "--allow-dirty", help="Run although fixed or variable files have uncommitted changes "
    "(the loop runs the committed code; the ignored files are named).")]


def add_loop_commands(app: typer.Typer, kind: str) -> None:
    """`run`, `status`, `note` and `stop`, the same for every loop kind (their expected errors
    become exit codes in `SpmlGroup`, like every command's)."""

    @app.command()
    def run(experiment_dir: DirArg, max_rounds: MaxRounds = None,
            allow_dirty: AllowDirty = False, verbose: Verbose = False) -> None:
        """Run or resume the loop (exit 0 when it ends normally, 1 when the baseline fails,
        2 on a bad protocol or uncommitted changes to the files it runs)."""
        quiet_prefect(verbose)
        exp_dir = check_protocol(experiment_dir, kind, max_rounds, allow_dirty)
        run_loop(exp_dir, max_rounds, kind, allow_dirty)

    @app.command()
    def status(experiment_dir: DirArg, plot: Plot = False) -> None:
        """Show the ledger, the round in flight, queued notes and overrides (--plot: and draw
        the ledger as experiences.png)."""
        show_status(experiment_dir, kind, plot)

    @app.command()
    def note(experiment_dir: DirArg,
             text: Annotated[str, typer.Argument(help="Guidance.")]) -> None:
        """Add guidance for the next round's brief (and its Note / User Hint column)."""
        add_note(experiment_dir, kind, text)

    @app.command()
    def stop(experiment_dir: DirArg) -> None:
        """Ask the running loop to end after its current step."""
        request_stop(experiment_dir, kind)


def run_loop(exp_dir: Path, max_rounds: int | None, kind: str = "autoresearch",
             allow_dirty: bool = False) -> None:
    """Run the kind's flow with live progress, then print the final table. Ctrl-C or SIGTERM
    ends it within seconds (exit 130 / 143) with one line saying how to resume."""
    from spml.flows._interrupt import enabled, loop_recorder

    with enabled(loop_recorder(str(exp_dir), kind, max_rounds, allow_dirty)):
        _run_flow(exp_dir, max_rounds, kind, allow_dirty)


def _run_flow(exp_dir: Path, max_rounds: int | None, kind: str, allow_dirty: bool) -> None:
    from spml.cli._ui import announcing_ui, server_in_use
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
    hint = "" if server_in_use() else " (Prefect starts in a few seconds)"
    console.print(f"[bold]{loop_kind.title}[/] in {exp_dir}{hint}", soft_wrap=True)
    with LedgerWatcher(exp_dir / LEDGER_FILENAME), expected_errors_off_console():
        summary = announcing_ui(loop_flow)(str(exp_dir), max_rounds, allow_dirty)
    ledger = read_ledger(LoopSession.load(exp_dir, loop_kind).experiment)
    if ledger is not None:
        console.print(ledger_table(ledger))
    console.print(f"[bold]{summary.status}[/]: {summary.headline()} · {summary.commits} "
                  f"commit(s) in {summary.rounds_done} round(s)", highlight=False)
    if summary.best_estimate:
        console.print(f"best, every run pooled: {summary.best_estimate}", highlight=False)
    if summary.confirmed:
        console.print(f"confirmed on fresh seeds: {summary.confirmed}", highlight=False)


def check_protocol(experiment_dir: Path, kind: str, max_rounds: int | None = None,
                   allow_dirty: bool = False) -> Path:
    """Fail fast, before Prefect starts (so with no Prefect traceback): a bad protocol, a
    broken ledger, a locked field edited, uncommitted changes to the files the loop runs
    (named; ``allow_dirty`` only names them), a bad --max-rounds, another supervisor running.
    Returns the resolved experiment dir."""
    from spml.toolkit.loop.experiment import hold_experiment
    from spml.toolkit.loop.kind import kind_named
    from spml.toolkit.loop.ledger import read_ledger
    from spml.toolkit.loop.lifecycle import refuse_locked_edits
    from spml.toolkit.loop.session import accepted_protocol, check_checkout

    if max_rounds is not None and max_rounds < 0:
        raise ProtocolError(f"--max-rounds must be >= 0, got {max_rounds}.")
    loop_kind = kind_named(kind)
    experiment = locate(experiment_dir, kind)
    protocol = loop_kind.load_protocol(experiment.protocol_path)
    read_ledger(experiment)  # a hand-broken ledger is named here, not in a task's traceback
    previous = accepted_protocol(experiment, loop_kind)
    if previous is not None:
        refuse_locked_edits(loop_kind, previous, protocol)
    for ignored in check_checkout(experiment, protocol, loop_kind, allow_dirty):
        console.print(f"[yellow]--allow-dirty:[/] running without the uncommitted changes to "
                      f"{ignored}", highlight=False)
    # Taken and let go at once: a second `run` stops here, before its progress display would
    # print the running loop's rows. The flow takes the lock again for the whole run.
    with hold_experiment(experiment.exp_dir, loop_kind.protocol_filename):
        pass
    return experiment.exp_dir


def show_status(experiment_dir: Path, kind: str, plot: bool = False) -> None:
    """The ledger, the round in flight, queued notes, overrides and stop request; with
    ``plot``, the ledger drawn as `experiences.png` beside `experiences.md` too."""
    from spml.toolkit.loop import control
    from spml.toolkit.loop.activity import loop_activity
    from spml.toolkit.loop.ledger import read_ledger
    from spml.toolkit.loop.overrides import pending_overrides

    experiment = locate(experiment_dir, kind)
    ledger = read_ledger(experiment)
    console.print(f"experiment: {experiment.name}", highlight=False)
    if ledger is not None:
        console.print(ledger_header(ledger), highlight=False)
        console.print(ledger_table(ledger))
        if confirmed := _confirmation(experiment_dir, kind, experiment.state_dir):
            console.print(f"confirmed on fresh seeds: {confirmed}", highlight=False)
    console.print(loop_activity(experiment).describe(), highlight=False)
    for note in control.pending_notes(experiment):
        console.print(f"queued note: {note}", highlight=False)
    for override in pending_overrides(experiment):
        console.print(f"queued override: round {override.round} -> {override.verdict}")
    if reason := control.stop_requested(experiment):
        console.print(f"stop requested: {reason}", highlight=False)
    if plot:
        _write_plot(experiment.ledger_path.parent, ledger)


def _confirmation(experiment_dir: Path, kind: str, state_dir: Path) -> str:
    """The end-of-loop confirmation of the best on the branch now, if one was measured."""
    if not (state_dir / "confirm").is_dir():
        return ""
    from spml.errors import SpmlError
    from spml.toolkit.loop.confirm import read_confirmation
    from spml.toolkit.loop.kind import kind_named
    from spml.toolkit.loop.session import LoopSession

    try:
        return read_confirmation(LoopSession.load(experiment_dir, kind_named(kind)))
    except (SpmlError, OSError, ValueError):  # status shows what it can, never fails on this
        return ""


def _write_plot(directory: Path, ledger: Experiences | None) -> None:
    """Draw the ledger beside it and print the file's path (a plain line, for scripts)."""
    if ledger is None:
        console.print("plot: nothing to draw, the loop has not started (no experiences.md)",
                      highlight=False)
        return
    from spml.toolkit.loop.plot import PLOT_FILENAME, plot_ledger  # matplotlib: on demand

    path = plot_ledger(ledger, directory / PLOT_FILENAME)
    console.print(f"plot: {path}", highlight=False, soft_wrap=True)


def locate(experiment_dir: Path, kind: str):  # noqa: ANN201 - Experiment, imported lazily
    """The experiment of ``kind`` in ``experiment_dir``; refuses a directory without its
    protocol, so `note` / `stop` never report success (or create `.spml/`) where no loop is."""
    from spml.toolkit.loop.experiment import Experiment
    from spml.toolkit.loop.kind import kind_named, refuse_other_kinds

    loop_kind = kind_named(kind)
    experiment = Experiment.locate(experiment_dir, loop_kind.protocol_filename)
    refuse_other_kinds(loop_kind, experiment.exp_dir)
    if not experiment.protocol_path.is_file():
        raise ProtocolError(
            f"{experiment.exp_dir} must hold {loop_kind.protocol_filename}, found none: it is "
            f"not an {loop_kind.title} experiment. Create one with `spml {loop_kind.cli_group} "
            f"create {experiment_dir}`.")
    return experiment


def add_note(experiment_dir: Path, kind: str, text: str) -> None:
    """Queue guidance for the next round."""
    from spml.toolkit.loop import control

    if not text.strip():
        raise ProtocolError("a note must say something, got an empty text.")
    experiment = locate(experiment_dir, kind)
    control.add_note(experiment, text)
    console.print("note queued for the next round")
    from spml.toolkit.loop.kind import kind_named

    if warning := control.note_unread_warning(experiment, kind_named(kind).load_protocol):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def request_stop(experiment_dir: Path, kind: str) -> None:
    """Ask the running loop to end after its current step."""
    from spml.toolkit.loop import control

    control.request_stop(locate(experiment_dir, kind))
    console.print("stop requested: the loop ends after its current step")


@contextmanager
def new_directory(path: Path) -> Iterator[Path]:
    """``path`` made ready for a command's output; if the command fails, what it put in a
    directory that was new or empty is removed again, so the same command can run again."""
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise ProtocolError(f"{path} must be a directory, got a file. Pick a new directory.")
    existed = path.exists()
    was_empty = existed and not any(path.iterdir())
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
        elif was_empty:
            _empty(path)
        raise


def _empty(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
