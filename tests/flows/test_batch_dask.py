"""`parallel: {runner: dask}` on real Dask clusters: a LocalCluster the runner starts, and a
scheduler with two workers this test starts on 127.0.0.1. The workers get each candidate's code
from a git remote (a bare repository here), never from the supervisor's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import git
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)

from spml.flows.autoresearch import autoresearch_flow
from spml.protocols.autoresearch import PROTOCOL_FILENAME
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.process.sandbox import unavailable_reason

pytest.importorskip("prefect_dask")
pytestmark = pytest.mark.skipif(bool(unavailable_reason()),
                                reason=f"no sandbox here: {unavailable_reason()}")


def spans(path: Path) -> dict[int, tuple[float, float, str]]:
    """Round -> (start, end, working directory) of its training run."""
    rows = (line.split() for line in path.read_text().splitlines())
    return {int(r[0]): (float(r[2]), float(r[3]), r[4]) for r in rows}


def batch_plan(log: Path) -> dict[str, str]:
    return {str(n): f"set:x={x},train_s=1.5,spans={log}"
            for n, x in ((1, 1.0), (2, 2.9), (3, 2.0), (4, -5.0))}


def remote_tasks(flow_run_id) -> list:
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        [batch] = [c for c in children if c.name.startswith("batch-")]
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[batch.id])))
    return [t for t in tasks if "on a worker" in t.name]


def assert_batch_kept_r2(exp: Path, state) -> None:
    assert state.is_completed()
    summary = state.result()
    assert (summary.rounds_done, summary.commits, summary.best_round) == (4, 1, 2)
    rows = read_ledger(Experiment.locate(exp, PROTOCOL_FILENAME)).rows
    assert [r.verdict for r in rows[1:]] == ["rolled_back", "committed", "rolled_back",
                                             "rolled_back"]
    # Every round's logs came back from its worker.
    for n in (1, 2, 3, 4):
        round_dir = Experiment.locate(exp, PROTOCOL_FILENAME).round_dir(n)
        assert list(round_dir.glob("train-*.log")), sorted(p.name for p in round_dir.iterdir())


def test_a_batch_on_a_local_dask_cluster(unique_experiment, tmp_path: Path) -> None:
    log = tmp_path / "researcher" / "spans.txt"
    exp = unique_experiment(batch_plan(log), plan_dir=log.parent, max_rounds=4,
                            parallel={"candidates": 4, "runner": "dask"})
    state = autoresearch_flow(str(exp), return_state=True)
    assert_batch_kept_r2(exp, state)
    trained = spans(log)
    assert max(s for s, _, _ in trained.values()) < min(e for _, e, _ in trained.values())
    # Each candidate trained in a worker's scratch clone, not in a supervisor's worktree.
    assert all("spml-candidate-" in cwd for _, _, cwd in trained.values())
    assert len(remote_tasks(state.state_details.flow_run_id)) == 4


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory,
                 prefect_api_url: str) -> Iterator[tuple[str, Path]]:
    """A scheduler and two single-thread workers on 127.0.0.1, as separate processes; worker 0
    offers one `GPU` resource (there is no GPU here: Dask only counts it). Yields the address
    and the folder holding each worker's scratch folder (`worker-0`, `worker-1`)."""
    tmp = tmp_path_factory.mktemp("dask")
    scheduler_file = tmp / "scheduler.json"
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    bin_dir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file",
                               str(scheduler_file)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    for n in range(2):
        scratch = tmp / f"worker-{n}"
        scratch.mkdir()
        resources = ["--resources", "GPU=1"] if n == 0 else []
        procs.append(subprocess.Popen(
            [str(bin_dir / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
             "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{n}", *resources,
             "--local-directory", str(scratch)],
            env={**env, "TMPDIR": str(scratch)}, cwd=scratch, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
    try:
        yield address, tmp
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def worker_of(cwd: str) -> str:
    """`0` or `1`: which worker's scratch folder a training ran in."""
    return cwd.split("/worker-")[1].split("/")[0]


def test_a_batch_on_a_dask_scheduler_with_two_workers(
        unique_experiment, tmp_path: Path, dask_cluster: tuple[str, Path]) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    log = tmp_path / "researcher" / "spans.txt"
    exp = unique_experiment(batch_plan(log), plan_dir=log.parent, max_rounds=4, parallel={
        "candidates": 4, "runner": "dask", "address": dask_cluster[0],
        "git_remote": str(remote)})
    state = autoresearch_flow(str(exp), return_state=True)
    assert_batch_kept_r2(exp, state)
    # The candidates went through the remote: one ref each, with the candidate's params.
    name = Experiment.locate(exp, PROTOCOL_FILENAME).name
    for n, x in ((1, 1.0), (2, 2.9), (3, 2.0), (4, -5.0)):
        shown = git(remote, "show", f"refs/spml/candidates/{name}/{n}:{exp.name}/params.yaml")
        assert shown.startswith(f"x: {x}")
    # Both workers trained (two at a time: one thread each), each in its own scratch folder.
    trained = spans(log)
    assert {worker_of(cwd) for _, _, cwd in trained.values()} == {"0", "1"}
    assert len(remote_tasks(state.state_details.flow_run_id)) == 4


def test_gpus_per_candidate_on_dask_waits_for_a_worker_with_gpus(
        unique_experiment, tmp_path: Path, dask_cluster: tuple[str, Path]) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    log = tmp_path / "researcher" / "spans.txt"
    plan = {"1": f"set:x=1.0,spans={log}", "2": f"set:x=2.0,spans={log}"}
    exp = unique_experiment(plan, plan_dir=log.parent, max_rounds=2, parallel={
        "candidates": 2, "runner": "dask", "address": dask_cluster[0],
        "git_remote": str(remote), "gpus_per_candidate": 1})
    assert autoresearch_flow(str(exp), return_state=True).is_completed()
    # Only worker 0 offers a GPU: both candidates trained there, one after the other.
    assert {worker_of(cwd) for _, _, cwd in spans(log).values()} == {"0"}
