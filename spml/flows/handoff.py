"""The `handoff` flow: a validated pipeline -> the document a loop runs from, and the loop.

Refuses to start until `develop` ticked the ``[INTEGRATION]`` subtask (the Validation Pyramid
passed). Runs SPML's pre-checks (`spml.toolkit.pipeline.handoff_checks`), recommends the watchdog
or ml-iteration by SPML's rule, writes the chosen loop's document (`spml.toolkit.pipeline.
handoff`), commits it (`experiment: handoff — <loop>`) and, with ``start``, runs the loop: as a
subflow here, or as a run of its deployment (``autoresearch/default`` ...) for a worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from spml.errors import ProtocolError
from spml.tasks.pipeline import checks_task, commit_task, write_task
from spml.toolkit.pipeline import handoff, stages

DEPLOYMENTS = {"autoresearch": "autoresearch/default", "iteration": "ml-iteration/default",
               "watchdog": "watchdog/default"}


@flow(name="handoff")
def handoff_flow(experiment_dir: str,
                 to: Literal["watchdog", "iteration", "autoresearch"] | None = None,
                 start: bool = False, via_deployment: bool = False,
                 researcher_command: str | None = None) -> State[Any]:
    """Check, write and commit the handoff of ``experiment_dir``; with ``start``, run the loop.

    Args:
        to: the loop; default: Auto Research when the design has an ``autoresearch`` section,
            else SPML's recommendation (ml-iteration when a criterion is unmet in L1's numbers,
            the watchdog when all are met).
        start: run the loop after the handoff.
        via_deployment: start it as a run of its deployment (a worker picks it up) instead of
            a subflow here.
        researcher_command: ml-iteration's researcher (a coding agent command).
    """
    logger = get_run_logger()
    exp = Path(experiment_dir).resolve()
    stages.keep_logs_out_of_git(exp)
    design_path, design = stages.require_design(exp)
    plan_path, plan = stages.require_plan(exp)
    integration = plan.integration
    if integration is None or integration.status != "done":
        raise ProtocolError(f"{plan_path.name}: the [INTEGRATION] subtask is not ticked, so the "
                            "Validation Pyramid has not passed; run `spml develop "
                            f"{experiment_dir}` first.")
    unfinished = [f"Subtask {s.number}" for s in plan.subtasks if s.status != "done"]
    if unfinished:
        raise ProtocolError(f"{plan_path.name}: {', '.join(unfinished)} not done (skipped or "
                            f"revised); finish them with `spml develop {experiment_dir}` first.")
    if to == "iteration":
        # refused now, not after minutes of pre-check runs
        handoff.researcher_spec(researcher_command)
    if to == "autoresearch" and design.autoresearch is None:
        raise ProtocolError("the design has no `autoresearch:` section; add one (`spml schema "
                            "design`) or hand off to the watchdog or ml-iteration instead.")
    settings = handoff.handoff_settings(exp, design)
    report = checks_task(str(exp), settings)
    recommendation = handoff.recommend_route(design, report.l1.as_dict() if report.l1 else {})
    route = to or ("autoresearch" if design.autoresearch else recommendation.route)
    logger.info("recommended: %s (%s); handing off to %s", recommendation.route,
                "; ".join(recommendation.reasons), route)
    result: dict[str, Any] = {"route": route, "recommended": recommendation.route,
                              "reasons": recommendation.reasons, "checks": report.text()}
    if not report.passed:
        return Failed(message=f"handoff refused: {len(report.failures)} pre-check(s) failed",
                      data=result)
    summary = [f"design: {design_path.name}", f"plan: {plan_path.name}",
               *report.text().splitlines()]
    result["written"] = write_task(str(exp), route, design, settings, summary,
                                   researcher_command)
    # The ledger is the loop's to write from now on: it stays out of git, as every loop's does.
    documents = [Path(p).relative_to(exp).as_posix() for p in result["written"]
                 if Path(p).name != handoff.LEDGER_FILENAME]
    result["commit"] = commit_task(str(exp), f"experiment: handoff — {route}", documents)
    if start:
        result["loop"] = _start(route, str(exp), via_deployment)
    return Completed(message=f"handed off to {route}", data=result)


def _start(route: str, exp: str, via_deployment: bool) -> str:
    if via_deployment:
        from prefect.deployments import run_deployment

        run = run_deployment(DEPLOYMENTS[route], parameters={"experiment_dir": exp}, timeout=0)
        return f"flow run {run.id} of {DEPLOYMENTS[route]}"
    if route == "autoresearch":
        from spml.flows.autoresearch import autoresearch_flow as loop
    elif route == "iteration":
        from spml.flows.iteration import iteration_flow as loop
    else:
        from spml.flows.watchdog import watchdog_flow as loop
    state = loop(exp, return_state=True)
    return f"{state.name}: {state.message}"
