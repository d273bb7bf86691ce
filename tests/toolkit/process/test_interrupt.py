"""The Prefect-free interrupt machinery, in a real process that signals itself."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# A supervisor: a training-like group that ignores nothing, a recorder writing a file, then a
# signal to itself while it waits on the group (as the runner does).
SUPERVISOR = """
import os, signal, sys, time
from pathlib import Path
from spml.toolkit.process import interrupt
from spml.toolkit.process.runner import start_command

out = Path(sys.argv[1])
def record(name):
    (out / "recorded").write_text(name)
    return f"interrupted by {name}; resume with: again"
interrupt.STATE.recorders.append(record)
interrupt.install()
if sys.argv[3] == "swallowed":  # another library's handler replaced ours and swallows it
    signal.signal(signal.SIGTERM, lambda *args: None)
    signal.signal(signal.SIGINT, lambda *args: None)
running = start_command([sys.executable, "-c", "import time; time.sleep(300)"], cwd=out,
                        log_dir=out, name="train")
(out / "train.pid").write_text(str(running.pid))
print("buffered output before the signal")
os.kill(os.getpid(), getattr(signal, sys.argv[2]))
while not running.exited(timeout_s=0.1):
    pass
print("the interrupted code must not go on")  # or, when it does, not be heard
time.sleep(30)  # (where Prefect's unwinding would reach a guarded flow body and wait)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize(("sig", "how"), [("SIGINT", "ours"), ("SIGTERM", "ours"),
                                          ("SIGTERM", "swallowed"), ("SIGINT", "swallowed")])
def test_a_signal_records_ends_the_group_prints_one_line_and_exits(
        tmp_path: Path, sig: str, how: str) -> None:
    script = tmp_path / "supervisor.py"
    script.write_text(textwrap.dedent(SUPERVISOR))
    began = time.monotonic()
    done = subprocess.run([sys.executable, str(script), str(tmp_path), sig, how],
                          capture_output=True, text=True, timeout=60)
    assert time.monotonic() - began < 20
    assert done.returncode == {"SIGINT": 130, "SIGTERM": 143}[sig], done.stderr
    assert done.stdout == "buffered output before the signal\n"  # flushed, then nothing
    assert done.stderr == f"interrupted by {sig}; resume with: again\n"
    assert (tmp_path / "recorded").read_text() == sig
    assert not _alive(int((tmp_path / "train.pid").read_text()))
