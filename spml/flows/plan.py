"""The `plan` flow: the design doc -> a gated, committed plan (SPML's experiment-planning).

Refuses to start without a design that passes `design check`. A first run writes
``plans/<date>-<topic>.md``; a later run revises that plan in place with SPML's markers (never a
second plan). An optional drafter command (any coding agent) may then rewrite the prose; the
plan gate (`plan check`) runs last, and only a plan that passes is committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from spml.errors import ProtocolError
from spml.protocols.plan import load_plan
from spml.protocols.plan_gate import check_plan
from spml.tasks.pipeline import commit_task, drafter_task, publish, write_plan_task
from spml.toolkit.pipeline import stages


@flow(name="plan")
def plan_flow(experiment_dir: str, drafter: str | None = None) -> dict[str, Any]:
    """Plan (or revise the plan of) the experiment in ``experiment_dir`` and commit it.

    Raises:
        ProtocolError: no design, a design that fails its check, or a plan that fails the
            plan gate (one line per problem; the plan file is put back as it was and the
            rejected text kept in .spml/plan/ to look at).
    """
    logger = get_run_logger()
    exp = Path(experiment_dir).resolve()
    stages.keep_logs_out_of_git(exp)
    if drafter:
        stages.check_drafter_command(drafter)
    result = write_plan_task(str(exp))
    plan_path = Path(result["plan"])
    if drafter:
        logger.info("drafter: %s", drafter_task(drafter, str(exp), result["plan"]))
    rows = check_plan(load_plan(plan_path))
    if rows:
        kept = stages.put_back(exp, plan_path, result["previous"])
        raise ProtocolError(stages.gate_report(plan_path, rows) + f"\n  (rejected text: {kept})")
    message = (f"experiment: revise plan — {'; '.join(result['changes'])}" if result["revised"]
               else f"experiment: plan — {result['topic']}")
    # The design goes in too when it has uncommitted edits: the plan's commit records the design
    # it was derived from (the basis of the next revision and of develop's staleness check).
    design = Path(result.pop("design"))
    result["commit"] = commit_task(str(exp), message, [plan_path.relative_to(exp).as_posix(),
                                                       design.relative_to(exp).as_posix()])
    publish("plan", plan_path.read_text(encoding="utf-8"),
            f"plan {'revised' if result['revised'] else 'written'}: {plan_path.name}")
    logger.info("plan %s: %s", "revised" if result["revised"] else "written", plan_path)
    result.pop("previous")
    return result
