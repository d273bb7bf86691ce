"""`spml experiment demo [DIR]`: the whole pipeline on the bundled CPU example.

brief -> design -> plan -> develop (a scripted implementer stands in for a coding agent; its
first integration draft fails L0, so the fix loop shows) -> handoff -> a short Auto Research
run. Every stage is the real flow, committing `experiment: ...` in DIR's git history.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from spml.cli._output import console, quiet_prefect

app = typer.Typer(help="The experiment pipeline end to end.", no_args_is_help=True)
PIPELINE_EXAMPLE = "pipeline"
IMPLEMENTER = "implementer"  # the scripted implementer's folder: never copied into DIR


@app.command()
def demo(directory: Annotated[Path, typer.Argument(help="New directory for the demo.")] = Path(
             "spml-experiment-demo"),
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Prefect logs.")] = False,
         ) -> None:
    """Run brief -> design -> plan -> develop -> handoff -> Auto Research on the bundled
    example in DIR (a new git repository), printing each stage."""
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
                  f"cat {target}/experiences.md", highlight=False, soft_wrap=True)


def _stages(target: Path) -> None:
    from spml.cli.pipeline import _finish
    from spml.flows.design import brainstorm_flow
    from spml.flows.develop import develop_flow
    from spml.flows.handoff import handoff_flow
    from spml.flows.plan import plan_flow
    from spml.toolkit.examples import examples_root
    from spml.toolkit.pipeline.brief import load_brief

    design = brainstorm_flow(str(target), load_brief(target / "brief.yaml"), "brief.yaml")
    console.print(f"[bold]1. design[/]  {design['design']}", soft_wrap=True, highlight=False)
    plan = plan_flow(str(target))
    console.print(f"[bold]2. plan[/]    {plan['plan']}", soft_wrap=True, highlight=False)
    script = examples_root() / PIPELINE_EXAMPLE / IMPLEMENTER / "implement.py"
    implementer = (f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} --subtask "
                   "{subtask} --attempt {attempt} --workdir {workdir} --prompt-file "
                   "{prompt_file}")
    console.print("[bold]3. develop[/] (scripted implementer)")
    _finish(develop_flow(str(target), implementer, "stop", return_state=True), "develop")
    console.print("[bold]4. handoff[/] -> Auto Research")
    _finish(handoff_flow(str(target), "autoresearch", start=True, return_state=True), "handoff")


@app.command("next")
def next_command(directory: Annotated[Path, typer.Argument(
        help="The experiment directory.")]) -> None:
    """Print the next stage on the first line (brainstorm, plan, develop, revise, handoff, run,
    verify or done), then why."""
    from spml.cli.pipeline import _existing_dir
    from spml.toolkit.pipeline.reentry import next_stage

    nxt = next_stage(_existing_dir(directory))
    typer.echo(f"{nxt.stage}\n{nxt.why}")
