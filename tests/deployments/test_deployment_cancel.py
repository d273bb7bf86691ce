"""A worker's cancel of a running `autoresearch/default` flow run: the flow-run process gets
SIGTERM, records `status: interrupted` (journal kept) and exits at once; the run ends
`Cancelled`, and a local `spml autoresearch run` resumes it.

Same real stack as test_deployment_run (server, process pool, `prefect deploy`, a worker), with
the toy experiment whose round 2 trains for a minute. About 1 min on 2 cores; `-m "not slow"`
skips it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deployments.test_deployment_run import PREFECT, Stack, _cli, stack  # noqa: F401 - fixture
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_journal, read_ledger

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def _flow_run_pid(flow_run_id: str) -> int | None:
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    return int(entry.name)
            except OSError:
                continue
    return None


def _final_state(api_url: str, flow_run_id: str):  # noqa: ANN202 - a Prefect State
    """The run's state once final (the runner finalizes a cancel after the process exits)."""
    deadline = time.monotonic() + 30
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        while True:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(flow_run_id).state
            if state.is_final() or time.monotonic() > deadline:
                return state
            time.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_cancelled_deployment_run_is_interrupted_and_resumes(stack: Stack,  # noqa: F811
                                                                toy_experiment,
                                                                tmp_path) -> None:
    exp = toy_experiment({"default": "good", "2": "slow_train"}, max_rounds=3,
                         fixed={"time_limit": 120})
    try:
        out = _cli(stack.env, "deployment", "run", "autoresearch/default",
                   "--param", f"experiment_dir={exp}")
        flow_run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
        training = exp / ".spml" / "autoresearch" / "rounds" / "0002" / "train-0.stdout.log"
        deadline = time.monotonic() + 240
        while not training.is_file():
            assert time.monotonic() < deadline, "round 2 never started training"
            time.sleep(0.2)
        pid = _flow_run_pid(flow_run_id)
        assert pid is not None

        began = time.monotonic()
        _cli(stack.env, "flow-run", "cancel", flow_run_id)
        while _alive(pid):
            assert time.monotonic() - began < 60, "the flow-run process outlived the cancel"
            time.sleep(0.05)
        print(f"flow-run process gone {time.monotonic() - began:.2f} s after the cancel")

        experiment = Experiment.locate(exp, "autoresearch-protocol.md")
        assert read_ledger(experiment).status == "interrupted"
        assert read_journal(experiment).round == 2
        state = _final_state(stack.api_url, flow_run_id)
        assert state.is_cancelled(), state
        worker_log = stack.services[-1].log.read_text(errors="replace")
        assert "interrupted by SIGTERM at round 2; resume with:" in worker_log
        assert "Crash detected" not in worker_log
        assert "Traceback" not in worker_log

        (tmp_path / "plan.json").write_text(json.dumps({"default": "good"}))
        env = {**os.environ, "PREFECT_API_URL": stack.api_url}
        resumed = subprocess.run([sys.executable, "-m", "spml", "autoresearch", "run", str(exp)],
                                 env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert [r.round for r in read_ledger(experiment).rows] == [0, 1, 2, 3]
    except BaseException:
        print(stack.logs())
        raise
