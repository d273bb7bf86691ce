"""Ctrl-C and SIGTERM to `spml autoresearch run` / `spml watchdog run` as real processes: the
training process group ends, the interruption is on disk, the Prefect runs get a final state,
the exit is quick and quiet (130 / 143 and one line), and a resume finishes the work once.

The signal goes to the supervisor's whole process group, as a terminal's Ctrl-C or a
scheduler's SIGTERM does (the trainers run in sessions of their own; the test harness's
Prefect server is outside the group and keeps answering; `test_..._embedded_server_gone`
runs the CLI with its own embedded server, which the signal stops too).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import git
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterParentTaskRunId,
)

from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_journal, read_ledger

EXIT_BOUND_S = 20.0  # generous for a loaded CI machine; the exit takes 0.2-2 s here
ATOMIC = Path(__file__).parents[1] / "fixtures" / "watchdog" / "atomic_trainer.py"
BRANCH = "spml/autoresearch/exp"


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """The CLI in a new session, so that its process group can be signalled like a job's."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "spml", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(condition, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, f"exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()}"
        time.sleep(0.05)


def interrupt(proc: subprocess.Popen, sig: signal.Signals) -> float:
    """Signal the process group; the seconds until the supervisor exited."""
    began = time.monotonic()
    os.killpg(proc.pid, sig)
    proc.wait(timeout=120)
    return time.monotonic() - began


