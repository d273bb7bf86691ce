"""The supervisor's own flow run: findable by name and tags, and the run it replaced ended.

Each run of a loop is named `<kind>-<experiment>-<n>` (its n-th run) and tagged `spml`,
`<kind>` and `experiment:<experiment>`; the rounds and tasks started inside `loop_tags` carry
the same tags, so the UI's filters find one experiment's runs on a shared server.

A killed supervisor (-9, lost node) cannot report its own end, so its flow run (and the round
subflow in flight) would stay Running in the UI forever. Each run records its id in the
experiment's state; the experiment lock proves that the run recorded before this one is dead,
and it is marked Crashed here.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class RunIdentity:
    """The experiment's name, this run's name and the tags of everything it starts."""

    experiment: str
    name: str
    tags: tuple[str, ...]


def loop_tags(kind: str, experiment: str) -> tuple[str, ...]:
    """The tags of a loop's runs: filter the UI by `experiment:<name>` to see one experiment."""
    return ("spml", kind, f"experiment:{experiment}")


@task(name="claim-flow-run", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def claim_flow_run(experiment_dir: str, kind: str = "autoresearch") -> RunIdentity:
    """Name and tag this flow run; set Crashed on the previous supervisor's unfinished run and
    its round subflows."""
    current = get_run_context().task_run.flow_run_id
    experiment = Experiment.locate(experiment_dir, kind_named(kind).protocol_filename)
    previous, number = swap_supervisor_run(experiment, str(current))
    identity = RunIdentity(experiment.name, f"{kind}-{experiment.name}-{number}",
                           loop_tags(kind, experiment.name))
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(current)
        client.update_flow_run(current, name=identity.name,
                               tags=sorted({*run.tags, *identity.tags}))
        if previous is not None:
            _crash_stale(client, previous, current)
    return identity


def _crash_stale(client: SyncPrefectClient, previous: str, current: UUID) -> None:
    try:
        run = client.read_flow_run(UUID(previous))
    except (ObjectNotFound, ValueError):  # run deleted, or recorded by another server
        return
    if run.state is None or run.state.type not in UNFINISHED:
        return
    stale = [run.id, *_unfinished_children(client, run.id)]
    for run_id in stale:
        client.set_flow_run_state(run_id, Crashed(
            message=f"its supervisor died; resumed by flow run {current}"), force=True)
    get_run_logger().warning("marked %d flow run(s) of a dead supervisor Crashed", len(stale))


def _unfinished_children(client: SyncPrefectClient, parent: UUID) -> list[UUID]:
    children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED))))
    return [c.id for c in children]
