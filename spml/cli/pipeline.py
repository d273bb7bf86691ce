"""`spml design | plan | develop | handoff`: the experiment pipeline's stages from the terminal.

Each stage runs its Prefect flow (on Prefect's embedded default unless a server is
configured); the checks (`design check`, `plan check`) are plain functions: exit 0 on a pass,
2 with one line per problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from spml.cli._output import (
    EXIT_FAILED,
    console,
    err_console,
    expected_errors_off_console,
    quiet_prefect,
)
from spml.errors import ProtocolError

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")]
ExpDir = Annotated[Path, typer.Argument(help="The experiment directory (inside a git repo).")]
design_app = typer.Typer(help="Design doc: write one (brainstorm) or check one.",
                         no_args_is_help=True)
plan_app = typer.Typer(help="Plan: write one from the design (or revise it), or check one.",
                       no_args_is_help=True)


@design_app.command("new")
def design_new(experiment_dir: ExpDir,
               brief: Annotated[Path | None, typer.Option(
                   "--from", help="Brief YAML with the answers (`spml schema design`); "
                   "without it the questions are asked here, one at a time.")] = None,
               verbose: Verbose = False) -> None:
    """Brainstorm: write (or revise) the design doc, self-review it, commit it (a revision keeps
    the fields a brief does not give; the questions default to the current values)."""
    quiet_prefect(verbose)
    from spml.flows.design import brainstorm_flow
    from spml.toolkit.pipeline.brief import load_brief

    exp = _existing_dir(experiment_dir)
    if brief:
        from spml.protocols.design import find_design

        complete = find_design(exp) is None  # a revision brief may give only what changes
        answers, source, merge = load_brief(brief, complete), brief.name, "fields"
    else:
        answers, source, merge = _ask(_current(exp)), "your answers", "deep"
    with expected_errors_off_console():
        result = brainstorm_flow(str(exp), answers, source, merge)
    what = "revised" if result["revised"] else "written"
    changed = f" ({', '.join(result['changed'])} changed)" if result["changed"] else ""
    console.print(f"design {what}: {result['design']}{changed}", highlight=False)


@design_app.command("check")
def design_check(file: Annotated[Path, typer.Argument(help="The design doc.")]) -> None:
    """Exit 0 when the design passes; 2 with one line per problem."""
    from spml.protocols.design import check_design
    from spml.protocols.frontmatter import error_report

    rows = check_design(file)
    if rows:
        raise ProtocolError(error_report(f"{file.name} fails the design check", rows))
    console.print(f"{file.name}: design check passed", highlight=False)


@plan_app.command("new")
def plan_new(experiment_dir: ExpDir,
             drafter: Annotated[str | None, typer.Option(
                 help="Coding-agent command that may rewrite the plan's prose ({plan_file}, "
                 "{design_file}, {workdir}); the plan gate judges the result.")] = None,
             verbose: Verbose = False) -> None:
    """Plan: build the plan from the design (or revise it in place), gate it, commit it."""
    quiet_prefect(verbose)
    from spml.flows.plan import plan_flow

    exp = _existing_dir(experiment_dir)
    with expected_errors_off_console():
        result = plan_flow(str(exp), drafter)
    changes = f": {'; '.join(result['changes'])}" if result["changes"] else ""
    console.print(f"plan {'revised' if result['revised'] else 'written'}: {result['plan']}"
                  f"{changes}", highlight=False)


@plan_app.command("check")
def plan_check(file: Annotated[Path, typer.Argument(help="The plan.")]) -> None:
    """The plan gate: exit 0 when the plan passes; 2 with one line per problem."""
    from spml.protocols.plan import load_plan
    from spml.protocols.plan_gate import check_plan
    from spml.toolkit.pipeline.stages import gate_report

    rows = check_plan(load_plan(file))
    if rows:
        raise ProtocolError(gate_report(file, rows))
    console.print(f"{file.name}: plan gate passed", highlight=False)


def develop(experiment_dir: ExpDir,
            implementer: Annotated[str | None, typer.Option(
                help="Command that writes or fixes the code ({prompt_file}, {subtask}, "
                "{level}, {attempt}, {workdir}); without it, your code is checked as it is.")
            ] = None,
            max_steps: Annotated[int | None, typer.Option(help="L1's SPML_MAX_STEPS.")] = None,
            verbose: Verbose = False) -> None:
    """Develop each unticked subtask: implementer, tests, and for the [INTEGRATION] subtask
    L0 then L1 (exit 1 with the report when a level stays failed)."""
    quiet_prefect(verbose)
    from spml.flows.develop import develop_flow

    exp = _existing_dir(experiment_dir)
    runtime = {"max_steps": max_steps} if max_steps else None
    with expected_errors_off_console():
        state = develop_flow(str(exp), implementer, "stop", runtime, return_state=True)
    _finish(state, "develop")


def handoff(experiment_dir: ExpDir,
            to: Annotated[str | None, typer.Option(
                help="watchdog, iteration or autoresearch (default: autoresearch when the "
                "design has that section, else SPML's recommendation).")] = None,
            start: Annotated[bool, typer.Option(help="Run the loop after the handoff.")] = False,
            via_deployment: Annotated[bool, typer.Option(
                help="With --start: create a run of the loop's deployment (autoresearch/default"
                " ...) for a worker, instead of running it here.")] = False,
            researcher_command: Annotated[str | None, typer.Option(
                help="ml-iteration's researcher command.")] = None,
            verbose: Verbose = False) -> None:
    """Run the handoff pre-checks, write the loop's documents, commit (and --start it)."""
    quiet_prefect(verbose)
    from spml.flows.handoff import handoff_flow

    if to is not None and to not in ("watchdog", "iteration", "autoresearch"):
        raise ProtocolError(f"--to must be watchdog, iteration or autoresearch, got {to!r}.")
    exp = _existing_dir(experiment_dir)
    with expected_errors_off_console():
        state = handoff_flow(str(exp), to, start, via_deployment, researcher_command,
                             return_state=True)
    _finish(state, "handoff")


