"""Wall time of 8 candidates with a 2 s training: one at a time, 4 at once on the local runner,
4 at once on a Dask LocalCluster (`parallel: {candidates: 4, runner: dask}`).

Each configuration runs the real `autoresearch` flow (Prefect's embedded server, as the `spml`
CLI does) on a fresh copy of the toy experiment (tests/fixtures/toy) in a new git repository:
the baseline, then 8 rounds whose scripted researcher sets `x` (a different value each round)
and `train_s: 2` (the training sleeps 2 s). Acceptance is `greedy` (one run per candidate), so
every candidate costs one training and one evaluation. Prints the loop's wall time per
configuration (median over --repeats) and its ratio to one at a time.

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
    (tmp / "plan.json").write_text(json.dumps(plan))
    researcher = FIXTURES / "researchers" / "researcher.py"
    fields = {
        "research_question": "How fast do 8 candidates run?", "max_rounds": rounds,
        "train_command": f"{sys.executable} train.py",
        "fixed": {"files": ["train.py", "evaluate.py"], "time_limit": 60},
        "variable": {"files": ["params.yaml"]},
        "eval": {"command": f"{sys.executable} evaluate.py", "metric": "loss",
                 "direction": "minimize"},
        "researcher": {"kind": "command", "timeout": 60,
                       "command": f"{sys.executable} {researcher} {tmp / 'plan.json'}"},
        "acceptance": {"mode": "greedy"},
        "sandbox": {"writable": [str(tmp)]},
        "parallel": parallel,
    }
    (exp / "autoresearch-protocol.md").write_text(
        f"---\n{yaml.safe_dump(fields, sort_keys=False)}---\nBenchmark.\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=b", "-c", "user.email=b@example.invalid", "commit", "-qm",
                  "toy"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return exp


def run_once(config: str, rounds: int, train_s: float) -> float:
    """One loop's wall time in seconds (the flow call, baseline included)."""
    from spml.flows.autoresearch import autoresearch_flow

    with tempfile.TemporaryDirectory(prefix=f"spml-bench-{config}-") as tmp:
        exp = make_experiment(Path(tmp), CONFIGS[config], rounds, train_s)
        started = time.perf_counter()
        summary = autoresearch_flow(str(exp))
        elapsed = time.perf_counter() - started
        assert summary.rounds_done == rounds, summary
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--train-s", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    walls = {config: statistics.median(run_once(config, args.rounds, args.train_s)
                                       for _ in range(args.repeats))
             for config in args.configs}
    print(f"{args.rounds} candidates, {args.train_s:g} s training each, median of "
          f"{args.repeats}; {os.cpu_count()} CPUs")
    print(f"{'config':<12} {'wall s':>8} {'vs sequential':>14}")
    base = walls.get("sequential")
    for config, wall in walls.items():
        ratio = f"{wall / base:.2f}x" if base else "-"
        print(f"{config:<12} {wall:>8.1f} {ratio:>14}")


if __name__ == "__main__":
    main()
