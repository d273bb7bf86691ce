"""Prefect tasks of a batch of candidates (`parallel:` in the protocol), and the task runners
that run them at once.

The candidates' researchers always run on this machine, in Prefect's thread-pool task runner
(each one waits on its own subprocess, in its own worktree). Their trainings run there too for
`runner: local`; for `runner: dask` they are submitted through Prefect's Dask task runner
(`prefect-dask`) to a `LocalCluster`, or to the scheduler at `parallel.address`, each as a
`RemoteJob` that carries its code as a git ref (`spml.toolkit.loop.remote`). Every task that
runs here rebuilds its session from disk (`LoopSession.load`); every task touches git, files and
processes: `cache_policy=NO_CACHE`.
"""

from __future__ import annotations

import atexit
import logging
import socket
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.task_runners import ThreadPoolTaskRunner

from spml.errors import ProtocolError
from spml.protocols.experiences import format_value
from spml.protocols.parallel import ParallelSpec
from spml.tasks.artifacts import publish_round
from spml.tasks.loop import log_measured
from spml.tasks.ui_controls import pull_ui_controls
from spml.toolkit.loop import batch, control
from spml.toolkit.loop.begin import RoundPlan
from spml.toolkit.loop.compliance import Violation
from spml.toolkit.loop.kind import kind_named
from spml.toolkit.loop.measure import Measurement
from spml.toolkit.loop.remote import (
    RemoteJob,
    RemoteResult,
    measure_remotely,
    receive_measurement,
    ship_candidate,
)
from spml.toolkit.loop.researchers import Proposal
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.loop.settle import RoundOutcome


def _session(experiment_dir: str, kind: str) -> LoopSession:
    return LoopSession.load(experiment_dir, kind_named(kind))


def task_runner_for(spec: ParallelSpec, candidates: int) -> Any:
    """The task runner of a batch's trainings: one thread per candidate, or Dask."""
    if spec.runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner  # the optional `dask` extra
        except ImportError:
            raise ProtocolError("parallel.runner dask needs Prefect's Dask task runner: "
                                "pip install 'spml-flows[dask]' (prefect-dask), or set "
                                "parallel.runner to local") from None
        return DaskTaskRunner(address=spec.address or _local_cluster(candidates))
    return ThreadPoolTaskRunner(max_workers=candidates)


_LOCAL_CLUSTERS: dict[tuple[int, str], Any] = {}


def _local_cluster(workers: int) -> str:
    """The address of a Dask LocalCluster of ``workers`` single-thread processes, started once
    per supervisor process and kept for its later batches: its workers have imported spml and
    Prefect by then (a cold start costs seconds per batch). Closed when the process exits."""
    api_url = _api_url()
    key = (workers, api_url)
    if key not in _LOCAL_CLUSTERS:
        from distributed import LocalCluster

        # The workers report their task runs to this run's API: without its URL, each worker
        # of the embedded (no server) mode would start a Prefect server of its own.
        _LOCAL_CLUSTERS[key] = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            env={"PREFECT_API_URL": api_url})
        if len(_LOCAL_CLUSTERS) == 1:
            atexit.register(_close_local_clusters)
    return _LOCAL_CLUSTERS[key].scheduler_address


def _close_local_clusters() -> None:
    # At exit Prefect's API log handler is gone: the cluster's farewell lines would only fail.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    for cluster in _LOCAL_CLUSTERS.values():
        cluster.close()
    _LOCAL_CLUSTERS.clear()


def _api_url() -> str:
    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")


# persist_result=False: plans carry copies of .git/config and hooks (which may hold
# credentials); they must never be written to Prefect's result storage.
@task(name="S0-begin-batch", task_run_name="R{first}.. S0: begin a batch",
      cache_policy=NO_CACHE, retries=0, persist_result=False)
def start_batch(experiment_dir: str, first: int, kind: str) -> tuple[RoundPlan, ...] | None:
    """Protocol edits, notes and overrides once; a worktree, snapshot and brief per candidate."""
    plans = batch.begin_batch(_session(experiment_dir, kind), first)
    if plans is None:
        get_run_logger().info("R%d runs alone: HEAD's code needs measuring first", first)
    return plans


