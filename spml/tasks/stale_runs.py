"""Mark flow runs of a supervisor that was killed (-9, lost node) as Crashed on resume.

A killed supervisor cannot report its own end, so its flow run (and the round subflow in
flight) would stay Running in the UI forever. The experiment lock proves that no other
supervisor of this experiment is alive, so every other Running run for it is dead.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.context import get_run_context
from prefect.states import Crashed

FLOW_NAME = "autoresearch"


@task(name="crash-stale-runs", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def crash_stale_runs(experiment_dir: str) -> int:
    """Set Crashed on earlier Running runs of this experiment (and their round subflows)."""
    current = get_run_context().task_run.flow_run_id
    target = Path(experiment_dir).resolve()
    running = FlowRunFilter(state=FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=running, flow_filter=FlowFilter(
            name=FlowFilterName(any_=[FLOW_NAME])))
        stale = [r.id for r in runs if r.id != current and _same_dir(r.parameters, target)]
        stale += _children(client, stale)
        for run_id in stale:
            client.set_flow_run_state(run_id, Crashed(
                message=f"its supervisor died; resumed by flow run {current}"), force=True)
    if stale:
        get_run_logger().warning("marked %d flow run(s) of a dead supervisor Crashed", len(stale))
    return len(stale)


def _same_dir(parameters: dict, target: Path) -> bool:
    value = parameters.get("experiment_dir")
    return isinstance(value, str) and Path(value).resolve() == target


def _children(client, parents: list[UUID]) -> list[UUID]:  # noqa: ANN001
    if not parents:
        return []
    children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))))
    return [c.id for c in children]