def spml_processes_left(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (the trainers', the server's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if marker.encode() in environ and state != "Z":
                found.append(int(entry.name))
    return found


def embedded_server_of(pid: int) -> bool:
    """Whether ``pid`` has started its embedded Prefect server (a uvicorn child)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except (OSError, IndexError):
                continue
            if int(stat[1]) == pid and b"uvicorn" in cmdline:
                return True
    return False


def assert_quiet_exit(output: str, sig: signal.Signals, seconds: float, rc: int) -> None:
    print(f"{sig.name}: exited {rc} after {seconds:.2f} s, {len(output.splitlines())} lines")
    assert rc == 128 + sig
    assert seconds < EXIT_BOUND_S
    assert "Traceback" not in output
    assert "ConnectError" not in output
    assert "Crash detected" not in output
    assert sum(line.startswith("interrupted by ") for line in output.splitlines()) == 1


def flow_runs_of(flow_name: str, exp: Path) -> list:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    return [r for r in runs if r.parameters.get("experiment_dir") == str(exp)]


# --- Auto Research ------------------------------------------------------------------------


def loop_experiment(toy_experiment, tmp_path: Path) -> Path:
    """3 rounds; round 2's training sleeps 60 s (and leaves a child), so it is mid-round."""
    return toy_experiment({"default": "good", "2": "slow_train"}, max_rounds=3,
                          fixed={"time_limit": 120})


def training_started(exp: Path, round_no: int):
    log = exp / ".spml" / "autoresearch" / "rounds" / f"{round_no:04d}" / "train-0.stdout.log"
    return log.is_file


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP (terminal closed)"])
def test_a_signal_mid_round_interrupts_quickly_and_the_resume_redoes_that_round_once(
        sig, toy_experiment, prefect_api_url, tmp_path) -> None:
    exp = loop_experiment(toy_experiment, tmp_path)
    marker = f"SPML_TEST_RUN={tmp_path.name}"
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "SPML_TEST_RUN": tmp_path.name}
    log = tmp_path / "run.log"
    proc = start(["autoresearch", "run", str(exp)], env, log)
    wait_for(training_started(exp, 2), proc, log)
    time.sleep(0.5)
    seconds = interrupt(proc, sig)

    output = log.read_text()
    assert_quiet_exit(output, sig, seconds, proc.returncode)
    assert f"interrupted by {sig.name} at round 2; resume with: spml autoresearch run {exp}" \
        in output
    assert spml_processes_left(marker) == []  # the trainer and its child are gone
    experiment = Experiment.locate(exp, "autoresearch-protocol.md")
    ledger = read_ledger(experiment)
    assert ledger.status == "interrupted"
    assert [r.round for r in ledger.rows] == [0, 1]
    assert read_journal(experiment).round == 2  # kept for the resume
    status = subprocess.run([sys.executable, "-m", "spml", "autoresearch", "status", str(exp)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert "interrupted at round 2" in " ".join(status.stdout.split())
    # The API answered: the loop and round 2 have a final state, chosen by the signal.
    expected = "CANCELLED" if sig == signal.SIGINT else "CRASHED"
    [parent] = flow_runs_of("autoresearch", exp)
    assert parent.state.type.value == expected
    with get_client(sync_client=True) as client:
        rounds = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=False)))
    round_two = [r for r in rounds if r.parameters.get("experiment_dir") == str(exp)
                 and r.parameters.get("round_no") == 2]
    assert [r.state.type.value for r in round_two] == [expected]

    (tmp_path / "plan.json").write_text(json.dumps({"default": "good"}))
    resumed = subprocess.run([sys.executable, "-m", "spml", "autoresearch", "run", str(exp)],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    ledger = read_ledger(experiment)
    assert ledger.status == "completed"
    assert [r.round for r in ledger.rows] == [0, 1, 2, 3]
    subjects = git(exp, "log", "--format=%s", BRANCH).splitlines()
    assert [s.split(" — ")[0] for s in subjects[:3]] == [
        "autoresearch: round 3", "autoresearch: round 2", "autoresearch: round 1"]
    assert sum(s.startswith("autoresearch: round 2 ") for s in subjects) == 1
    assert read_journal(experiment) is None


@pytest.fixture(scope="module")
def embedded_home(tmp_path_factory) -> Path:
    """One PREFECT_HOME for the runs with an embedded server (its database migrates once)."""
    return tmp_path_factory.mktemp("prefect-home")


def embedded_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    return env


def test_sigterm_with_the_embedded_server_gone_exits_quickly(toy_experiment, tmp_path,
                                                             embedded_home) -> None:
    """No PREFECT_API_URL: the CLI starts its own server, in its process group, so the SIGTERM
    stops the server too and nothing can be reported (before: minutes of ConnectError)."""
    exp = loop_experiment(toy_experiment, tmp_path)
    log = tmp_path / "run.log"
    proc = start(["autoresearch", "run", str(exp)], embedded_env(embedded_home), log)
    wait_for(training_started(exp, 2), proc, log, timeout_s=180)
    time.sleep(0.5)
    seconds = interrupt(proc, signal.SIGTERM)

    output = log.read_text()
    assert_quiet_exit(output, signal.SIGTERM, seconds, proc.returncode)
    assert spml_processes_left(f"PREFECT_HOME={embedded_home}") == []  # trainer, server gone
    experiment = Experiment.locate(exp, "autoresearch-protocol.md")
    assert read_ledger(experiment).status == "interrupted"
    assert read_journal(experiment).round == 2


# Runs `spml autoresearch run` in this process; a thread sends SIGTERM to the process group the
# moment Prefect's own SIGTERM handler is installed after round 1 (a round subflow's engine is
# tearing down or setting up), which the flow bodies' handlers cannot see.
IN_PREFECT_WINDOW = """
import os, signal, sys, threading, time
from pathlib import Path

ledger = Path(sys.argv[1]) / "experiences.md"

def shoot():
    while not (ledger.is_file() and "| 1 |" in ledger.read_text()):
        time.sleep(0.005)
    while getattr(signal.getsignal(signal.SIGTERM), "__name__", "") != "_prefect_sigterm_handler":
        time.sleep(0.0005)
    os.killpg(0, signal.SIGTERM)

threading.Thread(target=shoot, daemon=True).start()
sys.argv = ["spml", "autoresearch", "run", sys.argv[1]]
from spml.cli import main
main()
"""


def test_sigterm_while_prefects_own_handler_is_installed_exits_quickly(
        toy_experiment, tmp_path, embedded_home) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=3)
    driver = tmp_path / "driver.py"
    driver.write_text(IN_PREFECT_WINDOW)
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(driver), str(exp)],
                                env=embedded_env(embedded_home), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    proc.wait(timeout=300)
    output = log.read_text()
    assert proc.returncode == 143, output
    assert "Traceback" not in output
    assert "ConnectError" not in output
    assert sum(line.startswith("interrupted by SIGTERM") for line in output.splitlines()) == 1
    experiment = Experiment.locate(exp, "autoresearch-protocol.md")
    assert read_ledger(experiment).status == "interrupted"
    assert spml_processes_left(f"PREFECT_HOME={embedded_home}") == []


def test_ctrl_c_while_the_embedded_server_starts_exits_at_once(toy_experiment, tmp_path,
                                                               embedded_home) -> None:
    exp = toy_experiment()
    log = tmp_path / "run.log"
    proc = start(["autoresearch", "run", str(exp)], embedded_env(embedded_home), log)
    wait_for(lambda: embedded_server_of(proc.pid), proc, log)  # (stdout is block-buffered)
    time.sleep(0.5)
    seconds = interrupt(proc, signal.SIGINT)
    output = log.read_text()
    assert_quiet_exit(output, signal.SIGINT, seconds, proc.returncode)
    assert f"before the first round; resume with: spml autoresearch run {exp}" in output
    assert spml_processes_left(f"PREFECT_HOME={embedded_home}") == []


