"""The `plan` flow: the design doc -> a gated, committed plan (SPML's experiment-planning).

Refuses to start without a design that passes `design check`. A first run writes
``plans/<date>-<topic>.md``; a later run revises that plan in place with SPML's markers (never a
second plan). An optional drafter command (any coding agent) may then rewrite the prose; the
plan gate (`plan check`) runs last, and only a plan that passes is committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from spml.errors import ProtocolError
from spml.protocols.plan import load_plan
from spml.protocols.plan_gate import check_plan
from spml.tasks.pipeline import FILE_TASK, RUN_TASK, commit_task, publish
from spml.toolkit.pipeline import stages
from spml.toolkit.pipeline.planner import find_plan, new_plan_text, plan_filename, revise_plan


@task(name="write the plan", **FILE_TASK)
def write_plan_task(experiment_dir: str) -> dict[str, Any]:
    """Write a new plan or revise the existing one; what changed."""
    from spml.toolkit.files import write_atomic

    exp = Path(experiment_dir)
    design_path, design = stages.require_design(exp)
    runtime = stages.runtime_table(exp)
    label = stages.experiment_label(exp)
    existing = find_plan(exp)
    if existing is None:
        path = exp / "plans" / plan_filename(design_path)
        write_atomic(path, new_plan_text(exp, label, design, runtime))
        return {"plan": str(path), "revised": False, "changes": [], "topic": design.topic}
    revised, changes = revise_plan(load_plan(existing), label, design, runtime)
    if changes:
        write_atomic(existing, revised.render())
    return {"plan": str(existing), "revised": True, "changes": changes, "topic": design.topic}


@task(name="drafter", **RUN_TASK)
def drafter_task(command: str, experiment_dir: str, plan: str) -> str:
    """Let a coding agent rewrite the plan's prose (`{plan_file}`, `{design_file}`,
    `{workdir}`); the gate judges what it leaves."""
    return stages.run_drafter(command, Path(experiment_dir), Path(plan))


@flow(name="plan")
def plan_flow(experiment_dir: str, drafter: str | None = None) -> dict[str, Any]:
    """Plan (or revise the plan of) the experiment in ``experiment_dir`` and commit it.

    Raises:
        ProtocolError: no design, a design that fails its check, or a plan that fails the
            plan gate (one line per problem; the plan is left uncommitted to fix).
    """
    logger = get_run_logger()
    result = write_plan_task(experiment_dir)
    if drafter:
        logger.info("drafter: %s", drafter_task(drafter, experiment_dir, result["plan"]))
    plan_path = Path(result["plan"])
    rows = check_plan(load_plan(plan_path))
    if rows:
        raise ProtocolError(stages.gate_report(plan_path, rows))
    message = (f"experiment: revise plan — {'; '.join(result['changes'])}" if result["revised"]
               else f"experiment: plan — {result['topic']}")
    result["commit"] = commit_task(experiment_dir, message) if (
        not result["revised"] or result["changes"]) else None
    publish("plan", plan_path.read_text(encoding="utf-8"),
            f"plan {'revised' if result['revised'] else 'written'}: {plan_path.name}")
    logger.info("plan %s: %s", "revised" if result["revised"] else "written", plan_path)
    return result
