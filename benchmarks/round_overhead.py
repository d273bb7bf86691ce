"""Measure a loop's own cost per round (everything but researcher/train/eval), for both kinds.

The researcher, training and evaluation are shell builtins (`true`, `echo`), so a round's wall
time is almost entirely the loop itself: git snapshots and compliance diffs, the ledger, and,
in flow mode, Prefect's task/subflow bookkeeping. Two modes:

* toolkit: the round engine alone (what `tests/helpers.py:drive` does, no Prefect);
* flow: the kind's flow against Prefect's embedded server (as `spml autoresearch run`).

Usage: python benchmarks/round_overhead.py [--rounds 10] [--kind autoresearch|ml-iteration|both]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

PROTOCOL = {
    "research_question": "overhead", "max_rounds": 0, "train_command": "true",
    "fixed": {"files": ["eval.txt"], "time_limit": 60},
    "variable": {"files": ["params.yaml"]},
    "eval": {"command": "echo loss=1", "metric": "loss", "direction": "minimize"},
    "researcher": {"kind": "command", "command": "echo 'x: {round}' > params.yaml"},
}


ITERATION_PROTOCOL = {
    "goal": "overhead", "max_rounds": 0, "train_command": "echo step=1 loss=1 grad_norm=1",
    "fixed": {"files": ["eval.txt"], "time_limit": 60},
    "eval": {"command": "echo acc=0.5"},
    "researcher": {"kind": "command", "command": "echo 'x: {round}' > params.yaml"},
    "review_criteria": {"metrics": [{"name": "acc", "op": ">=", "threshold": 0.99}],
                        "observability": {"required_keys": ["loss", "grad_norm"]},
                        "stability": {"no_nan": True}},
}
PROTOCOLS = {"autoresearch": ("autoresearch-protocol.md", PROTOCOL),
             "ml-iteration": ("iteration-protocol.md", ITERATION_PROTOCOL)}


def make_repo(root: Path, kind: str = "autoresearch") -> Path:
    root.mkdir(parents=True)
    (root / "eval.txt").write_text("fixed\n")
    (root / "params.yaml").write_text("x: 0\n")
    filename, fields = PROTOCOLS[kind]
    (root / filename).write_text(f"---\n{yaml.safe_dump(fields)}---\nbenchmark\n")
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    return root


def timed_rounds(run, rounds: int) -> list[float]:
    stamps: list[float] = []
    run(rounds, lambda _n: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def toolkit_mode(root: Path, rounds: int, kind: str = "autoresearch") -> list[float]:
    from helpers import drive

    def run(n, hook):
        drive(root, max_rounds=n, between_rounds=hook, kind=kind)

    return timed_rounds(run, rounds)


def flow_mode(root: Path, rounds: int, kind: str = "autoresearch") -> tuple[float, float]:
    from spml.flows.autoresearch import autoresearch_flow
    from spml.flows.iteration import iteration_flow

    loop_flow = autoresearch_flow if kind == "autoresearch" else iteration_flow
    loop_flow(str(root), max_rounds=0)  # warm: server start, baseline round
    start = time.perf_counter()
    loop_flow(str(root), max_rounds=rounds)
    loop = time.perf_counter() - start
    start = time.perf_counter()
    loop_flow(str(root), max_rounds=rounds)  # no round left: the fixed cost of a run
    fixed = time.perf_counter() - start
    return loop, fixed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--kind", default="both",
                        choices=["autoresearch", "ml-iteration", "both"])
    args = parser.parse_args()
    kinds = ["autoresearch", "ml-iteration"] if args.kind == "both" else [args.kind]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect-home")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        for kind in kinds:
            repo = make_repo(Path(tmp) / kind / "toolkit", kind)
            per_round = toolkit_mode(repo, args.rounds + 1, kind)
            median = statistics.median(per_round)
            print(f"{kind} toolkit: {len(per_round)} rounds, median {median:.3f} s/round"
                  f" (min {min(per_round):.3f}, max {max(per_round):.3f})")
            loop, fixed = flow_mode(make_repo(Path(tmp) / kind / "flow", kind), args.rounds,
                                    kind)
            print(f"{kind} flow: {args.rounds} rounds in {loop:.2f} s; a run with no round "
                  f"left {fixed:.2f} s; => {(loop - fixed) / args.rounds:.3f} s/round")


if __name__ == "__main__":
    main()
