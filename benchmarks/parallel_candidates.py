"""Wall time of 8 candidates with a 2 s training: one at a time, 4 at once on the local runner,
4 at once on Dask: the LocalCluster the runner starts (`parallel: {candidates: 4, runner:
dask}`), and a running scheduler with 4 workers (`address:` and a bare `git_remote`, started
before the clock runs, as a cluster that is already up).

Each configuration runs the real `autoresearch` flow (against one local Prefect server, started
before the clocks run) on a fresh copy of the toy experiment (tests/fixtures/toy) in a new git
repository: the baseline, then 8 rounds whose scripted researcher sets `x` (a different value
each round) and `train_s: 2` (the training sleeps 2 s). Acceptance is `greedy` (one run per
candidate), so every candidate costs one training and one evaluation. Prints, per
configuration (medians over --repeats) and as ratios to one at a time: the loop's wall time
(the flow call: opening, the baseline, the candidates, closing), and the candidates' (from the
first candidate's run start to the last one's end, as the Prefect server recorded them): the
part parallel candidates can shorten.

    python benchmarks/parallel_candidates.py               # 8 candidates, 2 s each, 1 repeat
    python benchmarks/parallel_candidates.py --repeats 3 --configs sequential local
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
CONFIGS: dict[str, dict[str, Any]] = {
    "sequential": {"candidates": 1},
    "local": {"candidates": 4},
    "dask": {"candidates": 4, "runner": "dask"},
    "dask-address": {"candidates": 4, "runner": "dask"},  # + address, git_remote (below)
}


def make_experiment(tmp: Path, parallel: dict[str, Any], rounds: int, train_s: float) -> Path:
    """The toy experiment in a fresh repository, its researcher scripted for ``rounds``."""
    repo, exp = tmp / "repo", tmp / "repo" / "exp"
    exp.mkdir(parents=True)
    for name in ("train.py", "evaluate.py", "params.yaml"):
        shutil.copy(FIXTURES / "toy" / name, exp / name)
    shutil.copy(FIXTURES / "toy" / "gitignore", exp / ".gitignore")
    plan = {str(n): f"set:x={3.0 - 2.0 / (n + 1):.4f},train_s={train_s}"
            for n in range(1, rounds + 1)}
    mine = tmp / "researcher"  # the researcher's plan and log: outside the repository
    mine.mkdir()
    (mine / "plan.json").write_text(json.dumps(plan))
    researcher = FIXTURES / "researchers" / "researcher.py"
    fields = {
        "research_question": "How fast do 8 candidates run?", "max_rounds": rounds,
        "train_command": f"{sys.executable} train.py",
        "fixed": {"files": ["train.py", "evaluate.py"], "time_limit": 60},
        "variable": {"files": ["params.yaml"]},
        "eval": {"command": f"{sys.executable} evaluate.py", "metric": "loss",
                 "direction": "minimize"},
        "researcher": {"kind": "command", "timeout": 60,
                       "command": f"{sys.executable} {researcher} {mine / 'plan.json'}"},
        "acceptance": {"mode": "greedy"},
        "sandbox": {"writable": [str(mine)]},
        "parallel": parallel,
    }
    (exp / "autoresearch-protocol.md").write_text(
        f"---\n{yaml.safe_dump(fields, sort_keys=False)}---\nBenchmark.\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=b", "-c", "user.email=b@example.invalid", "commit", "-qm",
                  "toy"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return exp


def start_cluster(tmp: Path, workers: int, api_url: str) -> tuple[str, list[subprocess.Popen]]:
    """`dask scheduler` and ``workers`` single-thread `dask worker` processes on 127.0.0.1."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PREFECT_API_URL": api_url}
    scheduler_file = tmp / "scheduler.json"
    procs = [subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file",
                               str(scheduler_file)], env=env, stderr=subprocess.DEVNULL)]
    while not scheduler_file.exists():
        time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    procs += [subprocess.Popen([str(bin_dir / "dask"), "worker", address, "--nthreads", "1",
                                "--no-dashboard", "--host", "127.0.0.1"], env=env,
                               stderr=subprocess.DEVNULL) for _ in range(workers)]
    from distributed import Client

    with Client(address) as client:
        client.wait_for_workers(workers, timeout=120)
        # A cluster that is up has workers that have imported what they run.
        client.run(lambda: __import__("spml.toolkit.loop.remote") and None)
    return address, procs


def candidates_span(flow_run_id: Any) -> float:
    """Seconds from the start of the first candidate's run (a round or batch subflow, not the
    baseline's) to the end of the last one's, from the Prefect server's records."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
    candidates = [run for run in runs if run.name != "round-0"]
    return (max(run.end_time for run in candidates)
            - min(run.start_time for run in candidates)).total_seconds()


def run_once(config: str, rounds: int, train_s: float, api_url: str) -> tuple[float, float]:
    """One loop's wall time in seconds (the flow call: baseline, opening and closing
    included), and its candidates' (`candidates_span`)."""
    from spml.flows.autoresearch import autoresearch_flow

    with tempfile.TemporaryDirectory(prefix=f"spml-bench-{config}-") as tmp:
        parallel, procs = dict(CONFIGS[config]), []
        if config == "dask-address":
            remote = Path(tmp) / "remote.git"
            subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
            parallel["address"], procs = start_cluster(Path(tmp), 4, api_url)
            parallel["git_remote"] = str(remote)
        exp = make_experiment(Path(tmp), parallel, rounds, train_s)
        started = time.perf_counter()
        state = autoresearch_flow(str(exp), return_state=True)
        elapsed = time.perf_counter() - started
        for proc in procs:
            proc.terminate()
        summary = state.result()
        assert summary.rounds_done == rounds, summary
        return elapsed, candidates_span(state.state_details.flow_run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--train-s", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.testing.utilities import prefect_test_harness

    # One local Prefect server for every configuration (the Dask workers report to it), started
    # before any clock runs.
    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        api_url = str(PREFECT_API_URL.value())
        walls = {config: [run_once(config, args.rounds, args.train_s, api_url)
                          for _ in range(args.repeats)] for config in args.configs}
    print(f"{args.rounds} candidates, {args.train_s:g} s training each, median of "
          f"{args.repeats}; {os.cpu_count()} CPUs")
    print(f"{'config':<13} {'loop s':>7} {'ratio':>6} {'candidates s':>13} {'ratio':>6}")
    medians = {config: [statistics.median(run[i] for run in runs) for i in (0, 1)]
               for config, runs in walls.items()}
    base = medians.get("sequential")
    for config, (loop, candidates) in medians.items():
        ratios = [f"{value / base[i]:.2f}x" if base else "-"
                  for i, value in enumerate((loop, candidates))]
        print(f"{config:<13} {loop:>7.1f} {ratios[0]:>6} {candidates:>13.1f} {ratios[1]:>6}")

if __name__ == "__main__":
    main()
