"""The registry of live process groups that an interrupted supervisor ends at once."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from spml.toolkit.process.procfs import live_group_members
from spml.toolkit.process.runner import end_live_groups, live_groups, run_command, start_command

# Ignores SIGTERM and leaves a child behind: only SIGKILL ends the group.
STUBBORN = [sys.executable, "-c", "import signal, subprocess, sys, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
            "print('ready', flush=True); time.sleep(300)"]


def _ready(path: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while "ready" not in (path.read_text() if path.is_file() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_group_is_live_from_its_start_until_its_call_cleaned_it_up(tmp_path: Path) -> None:
    running = start_command("sleep 30", cwd=tmp_path, log_dir=tmp_path, name="sleep")
    assert running.pid in live_groups()
    running.stop(grace_s=2)
    running.finish()
    assert running.pid not in live_groups()
    run_command("true", cwd=tmp_path, log_dir=tmp_path, name="true")
    assert live_groups() == []


def test_end_live_groups_terminates_then_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    polite = start_command("sleep 30", cwd=tmp_path, log_dir=tmp_path, name="polite")
    stubborn = start_command(STUBBORN, cwd=tmp_path, log_dir=tmp_path, name="stubborn")
    _ready(stubborn.stdout_path)
    began = time.monotonic()
    ended = end_live_groups(grace_s=0.5)
    assert sorted(ended) == sorted([polite.pid, stubborn.pid])
    assert time.monotonic() - began < 5
    assert live_group_members(polite.pid) == []
    assert live_group_members(stubborn.pid) == []
    # The calls that own the groups find nothing left to kill, and report how they ended.
    assert polite.finish().exit_code == -15
    assert stubborn.finish().exit_code == -9
    assert live_groups() == []


def test_a_run_command_waiting_in_another_thread_returns_once_its_group_is_ended(
        tmp_path: Path) -> None:
    results = []
    waiter = threading.Thread(target=lambda: results.append(run_command(
        "sleep 30", cwd=tmp_path, log_dir=tmp_path, name="waited")))
    waiter.start()
    deadline = time.monotonic() + 10
    while not live_groups():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    end_live_groups(grace_s=1)
    waiter.join(timeout=10)
    assert results
    assert results[0].exit_code == -15
