"""`spml experiment run|verify|next|demo`: the experiment road, one command.

``run DIR`` continues DIR from its next stage through verification (the `experiment` flow);
``verify DIR`` re-measures a finished loop's result (the `verification` flow); ``next DIR``
says which stage comes next; ``demo [DIR]`` walks the whole road on the bundled CPU example:
brief -> design -> plan -> develop (a scripted implementer stands in for a coding agent; its
first integration draft fails L0, so the fix loop shows) -> handoff -> a short Auto Research
run -> verification. Every stage is the real flow, committing `experiment: ...` in DIR's git
history.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from spml.cli._output import console, quiet_prefect

app = typer.Typer(help="The experiment pipeline end to end.", no_args_is_help=True)
PIPELINE_EXAMPLE = "pipeline"
IMPLEMENTER = "implementer"  # the scripted implementer's folder: never copied into DIR
DEMO_VERIFY_RUNS = 3  # fresh-seed runs per arm: enough for an interval, short for a demo


@app.command()
def demo(directory: Annotated[Path, typer.Argument(help="New directory for the demo.")] = Path(
             "spml-experiment-demo"),
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Prefect logs.")] = False,
         ) -> None:
    """Run brief -> design -> plan -> develop -> handoff -> Auto Research -> verification on
    the bundled example in DIR (a new git repository), printing each stage."""
    from spml.cli._loop import new_directory
    from spml.toolkit.examples import copy_example

    quiet_prefect(verbose)
    import prefect  # noqa: F401 - its console handler must exist before the filter goes on

    from spml.cli._output import expected_errors_off_console

    target = directory.resolve()
    with new_directory(target):
        copy_example(PIPELINE_EXAMPLE, target, skip=(IMPLEMENTER,))
    console.print(f"[bold]0. example[/] copied to {target} (a new git repo)", soft_wrap=True)
    with expected_errors_off_console():
        _stages(target)
    console.print(f"inspect: git -C {target} log --oneline  ·  cat {target}/plans/*.md  ·  "
                  f"cat {target}/verification.md", highlight=False, soft_wrap=True)


def _stages(target: Path) -> None:
    from spml.cli.pipeline import _finish
    from spml.flows.experiment import experiment_flow
    from spml.toolkit.examples import examples_root
    from spml.toolkit.pipeline.brief import load_brief

    script = examples_root() / PIPELINE_EXAMPLE / IMPLEMENTER / "implement.py"
    implementer = (f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} --subtask "
                   "{subtask} --attempt {attempt} --workdir {workdir} --prompt-file "
                   "{prompt_file}")
    brief = load_brief(target / "brief.yaml")
    with stage_lines():
        state = experiment_flow(str(target), brief, implementer, "stop", "autoresearch",
                                verify_runs=DEMO_VERIFY_RUNS, return_state=True)
    _finish(state, "experiment")


@contextmanager
def stage_lines() -> Iterator[None]:
    """Print the `experiment` flow's stage lines as they happen (Prefect's own logs stay
    quiet on the terminal)."""
    handler = _StageLines()
    logger = logging.getLogger("spml.experiment")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class _StageLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        stage, _, rest = record.getMessage().partition(" ")
        console.print(f"[bold]{stage}[/] {rest}", highlight=False, soft_wrap=True)


@app.command()
def run(directory: Annotated[Path, typer.Argument(help="The experiment directory.")],
        brief: Annotated[Path | None, typer.Option(
            "--brief", help="Brief YAML with the brainstorm's answers (without it, and with no "
            "design yet, the questions are asked here).")] = None,
        implementer: Annotated[str | None, typer.Option(
            help="develop's coding command ({prompt_file}, {subtask}, {level}, {attempt}, "
            "{workdir}); without it the code must be written already.")] = None,
        to: Annotated[Literal["watchdog", "iteration", "autoresearch"] | None, typer.Option(
            help="The loop (default: the handoff's recommendation).")] = None,
        researcher_command: Annotated[str | None, typer.Option(
            help="ml-iteration's researcher command.")] = None,
        verify_runs: Annotated[int, typer.Option(
            min=2, help="Fresh-seed runs of each arm in the verification.")] = 5,
        until: Annotated[Literal["plan", "develop", "handoff", "run", "verify"] | None,
                         typer.Option(help="Stop before this stage.")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Prefect logs.")] = False,
        ) -> None:
    """Continue the experiment in DIR from its next stage to verification, each stage its
    flow; prints each stage as it ends."""
    from spml.cli.pipeline import _ask, _current, _existing_dir, _finish
    from spml.toolkit.pipeline.brief import load_brief
    from spml.toolkit.pipeline.reentry import next_stage

    quiet_prefect(verbose)
    exp = _existing_dir(directory)
    answers: dict[str, Any] | None = None
    if next_stage(exp).stage == "brainstorm":
        answers = load_brief(brief, True) if brief else _ask(_current(exp))
    from spml.cli._output import expected_errors_off_console
    from spml.flows.experiment import experiment_flow

    with stage_lines(), expected_errors_off_console():
        state = experiment_flow(str(exp), answers, implementer, "stop", to,
                                researcher_command, verify_runs, until,  # type: ignore[arg-type]
                                return_state=True)
    _finish(state, "experiment")


@app.command("verify")
def verify_command(
        directory: Annotated[Path, typer.Argument(help="The experiment directory.")],
        runs: Annotated[int, typer.Option(min=2, help="Fresh-seed runs of each arm.")] = 5,
        confidence: Annotated[float, typer.Option(help="Two-sided confidence.")] = 0.95,
        method: Annotated[Literal["welch", "bootstrap"], typer.Option(
            help="welch (Welch's t interval) or bootstrap (BCa).")] = "welch",
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Prefect logs.")] = False,
        ) -> None:
    """Re-measure the finished loop's baseline and chosen commits on fresh seeds, judge the
    difference, walk SPML's checklist; write and commit verification.md. The first line
    printed is the verdict."""
    from spml.cli.pipeline import _existing_dir
    from spml.toolkit.verification.experiment import check_settings
    from spml.toolkit.verification.subject import find_subject

    quiet_prefect(verbose)
    exp = _existing_dir(directory)
    # what cannot be verified is refused here, before Prefect starts
    check_settings(runs, confidence, method)
    find_subject(exp)
    from spml.cli._output import expected_errors_off_console
    from spml.flows.verification import verification_flow

    with expected_errors_off_console():
        result = verification_flow(str(exp), runs, confidence, method)
    typer.echo(result["verdict"])
    for line in result["statistics"][1:]:
        typer.echo(line)
    for name, status in result["checklist"].items():
        typer.echo(f"checklist: {name}: {status}")
    typer.echo(f"report: {result['report']} (plot {result['plot']})")


@app.command("next")
def next_command(directory: Annotated[Path, typer.Argument(
        help="The experiment directory.")]) -> None:
    """Print the next stage on the first line (brainstorm, plan, develop, revise, handoff, run,
    verify or done), then why."""
    from spml.cli.pipeline import _existing_dir
    from spml.toolkit.pipeline.reentry import next_stage

    nxt = next_stage(_existing_dir(directory))
    typer.echo(f"{nxt.stage}\n{nxt.why}")
