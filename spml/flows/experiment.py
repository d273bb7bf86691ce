"""The `experiment` flow: the whole road, from wherever the directory stands.

    brainstorm -> plan -> develop -> handoff -> (watchdog | ml-iteration | autoresearch)
               -> verification

Each stage is its own flow, run here as a subflow; which one comes next is read from the
directory after every stage (`spml.toolkit.pipeline.reentry.next_stage`), so a run that was
stopped, killed or left for a person continues where the files say it stands. The person's
choices arrive as the stages already take them: the brainstorm's answers as a form in the UI
(a paused run) or a brief, develop's stuck subtasks as a pause, the loop's route as ``to``.

No lock is held here: each loop (and the verification) takes the experiment's lock itself,
and one process cannot hold that ``flock`` twice. A ``revise`` stage (code that predates the
plan) and a watchdog experiment's verification need a person, so the run ends there saying
what to do.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State

from spml.flows.autoresearch import autoresearch_flow
from spml.flows.design import brainstorm_flow
from spml.flows.develop import develop_flow
from spml.flows.handoff import handoff_flow
from spml.flows.iteration import iteration_flow
from spml.flows.plan import plan_flow
from spml.flows.verification import verification_flow
from spml.flows.watchdog import watchdog_flow
from spml.toolkit.pipeline.reentry import LOOP_DOCUMENTS, NextStage, Stage, next_stage
from spml.toolkit.verification.experiment import DEFAULT_RUNS, check_settings

# Stage lines go to this plain logger: Prefect sends it to the run's logs (an extra logger)
# and the CLI prints it, so a person sees each stage as it ends.
log = logging.getLogger("spml.experiment")
MAX_STAGES = 12   # the road has 6 stages; more means a stage stopped making progress
Route = Literal["watchdog", "iteration", "autoresearch"]


@task(name="what comes next", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def next_stage_task(experiment_dir: str) -> NextStage:
    """Read the directory: the next stage and why."""
    return next_stage(Path(experiment_dir))


@flow(name="experiment")
def experiment_flow(experiment_dir: str, brief: dict[str, Any] | None = None,  # noqa: PLR0913
                    implementer: str | None = None,
                    on_stuck: Literal["pause", "stop"] = "pause", to: Route | None = None,
                    researcher_command: str | None = None,
                    verify_runs: int = DEFAULT_RUNS,
                    until: Stage | None = None) -> State[Any]:
    """Run the experiment in ``experiment_dir`` from its next stage to verification.

    Args:
        brief: the brainstorm's answers; None pauses the run for them as a form in the UI.
        implementer: develop's coding command (None: the person wrote the code already).
        on_stuck: develop's choice for a subtask that keeps failing: pause for a person or stop.
        to: the loop (default: the handoff's recommendation).
        researcher_command: ml-iteration's researcher (a coding agent command).
        verify_runs: fresh-seed runs of each arm in the verification.
        until: stop before this stage (e.g. ``handoff`` to look at the code first).

    Returns:
        Completed with the stages walked and the next one (``done`` at the end), or Failed
        naming the stage that failed or needs a person.
    """
    check_settings(verify_runs, 0.95, "welch")  # refused now, not after the loop
    exp = str(Path(experiment_dir).resolve())
    walked: list[dict[str, str]] = []
    options = {"brief": brief, "implementer": implementer, "on_stuck": on_stuck, "to": to,
               "researcher_command": researcher_command, "verify_runs": verify_runs,
               "start_loop": until != "run"}
    for _ in range(MAX_STAGES):
        nxt = next_stage_task(exp)
        if nxt.stage == "done" or nxt.stage == until:
            return _ended(walked, nxt, Completed)
        if nxt.stage == "revise":
            return _ended(walked, nxt, Failed, f"a person revises the design first: {nxt.why} "
                          f"(`spml design new {exp}`), then `spml experiment run` continues")
        log.info("%s: %s", nxt.stage, nxt.why)
        ok, outcome = _run_stage(nxt.stage, exp, options)
        walked.append({"stage": nxt.stage, "outcome": outcome})
        log.info("%s -> %s", nxt.stage, outcome)
        if not ok:
            return _ended(walked, nxt, Failed, f"{nxt.stage} failed: {outcome}")
        if next_stage_task(exp).stage == nxt.stage:
            return _ended(walked, nxt, Failed, f"{nxt.stage} ended without moving the "
                          f"experiment on ({outcome})")
    return _ended(walked, next_stage_task(exp), Failed, f"stopped after {MAX_STAGES} stages")


def _ended(walked: list[dict[str, str]], nxt: NextStage, state: Any,
           message: str = "") -> State[Any]:
    text = message or f"next: {nxt.stage} ({nxt.why})"
    return state(message=text, data={"stages": walked, "next": nxt.stage, "why": nxt.why})


def _run_stage(stage: Stage, exp: str, options: dict[str, Any]) -> tuple[bool, str]:
    """Run one stage's flow; whether it succeeded and its outcome in words."""
    if stage == "brainstorm":
        return True, f"design {brainstorm_flow(exp, options['brief'], 'the brief')['design']}"
    if stage == "plan":
        return True, f"plan {plan_flow(exp)['plan']}"
    if stage == "develop":
        return _state(develop_flow(exp, options["implementer"], options["on_stuck"],
                                   return_state=True))
    if stage == "handoff":
        return _state(handoff_flow(exp, options["to"], start=options["start_loop"],
                                   researcher_command=options["researcher_command"],
                                   return_state=True))
    if stage == "run":
        return _run_loop(exp)
    result = verification_flow(exp, options["verify_runs"])
    return True, f"{result['verdict']} — {result['reason']}"


def _run_loop(exp: str) -> tuple[bool, str]:
    document = next(name for name in LOOP_DOCUMENTS if (Path(exp) / name).is_file())
    if document == "autoresearch-protocol.md":
        return _state(autoresearch_flow(exp, return_state=True))
    if document == "iteration-protocol.md":
        return _state(iteration_flow(exp, return_state=True))
    return _state(watchdog_flow(exp, return_state=True))


def _state(state: State[Any]) -> tuple[bool, str]:
    """A subflow's final state as (ok, message); a refusal inside it is raised again."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException) and not state.is_completed():
        raise result
    loop = result.get("loop") if isinstance(result, dict) else None
    message = state.message or state.name or ""
    return state.is_completed(), f"{message}; loop: {loop}" if loop else message
