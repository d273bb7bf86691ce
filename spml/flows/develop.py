"""The `develop` flow: each unticked subtask through its gates (SPML's ml-subagent-dev).

Refuses to start without a plan that passes the plan gate. Per subtask (in plan order; ``[x]``
ones keep their results and are skipped): the implementer command writes the code, then its
tests run, and for the ``[INTEGRATION]`` subtask L0 (SPML's profile) and L1. Failures go back
to the implementer (`spml.toolkit.pipeline.develop`, SPML's fix loop); five in a row at one
level pause the flow for a person (retry / skip / stop in the UI form) or, with
``on_stuck="stop"`` (the CLI), end it with the report. A finished subtask gets its
``## Conclusion``, is ticked ``[x]`` and committed as ``experiment: <title>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Completed, Failed, State
from pydantic import Field

from spml.protocols.plan import Subtask, load_plan
from spml.tasks.pipeline import (
    commit_task,
    implementer_task,
    l0_task,
    l1_task,
    publish,
    record_task,
    tests_task,
)
from spml.toolkit.git.checkout import current_branch, dirty_paths, dirty_snapshot
from spml.toolkit.pipeline import stages
from spml.toolkit.pipeline.conclusion import code_conclusion, integration_conclusion
from spml.toolkit.pipeline.develop import (
    IMPLEMENTER_TIMEOUT_S,
    Decision,
    FixRequest,
    Stuck,
    SubtaskOutcome,
    check_implementer_command,
    develop_subtask,
)
from spml.toolkit.pipeline.levels import L0, L1, TESTS

STUCK_TIMEOUT_S = 24 * 3600


class FixDecision(RunInput):
    """What a person decides when a subtask is stuck."""

    decision: Literal["retry", "skip", "stop"] = Field(
        "retry", description="retry: five more tries (fix the code by hand first, or trust the "
        "implementer); skip: leave the subtask unticked and go on; stop: end the flow.")


@flow(name="develop")
def develop_flow(experiment_dir: str, implementer: str | None = None,
                 on_stuck: Literal["pause", "stop"] = "pause",
                 runtime: dict[str, Any] | None = None,
                 implementer_timeout: float = IMPLEMENTER_TIMEOUT_S) -> State[Any]:
    """Develop every unticked subtask of the experiment's plan.

    Args:
        experiment_dir: the experiment (holds plans/ and the code).
        implementer: command that writes or fixes code (placeholders {prompt_file},
            {subtask}, {level}, {attempt}, {workdir}); None: the person already did.
        on_stuck: "pause" for a person's decision in the UI, "stop" to end with the report.
        runtime: L1 settings overriding [tool.spml.validate.runtime] (e.g. max_steps).
        implementer_timeout: seconds one implementer run may take.

    Returns:
        Completed with the subtasks' outcomes, or Failed naming the stuck subtask and level
        (its report in the state's data).
    """
    exp = Path(experiment_dir).resolve()
    stages.keep_logs_out_of_git(exp)
    plan_path, plan = stages.require_plan(exp)
    design_path, design = stages.require_design(exp)
    stages.require_plan_current(exp, plan_path, design_path)
    pending = [s for s in plan.subtasks if s.status != "done"]
    if implementer:
        check_implementer_command(implementer)
    if any(s.integration for s in pending):
        stages.require_runtime(exp, runtime)  # L1 needs it: say so now, not after the tests
    branch, persons = current_branch(exp), dirty_paths(exp)
    if persons:
        get_run_logger().warning("uncommitted files stay out of develop's commits unless a "
                                 "subtask names or changes them: %s", ", ".join(sorted(persons)))
    outcomes: dict[str, str] = {}
    for subtask in pending:
        before = dirty_snapshot(exp)
        outcome = _develop_one(str(exp), subtask, (implementer, implementer_timeout), on_stuck,
                               runtime, plan.header)
        outcomes[f"Subtask {subtask.number}"] = _outcome_text(outcome)
        if outcome.status == "stopped":
            assert outcome.stuck is not None
            return Failed(message=outcome.stuck.message(),
                          data={"outcomes": outcomes, "report": outcome.stuck.last.report})
        stages.require_branch(exp, branch)
        changed = stages.subtask_files(exp, subtask, before, dirty_snapshot(exp))
        conclusion = _conclusion(subtask, outcome, plan.header, design, changed)
        record_task(str(exp), str(plan_path), subtask.number, conclusion,
                    outcome.status == "done")
        title = subtask.title.replace("[INTEGRATION]", "").strip()
        skipped = "" if outcome.status == "done" else " (skipped: stuck)"
        commit_task(str(exp), f"experiment: {title}{skipped}",
                    [*changed, plan_path.relative_to(exp).as_posix()])
    publish("develop", load_plan(plan_path).render(), f"develop: {outcomes or 'all done'}")
    return Completed(message=f"develop: {_summary(outcomes)}", data={"outcomes": outcomes})


def _develop_one(exp: str, subtask: Subtask, implementer: tuple[str | None, float],
                 on_stuck: str, runtime: dict[str, Any] | None, header: dict[str, str]
                 ) -> SubtaskOutcome:
    logger = get_run_logger()
    levels = [(TESTS, lambda: tests_task(exp, subtask.number, subtask.tests))]
    if subtask.integration:
        levels += [(L0, lambda: l0_task(exp, subtask.number)),
                   (L1, lambda: l1_task(exp, subtask.number, runtime))]

    command, timeout_s = implementer

    def implement(request: FixRequest) -> str:
        assert command is not None
        return implementer_task(command, exp, request, header, timeout_s)

    def decide(stuck: Stuck) -> Decision:
        logger.warning("%s\n%s", stuck.message(), stuck.last.report)
        if on_stuck == "stop":
            return "stop"
        answer = pause_flow_run(wait_for_input=FixDecision.with_initial_data(
            description=stuck.message(), decision="retry"), timeout=STUCK_TIMEOUT_S)
        return answer.decision

    return develop_subtask(subtask, levels, implement if command else None, decide,
                           lambda phase: logger.info("Subtask %d: %s", subtask.number, phase))


def _conclusion(subtask: Subtask, outcome: SubtaskOutcome, header: dict[str, str],
                design: Any, changed: list[str]) -> dict[str, str]:
    if outcome.status != "done":
        assert outcome.stuck is not None
        return {"Result": "skipped", "Evidence": outcome.stuck.message()}
    tests = outcome.results[TESTS]
    if not subtask.integration:
        return code_conclusion(subtask.fields.get("Role", ""), tests, changed)
    return integration_conclusion(header.get("Hypothesis", ""), design.review_criteria,
                                  outcome.results[L0], outcome.results[L1])


def _outcome_text(outcome: SubtaskOutcome) -> str:
    fixes = f" after {outcome.fixes} fix(es)" if outcome.fixes else ""
    return f"{outcome.status}{fixes}"


def _summary(outcomes: dict[str, str]) -> str:
    if not outcomes:
        return "every subtask was already done"
    return ", ".join(f"{name} {status}" for name, status in outcomes.items())