@task(name="S0-top-up-batch", cache_policy=NO_CACHE, retries=0, persist_result=False)
def top_up_batch(experiment_dir: str, plans: tuple[RoundPlan, ...],
                 kind: str) -> tuple[RoundPlan, ...]:
    """The incumbent's extra runs, once for the batch."""
    return batch.top_up_batch(_session(experiment_dir, kind), plans)


@task(name="S1-candidate-researcher", task_run_name="R{plan.round_no} S1: researcher",
      cache_policy=NO_CACHE, retries=0)
def research_candidate(experiment_dir: str, plan: RoundPlan, kind: str) -> Proposal:
    """S1 for one candidate, in its own worktree."""
    return batch.research_candidate(_session(experiment_dir, kind), plan)


@task(name="S2-batch-compliance", cache_policy=NO_CACHE, retries=0)
def comply_batch(experiment_dir: str, plans: tuple[RoundPlan, ...],
                 kind: str) -> tuple[list[list[Violation]], str | None]:
    """S2 for every candidate once all researchers are done, and a stop request."""
    session = _session(experiment_dir, kind)
    violations = batch.comply_batch(session, plans)
    pull_ui_controls(experiment_dir, kind)
    return violations, control.stop_requested(session.experiment)


@task(name="S3-S4-candidate-train-eval", task_run_name="R{plan.round_no} S3+S4: train, evaluate",
      cache_policy=NO_CACHE, retries=0)
def measure_candidate(experiment_dir: str, plan: RoundPlan, kind: str) -> Measurement:
    """S3+S4 for one candidate, with its own pid files and GPUs."""
    result = batch.measure_candidate(_session(experiment_dir, kind), plan)
    log_measured(plan.round_no, result)
    return result


@task(name="S5-settle-batch", cache_policy=NO_CACHE, retries=0)
def settle_batch(experiment_dir: str, plans: tuple[RoundPlan, ...], proposals: list[Proposal],
                 violations: list[list[Violation]], measurements: list[Measurement | None],
                 kind: str) -> list[RoundOutcome]:
    """S5: keep at most the best candidate, archive the others, record every row."""
    session = _session(experiment_dir, kind)
    outcomes = batch.settle_batch(session, plans, proposals, violations, measurements)
    by_round = {plan.round_no: plan for plan in plans}
    for outcome in outcomes:
        row = outcome.row
        get_run_logger().info("R%d %s: %s; insight: %s", row.round, row.verdict,
                              row.result_text or row.strategy or "—", row.insight or "—")
        publish_round(session, by_round[row.round], outcome)
    return outcomes


@task(name="discard-batch", cache_policy=NO_CACHE, retries=0)
def discard_batch(experiment_dir: str, reason: str, kind: str) -> None:
    """Undo a batch a stop request interrupted; it runs again on the next run."""
    batch.discard_current(_session(experiment_dir, kind), reason)


@dataclass(frozen=True)
class TaskBatchSteps:
    """A batch's steps as Prefect tasks, for `spml.toolkit.loop.round.run_batch`."""

    kind: str

    def begin(self, experiment_dir: str, first: int) -> tuple[RoundPlan, ...] | None:
        """Begin the batch (None: run a round alone)."""
        return start_batch(experiment_dir, first, self.kind)

    def top_up(self, experiment_dir: str,
               plans: tuple[RoundPlan, ...]) -> tuple[RoundPlan, ...]:
        """The incumbent's extra runs, once."""
        return top_up_batch(experiment_dir, plans, self.kind)

    def research_all(self, experiment_dir: str,
                     plans: tuple[RoundPlan, ...]) -> list[Proposal]:
        """S1: every candidate's researcher at once, here (one after another for Optuna)."""
        session = _session(experiment_dir, self.kind)
        workers = len(plans) if batch.proposes_concurrently(session) else 1
        return _each(ThreadPoolTaskRunner(max_workers=workers), research_candidate,
                     experiment_dir, plans, self.kind)

    def comply_all(self, experiment_dir: str, plans: tuple[RoundPlan, ...],
                   ) -> tuple[list[list[Violation]], str | None]:
        """S2 for every candidate, and a stop request."""
        return comply_batch(experiment_dir, plans, self.kind)

    def discard(self, experiment_dir: str, reason: str) -> None:
        """Undo a batch a stop request interrupted."""
        discard_batch(experiment_dir, reason, self.kind)

    def measure_all(self, experiment_dir: str,
                    plans: tuple[RoundPlan, ...]) -> list[Measurement]:
        """S3+S4: every candidate trained and evaluated at once, where `parallel:` says."""
        spec = batch.parallel_spec(_session(experiment_dir, self.kind).protocol)
        if spec.runner == "dask":
            return _measure_on_dask(experiment_dir, plans, self.kind, spec)
        return _each(task_runner_for(spec, len(plans)), measure_candidate, experiment_dir,
                     plans, self.kind)

    def settle(self, experiment_dir: str, plans: tuple[RoundPlan, ...],
               proposals: list[Proposal], violations: list[list[Violation]],
               measurements: list[Measurement | None]) -> list[RoundOutcome]:
        """S5 for the batch."""
        return settle_batch(experiment_dir, plans, proposals, violations, measurements,
                            self.kind)


