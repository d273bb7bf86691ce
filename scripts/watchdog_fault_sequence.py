"""Measure the watchdog on issue 11's fault sequence, run as a new user would (the real CLI).

A fake trainer (tests/fixtures/watchdog/atomic_trainer.py) checkpoints atomically (temp file +
``os.replace``, no marker) every 10 steps and meets a different environment fault on each
attempt: SIGKILL at step 25, a hang at 45, an NCCL timeout at 65, ENOSPC at 85; then it
finishes at 100. ``spml watchdog run`` supervises it with the default checkpoint settings.
Prints per attempt: the step it resumed from, the step of its fault, the work lost (fault step
minus the next attempt's resume step), the time from the fault to the next start (trainer
clocks; for the hang this includes the hang timeout) and from the attempt's recorded end to the
next start (the restart latency). Exit status: the watchdog's.

Usage (repo root): python scripts/watchdog_fault_sequence.py [--startup-grace 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINER = REPO / "tests" / "fixtures" / "watchdog" / "atomic_trainer.py"
PLAN = {"total": 100, "every": 10, "step_s": 0.005, "format": "json",
        "faults": {"25": "kill", "45": "hang", "65": "nccl", "85": "enospc"}}


def prepare(exp: Path, hang_timeout: float) -> None:
    """The experiment directory: trainer, plan and the watchdog settings a user would write."""
    exp.mkdir(parents=True, exist_ok=True)
    shutil.copy(TRAINER, exp / "atomic_trainer.py")
    (exp / "plan.json").write_text(json.dumps(PLAN))
    (exp / "watchdog.yaml").write_text(
        f"train_command: {sys.executable} atomic_trainer.py plan.json\n"
        "checkpoint_glob: ckpt/step_*.json\nlog_file: train.log\n"
        f"hang_timeout: {hang_timeout}\npoll_interval: 0.05\ntotal_steps: 100\n")


def stamps(path: Path, key: str) -> list[tuple[int, float]]:
    """``(number, time)`` from the trainer's ``key=N t=T`` lines (resume_step or step)."""
    if not path.is_file():
        return []
    found = []
    for line in path.read_text().splitlines():
        number, when = re.search(rf"{key}=(\d+)", line), re.search(r"\bt=([\d.]+)", line)
        if number and when:
            found.append((int(number[1]), float(when[1])))
    return found


def report(exp: Path) -> list[str]:
    """One row per attempt (see the module docstring)."""
    starts = stamps(exp / "resumes.log", "resume_step")
    faults = stamps(exp / "faults.log", "step")
    kinds = re.findall(r"fault=(\w+)", (exp / "faults.log").read_text()) if faults else []
    ends_file = exp / ".spml" / "watchdog" / "attempts.jsonl"
    ends = [json.loads(line)["ended_at"] for line in ends_file.read_text().splitlines()
            if line.strip()] if ends_file.is_file() else []
    rows = [f"{'attempt':>7} {'resumed':>7} {'fault':>13} {'lost':>5} "
            f"{'fault->start s':>14} {'end->start s':>12}"]
    for i, (resumed, _) in enumerate(starts):
        if i >= len(faults):
            rows.append(f"{i + 1:>7} {resumed:>7} {'(finished)':>13}")
            continue
        (step, fault_t), nxt = faults[i], starts[i + 1] if i + 1 < len(starts) else None
        lost = f"{step - nxt[0]:>5}" if nxt else f"{'-':>5}"
        gap = f"{nxt[1] - fault_t:>14.2f}" if nxt else f"{'-':>14}"
        latency = f"{nxt[1] - ends[i]:>12.2f}" if nxt and i < len(ends) else f"{'-':>12}"
        rows.append(f"{i + 1:>7} {resumed:>7} {f'{kinds[i]}@{step}':>13} {lost} {gap} {latency}")
    return rows


def main() -> int:
    """Run the sequence once and print the table; returns the watchdog's exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--startup-grace", default="0", help="passed to --startup-grace")
    parser.add_argument("--hang-timeout", type=float, default=1.0)
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    args = parser.parse_args()
    tmp = None if args.keep else tempfile.TemporaryDirectory()
    exp = args.keep or Path(tmp.name) / "run"  # type: ignore[union-attr]
    prepare(exp, args.hang_timeout)
    command = [sys.executable, "-m", "spml", "watchdog", "run", str(exp),
               "--restart-delay", "0", "--startup-grace", args.startup_grace]
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.monotonic() - began
    sys.stdout.write(f"$ spml watchdog run DIR --restart-delay 0 --startup-grace "
                     f"{args.startup_grace}  (hang_timeout {args.hang_timeout}s, "
                     f"checkpoint_glob ckpt/step_*.json, checkpoints every 10 steps)\n")
    sys.stdout.write(f"exit {done.returncode} after {wall:.1f}s\n")
    sys.stdout.write("\n".join(report(exp)) + "\n")
    if done.returncode != 0:
        sys.stdout.write("--- stderr tail ---\n" + "\n".join(done.stderr.splitlines()[-8:]) + "\n")
    context = exp / "experiment-context.md"
    text = context.read_text() if context.is_file() else ""
    status = [line for line in text.splitlines() if line.startswith("- state:")]
    sys.stdout.write(f"context status: {status[-1] if status else 'none'}\n")
    if tmp is not None:
        tmp.cleanup()
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
