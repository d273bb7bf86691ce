"""`SupervisorLock`: one holder at a time across processes, freed by the kernel on kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spml.toolkit.process.lock import SupervisorLock, holder_of, is_held

HOLDER = """
import sys, time
from pathlib import Path
from spml.toolkit.process.lock import SupervisorLock
with SupervisorLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


class Busy(Exception):
    pass


def hold_in_child(path: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path) -> None:
    path = tmp_path / "state" / "supervisor.lock"
    assert not is_held(path)  # no file: nobody ever held it
    child = hold_in_child(path)
    try:
        assert is_held(path)
        assert holder_of(path) == child.pid
        with pytest.raises(Busy, match=f"held by pid {child.pid}$"), \
                SupervisorLock(path, Busy, "held by {holder}"):
            pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 10
    while is_held(path):  # the kernel drops a killed holder's lock
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with SupervisorLock(path, Busy):  # free again: this process takes it
        assert holder_of(path) == os.getpid()
        assert is_held(path)


def test_probing_does_not_take_the_lock_away(tmp_path) -> None:
    path = tmp_path / "supervisor.lock"
    child = hold_in_child(path)
    try:
        for _ in range(3):
            assert is_held(path)
    finally:
        child.kill()
        child.wait()
