"""End to end: `prefect deploy` the root prefect.yaml and run `autoresearch/default` on a worker.

Everything is real: a `prefect server start` subprocess with its SQLite database in a temporary
PREFECT_HOME, the `spml-process` work pool, `prefect --no-prompt deploy --all`, a process worker,
and two rounds of Auto Research on a fresh copy of the bundled `regression` example (small torch
trainings). The worker runs in an empty directory and spml is imported through the pull step
(`SPML_PROJECT_DIR` = this checkout), as deployments/README.md describes.

About 1–1.5 min on 2 cores; `-m "not slow"` skips it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
)
from prefect.settings import PREFECT_API_URL, temporary_settings

from spml.protocols.autoresearch import PROTOCOL_FILENAME
from spml.toolkit.examples import copy_example
from spml.toolkit.loop.experiment import Experiment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")  # the venv's CLI, never one on PATH
POOL = "spml-process"
ROUNDS = 2
COLUMNS = {"Round", "Compliance", "val_mse", "Verdict", "Strategy", "Insight", "Note"}
SERVER_START_S = 90.0  # a fresh database takes ~15-25 s here; leave room on a loaded box
RUN_TIMEOUT_S = 240.0


class Service:
    """A long-running CLI subprocess in its own session, logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path,
                 log: Path) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out, _sigint_default():
            self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"----- {self.name} log (last {lines} lines) -----\n" + "\n".join(
            text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after 15 s."""
        for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                return
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue


@contextmanager
def _sigint_default() -> Iterator[None]:
    # A worker started from a non-interactive shell inherits SIGINT=ignored and then ignores
    # SIGTERM too (it forwards SIGTERM as SIGINT): let the children start with a default SIGINT.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(server: Service, url: str) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"prefect server exited with {server.proc.returncode}\n{server.tail()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {SERVER_START_S:.0f} s\n{server.tail()}")


def _cli(env: dict[str, str], *args: str, timeout: float = 120.0) -> str:
    done = subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (f"prefect {' '.join(args)} -> {done.returncode}\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


class Stack:
    """The server's URL and environment, plus the running services (for their logs)."""

    def __init__(self, api_url: str, env: dict[str, str]) -> None:
        self.api_url, self.env = api_url, env
        self.services: list[Service] = []

    def logs(self) -> str:
        return "\n".join(service.tail() for service in self.services)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Server + work pool + deployments + worker; always torn down, worker first."""
    root = tmp_path_factory.mktemp("prefect-stack")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(root / "home"), PREFECT_API_URL=api_url, DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_UI_ENABLED="false",
               # the example's `python train.py` must find the venv's python (torch)
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    stack = Stack(api_url, env)
    try:
        server = Service("server", [PREFECT, "server", "start", "--host", "127.0.0.1",
                                    "--port", str(port)], env, root, root / "server.log")
        stack.services.append(server)
        _wait_healthy(server, api_url)
        _cli(env, "work-pool", "create", POOL, "--type", "process")
        _cli(env, "--no-prompt", "deploy", "--all", "--prefect-file", str(REPO / "prefect.yaml"))
        workdir = root / "worker-cwd"  # empty: spml must come from the pull step's directory
        workdir.mkdir()
        worker_env = {**env, "SPML_PROJECT_DIR": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "1"}
        stack.services.append(Service("worker", [PREFECT, "worker", "start", "--pool", POOL,
                                                 "--name", "pytest-worker"],
                                      worker_env, workdir, root / "worker.log"))
        yield stack
    finally:
        for service in reversed(stack.services):
            service.stop()


def _experiences_rows(api_url: str, flow_run_id: Any, name: str) -> list[dict[str, Any]]:
    key = ArtifactFilterKey(any_=[f"autoresearch-experiences-{name}"])
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            latest = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=key))
            of_run = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=key, flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
            summaries = client.read_latest_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"autoresearch-summary-{name}"])))
    assert len(latest) == 1
    assert latest[0].type == "table"
    assert latest[0].flow_run_id == flow_run_id
    assert len(of_run) == ROUNDS + 1  # one version after every round, none before round 0
    assert len(summaries) == 1
    assert summaries[0].flow_run_id == flow_run_id
    data = latest[0].data
    return json.loads(data) if isinstance(data, str) else data


def _the_flow_run(api_url: str) -> Any:
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            nightly = client.read_deployment_by_name("autoresearch/nightly")
            assert [s.active for s in nightly.schedules] == [False]
            default = client.read_deployment_by_name("autoresearch/default")
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[default.id, nightly.id])))
    assert len(runs) == 1, [(r.name, r.deployment_id) for r in runs]
    assert runs[0].deployment_id == default.id
    return runs[0]


def test_autoresearch_default_runs_on_a_process_worker(stack: Stack, tmp_path: Path) -> None:
    exp = copy_example("regression", tmp_path / "exp")
    # This test is about the deployment's mechanics: one run a round is enough (the default
    # acceptance, with its several runs per version, is tested in tests/toolkit/loop).
    protocol = exp / PROTOCOL_FILENAME
    protocol.write_text(protocol.read_text().replace("mode: significance", "mode: greedy"))
    subprocess.run(["git", "commit", "-qam", "greedy acceptance"], cwd=exp, check=True)
    try:
        started = time.monotonic()
        watched = subprocess.run(
            [PREFECT, "deployment", "run", "autoresearch/default",
             "--param", f"experiment_dir={exp}", "--param", f"max_rounds={ROUNDS}",
             "--watch", "--watch-interval", "1"],
            env=stack.env, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        print(f"deployment run took {time.monotonic() - started:.1f} s")
        flow_run = _the_flow_run(stack.api_url)
        state = flow_run.state
        assert state is not None
        assert state.is_completed(), (f"{state.type}: {state.message}\n"
                                      f"{watched.stdout[-4000:]}\n{watched.stderr[-2000:]}")
        assert watched.returncode == 0
        assert flow_run.parameters == {"experiment_dir": str(exp), "max_rounds": ROUNDS}

        name = Experiment.locate(exp, PROTOCOL_FILENAME).name
        assert flow_run.name == f"autoresearch-{name}-1"
        assert {"spml", "autoresearch", f"experiment:{name}"} <= set(flow_run.tags)
        rows = _experiences_rows(stack.api_url, flow_run.id, name)
        assert [row["Round"] for row in rows] == list(range(ROUNDS + 1))
        assert all(set(row) == COLUMNS for row in rows)
        assert rows[0]["Strategy"] == "baseline"

        ledger = (exp / "experiences.md").read_text()
        assert re.search(r"^status: (completed|target_reached)$", ledger, re.MULTILINE), ledger
    except BaseException:
        print(stack.logs())
        raise
