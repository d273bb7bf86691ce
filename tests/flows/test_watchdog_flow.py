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
ATOMIC = Path(__file__).parents[1] / "fixtures" / "watchdog" / "atomic_trainer.py"
ISSUE_11 = {"total": 100, "every": 10, "step_s": 0.005, "format": "json",
            "faults": {"25": "kill", "45": "hang", "65": "nccl", "85": "enospc"}}


def experiment(tmp_path: Path, plan: dict, **settings: object) -> Path:
    exp = tmp_path / "run"
    exp.mkdir(parents=True)
    shutil.copy(TRAINER, exp / "fake_trainer.py")
    (exp / "plan.json").write_text(json.dumps(plan))
    fields = {"train_command": f"{sys.executable} fake_trainer.py plan.json",
              "checkpoint_glob": "ckpt/step_*.json", "log_file": "train.log",
              "hang_timeout": 1.5, "startup_grace": 1, "poll_interval": 0.05,
              "checkpoint_stable": 0.05, "restart_delay": 0, "total_steps": 30, **settings}
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
    assert "Traceback" not in done.stdout + done.stderr  # the stop's own lines say it all
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


# --- issue 11: progress-based restarts, verified resumes, a mistyped glob --------------------


def atomic_experiment(tmp_path: Path, plan: dict, **settings: object) -> Path:
    """The atomic trainer (temp file + os.replace, no marker) with the default checkpoint
    settings a new user would keep (checkpoint_stable 5 s, no restart budgets)."""
    exp = tmp_path / "atomic"
    exp.mkdir(parents=True)
    shutil.copy(ATOMIC, exp / "atomic_trainer.py")
    (exp / "plan.json").write_text(json.dumps(plan))
    fields = {"train_command": f"{sys.executable} atomic_trainer.py plan.json",
              "checkpoint_glob": "ckpt/step_*.json", "log_file": "train.log",
              "hang_timeout": 1, "poll_interval": 0.05, "total_steps": plan.get("total", 100),
              **settings}
    (exp / "watchdog.yaml").write_text(yaml.safe_dump(fields))
    return exp


def test_four_different_faults_in_a_minute_resume_from_the_newest_checkpoint_each_time(
        tmp_path, prefect_api_url) -> None:
    import os
    import subprocess

    exp = atomic_experiment(tmp_path, ISSUE_11)
    done = subprocess.run(
        [sys.executable, "-m", "spml", "watchdog", "run", str(exp), "--restart-delay", "0",
         "--startup-grace", "0"], env={**os.environ, "PREFECT_API_URL": prefect_api_url},
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # Each fault hit after a checkpoint that was renamed into place moments before.
    assert resumes(exp) == [0, 20, 40, 60, 80]
    history = WatchdogState(exp).history()
    assert [r.diagnosis.signature for r in history] == [
        "signal:9", "hang", "nccl:timeout:ALLREDUCE", "enospc"]
    assert [r.diagnosis.kind for r in history] == ["environment"] * 4
    assert [r.checkpoint_step for r in history] == [20, 40, 60, 80]
    context = (exp / "experiment-context.md").read_text()
    assert "- state: completed" in context.splitlines()
    for step in (20, 40, 60, 80):
        assert f"ckpt/step_{step:06d}.json (step {step}; JSON parses)" in context
    assert "max_restarts_per_hour" not in context


def test_the_same_fault_at_the_same_place_is_still_a_crash_loop(tmp_path) -> None:
    plan = {"total": 40, "every": 10, "faults": {"25": "kill"}, "repeat": True}
    exp = atomic_experiment(tmp_path, plan, restart_delay=0)
    with pytest.raises(TrainingStopped, match="the same failure 'signal:9' ended 2 attempts"):
        watchdog_flow(str(exp))
    assert resumes(exp) == [0, 20]  # one restart, then the guard
    lines = (exp / "experiment-context.md").read_text().splitlines()
    assert "- state: stopped_crash_loop" in lines


def test_a_mistyped_glob_is_warned_about_and_a_restart_from_scratch_called_out(tmp_path) -> None:
    plan = {"total": 40, "every": 10, "step_s": 0.01, "faults": {"25": "kill"}}
    exp = atomic_experiment(tmp_path, plan, restart_delay=0, checkpoint_glob="checkpoints/*.json",
                            checkpoint_interval=10)
    watchdog_flow(str(exp))
    assert resumes(exp) == [0, 0]  # nothing matched: the progress is lost, but not silently
    context = (exp / "experiment-context.md").read_text()
    warning = next(line for line in context.splitlines() if line.startswith("- Warning: "))
    assert warning.startswith("- Warning: restart from SCRATCH after reaching step 24: "
                              "checkpoint_glob 'checkpoints/*.json' matches nothing although "
                              "training reached step 24; files that look like checkpoints: "
                              "ckpt/step_000020.json, ckpt/step_000010.json")
    alerts = context.split("## Alerts", 1)[1]
    assert "checkpoints: checkpoint_glob 'checkpoints/*.json' matches nothing after " in alerts
    assert "- Restart from: none" in context


@pytest.mark.parametrize(("command", "cause"), [
    ("sleep 1", "exited 0 but no training seen after 1s: the log file train.log has not "
                "appeared, no step was logged"),
    ("nosuchtrainer --epochs 1", "exit 127 (command not found): check the train command"),
], ids=["exit-0-unseen", "exit-127"])
def test_a_command_that_never_trains_is_a_code_failure_never_training_finished(
        tmp_path, prefect_api_url, command: str, cause: str) -> None:
    import os
    import subprocess

    exp = experiment(tmp_path, {}, train_command=command, startup_grace=0.5)
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    done = subprocess.run([sys.executable, "-m", "spml", "watchdog", "run", str(exp)], env=env,
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "training finished" not in output
    assert "Traceback" not in output
    assert f"stopped: attempt 1: {cause}" in " ".join(output.split())
    context = (exp / "experiment-context.md").read_text()
    assert "- state: stopped_code_failure" in context.splitlines()
