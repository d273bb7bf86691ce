"""Watchdog detection latency: process death -> restart, and hang start -> kill.

Runs the real `watchdog` flow (Prefect's embedded server) on the fake trainer of the tests with
faults kill, hang, kill, hang, then measures from the trainer's own timestamps:
* restart latency = next attempt's start - the moment the trainer killed itself
  (backoff is 0, so this is detection + classification + Prefect retry + process start);
* hang latency = kill of the hung attempt - the moment it stopped logging, minus hang_timeout.

Usage: python benchmarks/watchdog_latency.py [--hang-timeout 3] [--poll 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

TRAINER = Path(__file__).parents[1] / "tests" / "fixtures" / "watchdog" / "fake_trainer.py"


def stamps(path: Path, key: str) -> list[tuple[str, float]]:
    rows = []
    for line in path.read_text().splitlines():
        head, _, rest = line.partition(" t=")
        rows.append((head, float(rest.split()[0])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hang-timeout", type=float, default=3.0)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect-home")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        exp = Path(tmp) / "run"
        exp.mkdir()
        shutil.copy(TRAINER, exp / "fake_trainer.py")
        plan = {"faults": {"1": "kill", "2": "hang", "3": "kill", "4": "hang"}, "at": 6}
        (exp / "plan.json").write_text(json.dumps(plan))
        (exp / "watchdog.yaml").write_text(yaml.safe_dump({
            "train_command": f"{sys.executable} fake_trainer.py plan.json",
            "checkpoint_glob": "ckpt/step_*.json", "log_file": "train.log",
            "hang_timeout": args.hang_timeout, "startup_grace": 1.0,
            "poll_interval": args.poll, "restart_delay": 0, "max_restarts_per_hour": 10}))
        from spml.flows.watchdog import watchdog_flow
        from spml.toolkit.watchdog.supervise import WatchdogState

        watchdog_flow(str(exp))
        faults = stamps(exp / "faults.log", "t")
        starts = [t for _, t in stamps(exp / "resumes.log", "t")]
        ends = [r.ended_at for r in WatchdogState(exp).history()]
        restart = [starts[i + 1] - t for i, (kind, t) in enumerate(faults) if kind == "kill"]
        # The hung step wrote its fault stamp right before going silent.
        hang = [ends[i] - t - args.hang_timeout for i, (kind, t) in enumerate(faults)
                if kind == "hang"]
        print(f"poll {args.poll}s, hang_timeout {args.hang_timeout}s")
        print(f"death -> restart: {[f'{x:.2f}' for x in restart]} s "
              f"(median {statistics.median(restart):.2f})")
        print(f"hang start -> kill, beyond hang_timeout: {[f'{x:.2f}' for x in hang]} s "
              f"(median {statistics.median(hang):.2f})")


if __name__ == "__main__":
    main()