def _finish(state: Any, stage: str) -> dict[str, Any]:
    """Print a stage's outcome; exit 1 when it failed (its report on stderr). A refusal (bad
    input, a missing document) is re-raised: it exits 2 with its one message."""
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    if state.is_completed():
        console.print(state.message, highlight=False, markup=False)
        for line in _details(data):
            console.print(f"  {line}", highlight=False, markup=False)
        return data or {}
    failure = data if isinstance(data, dict) else {}
    err_console.print(f"{stage} failed: {state.message}", highlight=False, markup=False)
    for key in ("report", "checks"):
        if failure.get(key):
            err_console.print(failure[key], highlight=False, markup=False)
    raise typer.Exit(EXIT_FAILED)


def _details(data: Any) -> list[str]:
    if not isinstance(data, dict):
        return []
    return [f"{k}: {v}" for k, v in data.items() if k in ("outcomes", "route", "recommended",
                                                           "written", "commit", "loop")]


def _existing_dir(path: Path) -> Path:
    if not path.is_dir():
        raise ProtocolError(f"experiment directory must exist, got {str(path)!r}; create it "
                            "(inside a git repository) first.")
    return path.resolve()


def _current(exp: Path) -> dict[str, str]:
    """The existing design's values by question key ({} without a design)."""
    from spml.protocols.design import find_design, load_design
    from spml.toolkit.pipeline.questions import current_answers

    path = find_design(exp)
    if path is None:
        return {}
    return current_answers(load_design(path).model_dump(mode="json", exclude_none=True))


def _ask(defaults: dict[str, str]) -> dict[str, Any]:
    from spml.toolkit.pipeline.questions import Question, ask_all

    def ask(question: Question, problem: str | None) -> str:
        if problem:
            err_console.print(f"  {problem}", highlight=False, markup=False)
        choices = f" [{'/'.join(question.choices)}]" if question.choices else ""
        while True:
            answer = typer.prompt(f"{question.text}{choices}",
                                  default=defaults.get(question.key, question.default))
            if not question.choices or answer in question.choices:
                return str(answer)
            err_console.print(f"  choose one of {', '.join(question.choices)}", markup=False)

    return ask_all(ask)