# --- watchdog -------------------------------------------------------------------------------


def watchdog_experiment(tmp_path: Path) -> Path:
    """400 steps of 0.02 s, a checkpoint every 20 steps (atomic renames, no markers)."""
    exp = tmp_path / "run"
    exp.mkdir()
    shutil.copy(ATOMIC, exp / "atomic_trainer.py")
    (exp / "plan.json").write_text(json.dumps(
        {"total": 400, "every": 20, "step_s": 0.02, "format": "json"}))
    (exp / "watchdog.yaml").write_text(yaml.safe_dump({
        "train_command": f"{sys.executable} atomic_trainer.py plan.json",
        "checkpoint_glob": "ckpt/step_*.json", "log_file": "train.log", "hang_timeout": 30,
        "startup_grace": 5, "poll_interval": 0.1, "checkpoint_stable": 0.05,
        "restart_delay": 0, "total_steps": 400}))
    return exp


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_attempt_interrupts_quickly_and_the_resume_continues_from_the_checkpoint(
        sig, tmp_path, prefect_api_url) -> None:
    exp = watchdog_experiment(tmp_path)
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "SPML_TEST_RUN": tmp_path.name}
    log = tmp_path / "run.log"
    proc = start(["watchdog", "run", str(exp)], env, log)
    wait_for((exp / "ckpt" / "step_000060.json").is_file, proc, log)
    seconds = interrupt(proc, sig)

    output = log.read_text()
    assert_quiet_exit(output, sig, seconds, proc.returncode)
    assert f"resume with: spml watchdog run {exp}" in output
    assert spml_processes_left(f"SPML_TEST_RUN={tmp_path.name}") == []
    newest = max(int(p.stem.split("_")[1]) for p in (exp / "ckpt").glob("step_*.json"))
    lines = (exp / "experiment-context.md").read_text().splitlines()
    assert "- state: interrupted" in lines
    assert f"- interrupted_by: {sig.name}" in lines
    assert "### Issue #" not in "\n".join(lines)  # an interruption is no failure
    [run] = flow_runs_of("watchdog", exp)
    assert run.state.type.value == ("CANCELLED" if sig == signal.SIGINT else "CRASHED")

    resumed = subprocess.run([sys.executable, "-m", "spml", "watchdog", "run", str(exp)],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    starts = [line.split("resume_step=")[1] for line in
              (exp / "resumes.log").read_text().splitlines()]
    assert starts == ["0", str(newest)]  # one more attempt, from the newest checkpoint
    assert "- state: completed" in (exp / "experiment-context.md").read_text().splitlines()
    assert (exp / "train.log").read_text().splitlines()[-1].startswith("step=400 ")


def test_status_tells_a_live_watchdog_from_a_killed_one_and_a_second_watchdog_is_refused(
        tmp_path, prefect_api_url) -> None:
    exp = watchdog_experiment(tmp_path)
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "SPML_TEST_RUN": tmp_path.name}
    log = tmp_path / "run.log"
    proc = start(["watchdog", "run", str(exp)], env, log)
    wait_for((exp / "ckpt" / "step_000020.json").is_file, proc, log)

    def spml(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "spml", *args], capture_output=True,
                              text=True, env=env, timeout=120)

    live = spml("watchdog", "status", str(exp))
    assert live.returncode == 0
    assert f"watchdog: live (pid {proc.pid})" in live.stdout
    second = spml("watchdog", "run", str(exp))  # would launch the same training twice
    assert second.returncode == 2, second.stdout + second.stderr
    assert "another watchdog is already supervising this run" in second.stderr
    assert "Traceback" not in second.stdout + second.stderr

    os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: the context still says running
    proc.wait(timeout=60)
    dead = spml("watchdog", "status", str(exp))
    assert "state: running" in dead.stdout
    assert "watchdog: not running: the watchdog was killed while training ran" in dead.stdout
    assert f"spml watchdog run {exp}" in dead.stdout
    # the kernel freed the lock: the resume is not refused (trainer orphans are reaped by it)
    resumed = spml("watchdog", "run", str(exp))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert spml("watchdog", "status", str(exp)).stdout.splitlines()[-1] == "watchdog: not running"


def test_status_of_a_missing_directory_is_bad_input(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    done = subprocess.run([sys.executable, "-m", "spml", "watchdog", "status", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: experiment directory must exist, got '{missing}'")
    assert not missing.exists()
