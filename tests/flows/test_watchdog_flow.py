"""The watchdog flow with fault injection: a real fake trainer, real kills, real retries."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from spml.errors import TrainingStopped
from spml.flows.watchdog import watchdog_flow
from spml.toolkit.watchdog.supervise import WatchdogState

TRAINER = Path(__file__).parents[1] / "fixtures" / "watchdog" / "fake_trainer.py"


def experiment(tmp_path: Path, plan: dict, **settings: object) -> Path:
    exp = tmp_path / "run"
    exp.mkdir(parents=True)
    shutil.copy(TRAINER, exp / "fake_trainer.py")
    (exp / "plan.json").write_text(json.dumps(plan))
    fields = {"train_command": f"{sys.executable} fake_trainer.py plan.json",
              "checkpoint_glob": "ckpt/step_*.json", "log_file": "train.log",
              "hang_timeout": 1.5, "startup_grace": 1, "poll_interval": 0.05,
              "checkpoint_stable": 0.05, "restart_delay": 0, "max_restarts_per_hour": 10,
              "total_steps": 30, **settings}
    (exp / "watchdog.yaml").write_text(yaml.safe_dump(fields))
    return exp


def resumes(exp: Path) -> list[int]:
    return [int(line.split("resume_step=")[1]) for line in
            (exp / "resumes.log").read_text().splitlines()]


def test_environment_failures_are_restarted_from_the_newest_checkpoint(tmp_path) -> None:
    plan = {"faults": {"1": "kill", "2": "hang", "3": "nccl", "4": "enospc"}, "at": 8}
    exp = experiment(tmp_path, plan)
    watchdog_flow(str(exp))
    # Each attempt dies 8 steps after it resumed; checkpoints every 5 steps: 0, 5, 10, 15, 20.
    assert resumes(exp) == [0, 5, 10, 15, 20]
    history = WatchdogState(exp).history()
    assert [r.diagnosis.kind for r in history] == ["environment"] * 4
    assert [r.diagnosis.cause for r in history] == [
        "SIGKILL without OOM evidence: external kill or preemption", "hang: no heartbeat",
        "NCCL collective timeout", "disk full (ENOSPC)"]
    assert [(r.started_step, r.last_step) for r in history] == [
        (None, 7), (5, 12), (10, 17), (15, 22)]
    assert (exp / "train.log").read_text().splitlines()[-1].startswith("step=30 ")
    context = (exp / "experiment-context.md").read_text()
    assert "- state: completed" in context.splitlines()
    assert context.count("### Issue #") == 4
    assert context.count("- Classification: environment") == 4


def test_code_failure_is_not_restarted_and_is_diagnosed(tmp_path) -> None:
    exp = experiment(tmp_path, {"default": "zerodiv", "at": 2})
    with pytest.raises(TrainingStopped, match="ZeroDivisionError"):
        watchdog_flow(str(exp))
    assert resumes(exp) == [0]  # started exactly once
    lines = (exp / "experiment-context.md").read_text().splitlines()
    assert "- state: stopped_code_failure" in lines
    assert lines.count("### Issue #1 — step 1") == 1
    assert sum(line.startswith("### Issue #") for line in lines) == 1
    assert "- Symptom: python exception: ZeroDivisionError: division by zero" in lines
    assert "- Classification: code" in lines
    assert "  - ZeroDivisionError: division by zero" in lines  # the evidence: the exception line
    assert any(line.startswith("- Action: stopped: ") for line in lines)


def test_crash_loop_guard_stops_identical_early_failures(tmp_path) -> None:
    exp = experiment(tmp_path, {"default": "early_die"})
    with pytest.raises(TrainingStopped):
        watchdog_flow(str(exp))
    assert len(resumes(exp)) == 2


def test_nan_loss_raises_an_alert(tmp_path, run_artifact) -> None:
    exp = experiment(tmp_path, {"default": "nan", "at": 12})
    state = watchdog_flow(str(exp), return_state=True)
    assert state.is_completed()
    context = (exp / "experiment-context.md").read_text()
    assert "## Alerts" in context
    assert "nan" in context.lower()
    alerts = run_artifact(state.state_details.flow_run_id, "watchdog-alerts").data
    assert "nan" in alerts.lower()


def test_cli_exit_codes_and_status(tmp_path, prefect_api_url) -> None:
    import os
    import subprocess

    exp = experiment(tmp_path, {"default": "zerodiv", "at": 2})
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    spml = [sys.executable, "-m", "spml", "watchdog"]
    done = subprocess.run([*spml, "run", str(exp)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"diagnosis: {exp / 'experiment-context.md'}" in done.stderr
    status = subprocess.run([*spml, "status", str(exp)], env=env, capture_output=True,
                            text=True, timeout=60)
    assert "stopped_code_failure" in status.stdout

    ok = experiment(tmp_path / "ok", {"default": "none"})
    done = subprocess.run([*spml, "run", str(ok)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "training finished" in done.stdout


def test_new_checkpoints_are_evaluated_in_the_background(tmp_path, run_artifact) -> None:
    from spml.toolkit.watchdog.evaluator import read_evaluations

    exp = experiment(tmp_path, {"default": "none"},
                     eval_command=f"{sys.executable} evaluate.py {{checkpoint}}")
    (exp / "evaluate.py").write_text(
        "import json, sys, time\ntime.sleep(0.2)\n"
        "step = json.load(open(sys.argv[1]))['step']\nprint(f'step={step} val_loss={1 / step}')\n")
    state = watchdog_flow(str(exp), return_state=True)
    assert state.is_completed()
    rows = read_evaluations(WatchdogState(exp).dir)
    assert rows, "no checkpoint was evaluated"
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps))
    assert all(r["ok"] and r["metrics"]["val_loss"] == pytest.approx(1 / r["step"])
               for r in rows)
    context = (exp / "experiment-context.md").read_text()
    assert "### Eval #1 — checkpoint step=" in context
    table = json.loads(run_artifact(state.state_details.flow_run_id,
                                    "watchdog-evaluations").data)
    assert [row["step"] for row in table] == steps


def test_a_new_watchdog_run_gets_a_fresh_restart_budget(tmp_path) -> None:
    exp = experiment(tmp_path, {"default": "early_die"})
    with pytest.raises(TrainingStopped):
        watchdog_flow(str(exp))
    # The person fixed the cause; one more early death must not trip the guard again.
    (exp / "plan.json").write_text(json.dumps({"faults": {"3": "early_die"}}))
    watchdog_flow(str(exp))
    assert len(resumes(exp)) == 4
