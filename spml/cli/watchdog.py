"""`spml watchdog run | status`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from spml.cli._output import (
    EXIT_FAILED,
    console,
    err_console,
    expected_errors_off_console,
    guarded,
    quiet_prefect,
)

app = typer.Typer(help="Watchdog: keep one long training run alive.", no_args_is_help=True)
DirArg = Annotated[Path, typer.Argument(help="Experiment directory.")]


@app.command()
def run(
    experiment_dir: DirArg,
    train_command: Annotated[str | None, typer.Option(help="Training command.")] = None,
    checkpoint_glob: Annotated[str | None, typer.Option(help="Checkpoint glob.")] = None,
    log_file: Annotated[str | None, typer.Option(help="Training log file.")] = None,
    eval_command: Annotated[str | None, typer.Option(help="Eval ({checkpoint}).")] = None,
    checkpoint_check: Annotated[str | None, typer.Option(
        help="Completeness check before a resume ({checkpoint}; exit 0 = complete); "
        "replaces the built-in verification.")] = None,
    checkpoint_interval: Annotated[int | None, typer.Option(
        help="Steps between checkpoints: warn when the glob matches nothing after them.")] = None,
    hang_timeout: Annotated[float | None, typer.Option(help="Seconds of silence.")] = None,
    startup_grace: Annotated[float | None, typer.Option(
        help="Seconds after a launch when silence is no hang (0 = none).")] = None,
    restart_delay: Annotated[float | None, typer.Option(
        help="Backoff base seconds (0 = restart at once).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Supervise the run; exit 0 when training finished, 1 on a code failure or crash loop."""
    quiet_prefect(verbose)
    overrides = {"train_command": train_command, "checkpoint_glob": checkpoint_glob,
                 "log_file": log_file, "eval_command": eval_command,
                 "checkpoint_check": checkpoint_check, "checkpoint_interval": checkpoint_interval,
                 "hang_timeout": hang_timeout, "startup_grace": startup_grace,
                 "restart_delay": restart_delay}
    guarded(lambda: _run(experiment_dir.resolve(), overrides))


def _run(exp: Path, overrides: dict) -> None:
    from spml.protocols.watchdog import load_watchdog_settings

    settings = load_watchdog_settings(exp, overrides)  # a bad one exits 2 before Prefect starts
    from spml.toolkit.watchdog.state import WatchdogState

    # Taken and let go at once: a second watchdog stops here, with no Prefect traceback. The
    # flow takes the lock again for the whole run.
    with WatchdogState(exp).hold():
        pass
    from spml.flows._interrupt import enabled, watchdog_recorder

    given = {k: v for k, v in overrides.items() if v is not None}
    # Ctrl-C / SIGTERM: training ended, `state: interrupted`, exit 130 / 143 within seconds
    with enabled(watchdog_recorder(str(exp), given, settings.log_file)):
        _watch(exp, given)


def _watch(exp: Path, given: dict) -> None:
    from spml.cli._ui import announcing_ui
    from spml.errors import TrainingStopped
    from spml.flows.watchdog import watchdog_flow

    # One progress line per poll even when Prefect's own logs are quiet.
    logging.getLogger("spml.toolkit.watchdog.supervise").setLevel(logging.INFO)

    console.print(f"[bold]Watchdog[/] on {exp}")
    try:
        with expected_errors_off_console():  # the stop's own lines follow, without traceback
            announcing_ui(watchdog_flow)(str(exp), given)
    except TrainingStopped as exc:
        err_console.print(f"[bold red]stopped:[/] {exc}", highlight=False)
        err_console.print(f"diagnosis: {exp / 'experiment-context.md'}", highlight=False,
                          soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    console.print("training finished", highlight=False)


@app.command()
def status(experiment_dir: DirArg) -> None:
    """Print the watchdog status recorded in experiment-context.md, and whether a watchdog
    supervises the run now (a `running` record without one is a killed watchdog)."""
    def _status() -> None:
        from spml.errors import ProtocolError
        from spml.toolkit.watchdog.context import ContextFile
        from spml.toolkit.watchdog.state import liveness

        exp = experiment_dir.resolve()
        if not exp.is_dir():
            raise ProtocolError(f"experiment directory must exist, got '{experiment_dir}'")
        fields = ContextFile(exp / "experiment-context.md").read_status()
        if not fields:
            console.print("no watchdog status yet")
        for key, value in fields.items():
            console.print(f"{key}: {value}", highlight=False)
        console.print(f"watchdog: {liveness(exp, fields.get('state'))}", highlight=False,
                      soft_wrap=True)

    guarded(_status)
