"""Mark the flow run of a supervisor that was killed (-9, lost node) as Crashed on resume.

A killed supervisor cannot report its own end, so its flow run (and the round subflow in
flight) would stay Running in the UI forever. Each run records its id in the experiment's
state; the experiment lock proves that the run recorded before this one is dead.
"""

from __future__ import annotations

from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.context import get_run_context
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from spml.toolkit.loop.control import swap_supervisor_run
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.kind import kind_named

UNFINISHED = [StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]


@task(name="crash-stale-runs", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def crash_stale_runs(experiment_dir: str, kind: str = "autoresearch") -> int:
    """Set Crashed on the previous supervisor's unfinished run and its round subflows."""
    current = get_run_context().task_run.flow_run_id
    experiment = Experiment.locate(experiment_dir, kind_named(kind).protocol_filename)
    previous = swap_supervisor_run(experiment, str(current))
    if previous is None:
        return 0
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(previous))
        except (ObjectNotFound, ValueError):  # run deleted, or recorded by another server
            return 0
        if run.state is None or run.state.type not in UNFINISHED:
            return 0
        stale = [run.id, *_unfinished_children(client, run.id)]
        for run_id in stale:
            client.set_flow_run_state(run_id, Crashed(
                message=f"its supervisor died; resumed by flow run {current}"), force=True)
    get_run_logger().warning("marked %d flow run(s) of a dead supervisor Crashed", len(stale))
    return len(stale)


def _unfinished_children(client: SyncPrefectClient, parent: UUID) -> list[UUID]:
    children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED))))
    return [c.id for c in children]
