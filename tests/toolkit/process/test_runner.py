"""Tests of spml.toolkit.process.runner with real subprocesses (Linux: group checks read /proc)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from spml.errors import CommandError
from spml.toolkit.process import runner
from spml.toolkit.process.runner import (
    CommandResult,
    ExitKind,
    kill_stale_process_group,
    run_command,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process; zombies may linger if nobody reaps them."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rfind(")") + 2] not in "ZX"


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _run(tmp_path: Path, command, **kwargs) -> CommandResult:
    kwargs.setdefault("name", "cmd")
    return run_command(command, cwd=tmp_path, log_dir=tmp_path / "logs", **kwargs)


def _read_pid(path: Path, timeout: float = 5.0) -> int:
    assert _wait_until(lambda: path.exists() and path.read_text().strip() != "", timeout)
    return int(path.read_text().strip())


def test_ok_run_writes_output_to_log_files(tmp_path: Path) -> None:
    result = _run(tmp_path, "echo hello; echo oops >&2; pwd -P", name="hello")

    assert result.ok
    assert result.kind is ExitKind.OK
    assert result.exit_code == 0
    assert result.stdout_path == tmp_path / "logs" / "hello.stdout.log"
    assert result.stderr_path == tmp_path / "logs" / "hello.stderr.log"
    assert result.stdout_text() == f"hello\n{tmp_path.resolve()}\n"
    assert result.stderr_tail() == "oops"
    assert result.describe().startswith("exit 0")
    assert result.duration_s >= 0
    assert result.time_limit_s is None


def test_sequence_command_env_merge_and_stdin(tmp_path: Path) -> None:
    code = (
        "import os, sys; print(os.environ['SPML_X'], 'PATH' in os.environ, repr(sys.stdin.read()))"
    )
    result = _run(tmp_path, [sys.executable, "-c", code], env={"SPML_X": "42"})

    assert result.ok
    assert result.stdout_text().strip() == "42 True ''"
    assert result.command.startswith(sys.executable)


def test_failure_describe_shows_last_stderr_line(tmp_path: Path) -> None:
    code = "print('progress'); raise ValueError('boom')"
    result = _run(tmp_path, [sys.executable, "-c", code])

    assert result.kind is ExitKind.FAILED
    assert not result.ok
    assert result.exit_code == 1
    assert result.describe() == "exit 1: ValueError: boom"
    assert "Traceback" in result.stderr_tail(lines=20)
    assert result.stderr_tail(lines=1) == "ValueError: boom"


def test_failure_without_stderr_falls_back_to_stdout(tmp_path: Path) -> None:
    result = _run(tmp_path, "echo 'loss diverged'; echo; exit 3")

    assert result.kind is ExitKind.FAILED
    assert result.describe() == "exit 3: loss diverged"


def test_missing_program_in_shell_is_a_failure(tmp_path: Path) -> None:
    result = _run(tmp_path, "definitely-not-a-program-spml")

    assert result.kind is ExitKind.FAILED
    assert result.exit_code == 127
    assert "not found" in result.describe()


def test_describe_is_one_short_line(tmp_path: Path) -> None:
    result = _run(tmp_path, "printf 'x%.0s' $(seq 500) >&2; exit 2")

    text = result.describe()
    assert len(text) <= 200
    assert "\n" not in text
    assert text.startswith("exit 2: xxx")


def test_timeout_kills_whole_group_including_grandchild(tmp_path: Path) -> None:
    pid_out = tmp_path / "bg.pid"
    started = time.monotonic()
    result = _run(
        tmp_path,
        f"sleep 100 & echo $! > {pid_out}; sleep 100",
        time_limit_s=0.5,
        kill_grace_s=5.0,
    )
    elapsed = time.monotonic() - started

    assert result.kind is ExitKind.TIMEOUT
    assert not result.ok
    assert result.exit_code == -signal.SIGTERM  # SIGTERM sufficed: no SIGKILL after the grace
    assert elapsed < 60  # killed at the limit, long before the children's 100 s sleeps
    assert not _alive(_read_pid(pid_out))
    assert result.describe() == (
        "killed after exceeding 0.5s time limit (process group terminated)"
    )


def test_child_ignoring_sigterm_is_sigkilled_after_grace(tmp_path: Path) -> None:
    pid_out = tmp_path / "bg.pid"
    started = time.monotonic()
    result = _run(
        tmp_path,
        f"trap '' TERM; sleep 100 & echo $! > {pid_out}; sleep 100",
        time_limit_s=0.3,
        kill_grace_s=0.7,
    )
    elapsed = time.monotonic() - started

    assert result.kind is ExitKind.TIMEOUT
    assert result.exit_code == -signal.SIGKILL
    assert elapsed >= 0.9  # the grace was granted before SIGKILL (limit 0.3 s + grace 0.7 s)
    assert elapsed < 60  # ...and the group did not run on to its 100 s sleeps
    assert not _alive(_read_pid(pid_out))


def test_leftover_background_children_are_killed_after_normal_exit(tmp_path: Path) -> None:
    pid_out = tmp_path / "bg.pid"
    result = _run(tmp_path, f"sleep 1000 & echo $! > {pid_out}; echo done")

    assert result.ok
    assert not _alive(_read_pid(pid_out))


def test_process_killing_itself_is_signaled(tmp_path: Path) -> None:
    result = _run(tmp_path, "echo about to die >&2; kill -9 $$")

    assert result.kind is ExitKind.SIGNALED
    assert result.exit_code == -9
    assert result.describe() == "killed by signal 9 (SIGKILL): about to die"


@pytest.mark.parametrize(
    ("code", "kind", "signal_name"),
    [
        (137, ExitKind.SIGNALED, "SIGKILL"),
        (139, ExitKind.SIGNALED, "SIGSEGV"),
        (134, ExitKind.SIGNALED, "SIGABRT"),
        (143, ExitKind.SIGNALED, "SIGTERM"),
        (130, ExitKind.SIGNALED, "SIGINT"),
        (129, ExitKind.FAILED, None),
        (2, ExitKind.FAILED, None),
    ],
)
def test_shell_style_signal_exit_codes(
    tmp_path: Path, code: int, kind: ExitKind, signal_name: str | None
) -> None:
    result = _run(tmp_path, f"exit {code}")

    assert result.kind is kind
    assert result.exit_code == code
    if signal_name is not None:
        assert signal_name in result.describe()
        assert f"exit code {code}" in result.describe()


def test_abort_in_direct_exec_is_signaled(tmp_path: Path) -> None:
    result = _run(tmp_path, [sys.executable, "-c", "import os; os.abort()"])

    assert result.kind is ExitKind.SIGNALED
    assert result.exit_code == -signal.SIGABRT
    assert result.describe().startswith("killed by signal 6 (SIGABRT)")


def test_missing_cwd_raises_command_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"cwd must be an existing directory.*nope"):
        run_command("true", cwd=tmp_path / "nope", log_dir=tmp_path / "logs", name="x")


def test_missing_executable_raises_command_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"no-such-program-spml"):
        _run(tmp_path, ["no-such-program-spml", "--flag"])


@pytest.mark.parametrize("command", ["", "   ", []])
def test_empty_command_raises_command_error(tmp_path: Path, command) -> None:
    with pytest.raises(CommandError, match="non-empty"):
        _run(tmp_path, command)


def test_bad_name_raises_command_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="name must be"):
        _run(tmp_path, "true", name="a/b")


def test_pid_file_exists_during_run_and_is_removed(tmp_path: Path) -> None:
    pid_file = tmp_path / "run" / "train.pid.json"
    # The file is written right after the spawn, so the child waits for it to appear.
    result = _run(tmp_path, f"while [ ! -s {pid_file} ]; do sleep 0.01; done; "
                  f"cat {pid_file}; echo; echo $$", pid_file=pid_file)

    assert result.ok
    record_line, shell_pid = result.stdout_text().strip().splitlines()
    record = json.loads(record_line)
    assert record["pid"] == record["pgid"] == int(shell_pid)
    assert isinstance(record["start_time"], int)
    assert not pid_file.exists()


def test_pid_file_removed_after_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "train.pid.json"
    result = _run(tmp_path, "sleep 100", pid_file=pid_file, time_limit_s=0.2)

    assert result.kind is ExitKind.TIMEOUT
    assert not pid_file.exists()


def test_kill_stale_process_group_after_supervisor_sigkill(tmp_path: Path) -> None:
    pid_file = tmp_path / "train.pid.json"
    child_pid_out = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from spml.toolkit.process.runner import run_command
        run_command(
            "echo $$ > {child_pid_out}; sleep 100 & sleep 100",
            cwd=Path({str(tmp_path)!r}), log_dir=Path({str(tmp_path / "logs")!r}),
            name="train", pid_file=Path({str(pid_file)!r}),
        )
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    supervisor = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        leader = _read_pid(child_pid_out, timeout=10.0)
        assert _wait_until(pid_file.exists)
    finally:
        supervisor.kill()
        supervisor.wait()
    record = json.loads(pid_file.read_text())
    assert record["pgid"] == leader
    assert _alive(leader)  # orphaned: the supervisor died without cleanup

    assert kill_stale_process_group(pid_file) is True

    assert _wait_until(lambda: not _alive(leader))
    assert not pid_file.exists()
    assert kill_stale_process_group(pid_file) is False


def test_kill_stale_process_group_guards_against_pid_reuse(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "100"], start_new_session=True)
    try:
        pid_file = tmp_path / "stale.pid.json"
        record = {"pgid": sleeper.pid, "pid": sleeper.pid, "start_time": 1}
        pid_file.write_text(json.dumps(record))

        assert kill_stale_process_group(pid_file) is False
        assert sleeper.poll() is None
        assert not pid_file.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_kill_stale_process_group_handles_dead_and_garbage_files(tmp_path: Path) -> None:
    gone = tmp_path / "gone.json"
    gone.write_text(json.dumps({"pgid": 2**22 + 7, "pid": 2**22 + 7, "start_time": 5}))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")

    assert kill_stale_process_group(tmp_path / "missing.json") is False
    assert kill_stale_process_group(gone) is False
    assert kill_stale_process_group(garbage) is False
    assert not gone.exists()
    assert not garbage.exists()


def test_works_from_a_non_main_thread(tmp_path: Path) -> None:
    results: dict[str, CommandResult] = {}

    def work(tag: str, command: str) -> None:
        results[tag] = _run(tmp_path, command, name=tag, time_limit_s=0.3, kill_grace_s=1.0)

    threads = [
        threading.Thread(target=work, args=("slow", "sleep 100")),
        threading.Thread(target=work, args=("fast", "echo hi")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert results["slow"].kind is ExitKind.TIMEOUT
    assert results["fast"].ok
    assert results["fast"].stdout_text() == "hi\n"


def test_stdout_text_returns_the_tail(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.write('a' * 5000 + 'é' + 'END')"
    result = _run(tmp_path, [sys.executable, "-c", code])

    assert result.stdout_text(max_bytes=4) == "END"  # cut-off UTF-8 byte dropped
    assert result.stdout_text(max_bytes=5) == "éEND"
    assert len(result.stdout_text()) == 5004


def test_kill_stale_group_whose_leader_already_exited(tmp_path: Path) -> None:
    # The supervisor dies; the group's leader (a shell) exits; its background child lives on.
    pid_file = tmp_path / "child.pid"
    script = (
        "import sys; from pathlib import Path; "
        "from spml.toolkit.process.runner import run_command; "
        f"run_command('sleep 300 & sleep 0.3', cwd=Path({str(tmp_path)!r}), "
        f"log_dir=Path({str(tmp_path)!r}), name='c', pid_file=Path({str(pid_file)!r}))"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not pid_file.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    supervisor.kill()
    supervisor.wait()
    record = json.loads(pid_file.read_text())
    # Wait for the case under test: the leader `sh` has exited, `sleep 300` lives on in the group.
    deadline = time.monotonic() + 30
    while _alive(record["pid"]) or not _live_members(record["pgid"]):
        assert time.monotonic() < deadline, (
            f"leader alive: {_alive(record['pid'])}, group members: "
            f"{_live_members(record['pgid'])} -- expected an exited leader and a live sleeper")
        time.sleep(0.02)
    assert kill_stale_process_group(pid_file)
    deadline = time.monotonic() + 10
    while _live_members(record["pgid"]):
        assert time.monotonic() < deadline, "orphaned group member survived"
        time.sleep(0.05)


def _live_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in "ZX" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def test_descendant_that_left_the_group_is_killed(tmp_path: Path) -> None:
    # `setsid` puts the sleeper in a new session and group: only the run token finds it.
    marker = tmp_path / "daemon.pid"
    # The leader waits (up to 60 s) until the daemon has written its pid, not a fixed time.
    result = run_command(f"setsid sh -c 'echo $$ > {marker}.tmp && mv {marker}.tmp {marker}; "
                         f"exec sleep 300' & i=0; while [ ! -e {marker} ] && [ $i -lt 1200 ]; "
                         "do sleep 0.05; i=$((i + 1)); done",
                         cwd=tmp_path, log_dir=tmp_path, name="d")
    assert result.ok
    assert marker.exists(), "the setsid daemon never started (60 s)"
    daemon = int(marker.read_text())
    deadline = time.monotonic() + 10
    while _alive(daemon):
        assert time.monotonic() < deadline, "the setsid daemon outlived run_command"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in "ZX"


@pytest.mark.parametrize("wait", ["pidfd", "polling"])
def test_the_leader_wait_sees_the_exit_and_the_deadline_and_leaves_it_unreaped(
        tmp_path: Path, wait: str) -> None:
    """Both waits (the pidfd one, and the polling one where pidfds are missing) say False at
    the deadline while the leader runs, True once it exited, and never reap it (its pid, the
    group id, must not be reused before `finish`)."""
    wait_for = runner._wait_leader_exit if wait == "pidfd" else runner._poll_leader_exit
    flag = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, time
        while not os.path.exists({str(flag)!r}):
            time.sleep(0.01)
        """)])
    try:
        assert wait_for(proc.pid, time.monotonic() + 0.05) is False
        flag.touch()
        assert wait_for(proc.pid, time.monotonic() + 30) is True
        assert wait_for(proc.pid, None) is True  # no deadline: returns at once, still exited
        assert Path(f"/proc/{proc.pid}").exists()  # a zombie: not reaped
    finally:
        proc.kill()
        assert proc.wait() == 0  # reaped here, with the exit status the wait left alone


def test_the_leader_wait_on_a_reaped_child_says_exited() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert runner._wait_leader_exit(proc.pid, time.monotonic() + 5) is True
    assert runner._poll_leader_exit(proc.pid, time.monotonic() + 5) is True