def _each(runner: Any, step: Any, experiment_dir: str, plans: tuple[RoundPlan, ...],
          kind: str) -> list[Any]:
    """``step`` for every candidate at once on ``runner``; the results in the plans' order."""
    with runner:
        futures = [runner.submit(step, {"experiment_dir": experiment_dir, "plan": plan,
                                        "kind": kind}) for plan in plans]
        return [future.result() for future in futures]


def _measure_on_dask(experiment_dir: str, plans: tuple[RoundPlan, ...], kind: str,
                     spec: ParallelSpec) -> list[Measurement]:
    """Ship the candidates as git refs, train and evaluate them on the Dask workers, and save
    what comes back. A candidate that changed nothing is measured here (nothing runs)."""
    runner = task_runner_for(spec, len(plans))  # refuses clearly without prefect-dask
    import dask

    jobs = ship_candidates(experiment_dir, plans, kind)
    # gpus_per_candidate: each training waits for a worker with that many `GPU` resources
    # free (`dask worker --resources GPU=2`); the worker's own CUDA_VISIBLE_DEVICES applies.
    wanted = {"resources": {"GPU": spec.gpus_per_candidate}} if spec.gpus_per_candidate else {}
    with runner, dask.annotate(**wanted):
        futures = {job.round_no: runner.submit(train_and_evaluate_remotely, {"job": job})
                   for job in jobs if job is not None}
        results = {round_no: future.result() for round_no, future in futures.items()}
    return receive_measurements(experiment_dir, plans, results, kind)


@task(name="ship-candidates", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2,
      persist_result=False)
def ship_candidates(experiment_dir: str, plans: tuple[RoundPlan, ...],
                    kind: str) -> list[RemoteJob | None]:
    """Commit each candidate's files and push them to `parallel.git_remote`."""
    session = _session(experiment_dir, kind)
    remote = batch.parallel_spec(session.protocol).git_remote
    return [ship_candidate(session, batch.candidate_session(session, plan), plan, remote)
            for plan in plans]


@task(name="S3-S4-remote-train-eval", task_run_name="R{job.round_no} S3+S4: on a worker",
      cache_policy=NO_CACHE, retries=0, persist_result=False)
def train_and_evaluate_remotely(job: RemoteJob) -> RemoteResult:
    """On a Dask worker: fetch the candidate, train and evaluate it, send back the results."""
    result = measure_remotely(job)
    measured = result.measurement
    get_run_logger().info("R%d measured %s on %s", job.round_no,
                          ", ".join(format_value(v) for v in measured.values) or "no value",
                          socket.gethostname())
    return result


@task(name="receive-measurements", cache_policy=NO_CACHE, retries=0, persist_result=False)
def receive_measurements(experiment_dir: str, plans: tuple[RoundPlan, ...],
                         results: dict[int, RemoteResult], kind: str) -> list[Measurement]:
    """Save what the workers sent back; measure here a candidate that changed nothing."""
    session = _session(experiment_dir, kind)
    measured = []
    for plan in plans:
        if plan.round_no in results:
            receive_measurement(session, plan, results[plan.round_no])
            measured.append(results[plan.round_no].measurement)
        else:
            measured.append(batch.measure_candidate(session, plan))
    return measured
