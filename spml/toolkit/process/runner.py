"""Run one shell command under a time limit, with its whole process group cleaned up afterwards.

Every stage that runs user code (researcher agent, training, evaluation, watchdog) goes
through :func:`run_command`. The child writes its output straight into log files, runs in its
own session/process group, and nothing it spawned outlives the call: on a time limit the group
gets SIGTERM, then SIGKILL after a grace period; after a normal exit any leftover members of the
group are SIGKILLed. An optional pid file lets a restarted supervisor kill a group orphaned by
a supervisor that died without cleaning up (:func:`kill_stale_process_group`).

Every started group is registered until its call has cleaned it up, so a supervisor that is
interrupted (Ctrl-C, SIGTERM) can end them all at once from its signal handler
(:func:`end_live_groups`) without waiting for the calls to unwind.

Linux-first: process-group membership and pid-reuse checks read ``/proc``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from spml.errors import CommandError
from spml.toolkit.process.procfs import (
    TOKEN_VAR,
    kill_by_token,
    live_group_members,
    orphans_of,
    start_time,
)
from spml.toolkit.process.result import CommandResult, ExitKind, classify_returncode
from spml.toolkit.process.sandbox import Confinement, bwrap_binary, unavailable_reason

logger = logging.getLogger(__name__)

_SHELL = "/bin/sh"
_REAP_TIMEOUT_S = 2.0  # how long to wait for SIGKILLed group members to disappear
_MAX_POLL_S = 0.25
# How long the rest of a group may take to exit after its leader, before it counts as left
# behind (bwrap's leader exits a moment before its init in the sandbox's pid namespace).
_WIND_DOWN_S = 0.1
# pgid -> token of every group started and not yet cleaned up. Plain dict operations only (each
# atomic under the GIL): a signal handler reads it while the interrupted code may be changing it.
_LIVE: dict[int, str] = {}


def run_command(  # noqa: PLR0913 - the documented, keyword-only API of the shared runner
    command: str | Sequence[str],
    *,
    cwd: Path,
    log_dir: Path,
    name: str,
    env: Mapping[str, str] | None = None,
    time_limit_s: float | None = None,
    kill_grace_s: float = 5.0,
    pid_file: Path | None = None,
    confine: Confinement | None = None,
) -> CommandResult:
    """Run ``command`` in its own process group and wait for it, killing what it leaves behind.

    A ``str`` runs via ``/bin/sh -c``; a sequence is exec'd directly. stdin is ``/dev/null``;
    stdout/stderr go straight to ``log_dir/<name>.stdout.log`` and ``<name>.stderr.log``.
    Safe to call from any thread (waits by polling, no signal handlers).

    Args:
        command: Shell command line, or argv sequence.
        cwd: Working directory of the child; must exist.
        log_dir: Directory for the two log files; created if missing.
        name: Base name of the log files (no ``/``).
        env: Variables set over a copy of ``os.environ``.
        time_limit_s: Wall-clock limit; on expiry the group gets SIGTERM, then SIGKILL.
        kill_grace_s: Seconds between that SIGTERM and SIGKILL.
        pid_file: If given, holds ``{"pgid", "pid", "start_time"}`` JSON while the call runs.
        confine: Run inside this sandbox (see `spml.toolkit.process.sandbox`).

    Returns:
        The :class:`CommandResult`; a failing or killed command is a result, not an error.

    Raises:
        CommandError: The command could not be started (empty command, bad ``name``, missing
            ``cwd`` or executable, unwritable log dir or pid file).
    """
    running = start_command(command, cwd=cwd, log_dir=log_dir, name=name, env=env,
                            pid_file=pid_file, time_limit_s=time_limit_s, confine=confine)
    timed_out = False
    try:
        timed_out = _supervise(running.proc, running.display, time_limit_s, kill_grace_s)
    finally:
        result = running.finish(timed_out=timed_out)
    return result


class RunningCommand:
    """A started command whose group this object owns until `finish` (for callers that poll,
    such as a watchdog reading the log while the process runs)."""

    def __init__(self, proc: subprocess.Popen[bytes], display: str, token: str,
                 paths: tuple[Path, Path], pid_file: Path | None,
                 time_limit_s: float | None) -> None:
        self.proc, self.display, self._token = proc, display, token
        self.stdout_path, self.stderr_path = paths
        self._pid_file, self._time_limit_s = pid_file, time_limit_s
        self._started = time.monotonic()

    @property
    def pid(self) -> int:
        """The leader's pid, which is also the process group id."""
        return self.proc.pid

    def exited(self, timeout_s: float = 0.0) -> bool:
        """Whether the leader has exited (waiting up to ``timeout_s``); it stays unreaped."""
        return _wait_leader_exit(self.proc.pid, time.monotonic() + timeout_s)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the group, wait up to ``grace_s`` for it to go (`finish` SIGKILLs the rest)."""
        _signal_group(self.proc.pid, signal.SIGTERM)
        _wait_group_gone(self.proc.pid, time.monotonic() + max(grace_s, 0.0))

    def finish(self, timed_out: bool = False) -> CommandResult:
        """Kill whatever is left (group and escaped descendants), reap, and report."""
        try:
            _finish_group(self.proc, self.display)
            kill_by_token(self._token)
        finally:
            _LIVE.pop(self.proc.pid, None)
            if self._pid_file is not None:
                self._pid_file.unlink(missing_ok=True)
        result = CommandResult(
            command=self.display, exit_code=self.proc.returncode,
            kind=ExitKind.TIMEOUT if timed_out else classify_returncode(self.proc.returncode),
            duration_s=time.monotonic() - self._started, stdout_path=self.stdout_path,
            stderr_path=self.stderr_path, time_limit_s=self._time_limit_s,
        )
        logger.info("%r finished: %s", self.display, result.describe())
        return result


def start_command(  # noqa: PLR0913 - same keyword-only API as run_command
    command: str | Sequence[str],
    *,
    cwd: Path,
    log_dir: Path,
    name: str,
    env: Mapping[str, str] | None = None,
    pid_file: Path | None = None,
    time_limit_s: float | None = None,
    confine: Confinement | None = None,
) -> RunningCommand:
    """Start ``command`` like `run_command` does, without waiting; see `RunningCommand`.

    Raises:
        CommandError: The command could not be started.
    """
    argv, display = _argv_and_display(command)
    if confine is not None:
        argv = _confined(argv, display, confine)
    paths = _log_paths(log_dir, name, display)
    token = uuid.uuid4().hex
    proc = _spawn(argv, display, cwd, {**(env or {}), TOKEN_VAR: token}, *paths)
    _LIVE[proc.pid] = token
    logger.info("started %r as pgid %d (cwd=%s, limit=%ss)", display, proc.pid, cwd, time_limit_s)
    running = RunningCommand(proc, display, token, paths, pid_file, time_limit_s)
    if pid_file is not None:
        try:
            _write_pid_file(pid_file, proc.pid, display, token)
        except CommandError:
            running.finish()
            raise
    return running


def _confined(argv: list[str], display: str, confine: Confinement) -> list[str]:
    binary = bwrap_binary()
    if binary is None:
        raise CommandError(f"cannot confine {display!r}: {unavailable_reason()}")
    return confine.wrap(argv, binary)


def kill_stale_process_group(pid_file: Path) -> bool:
    """SIGKILL the process group recorded in ``pid_file`` if its leader is still the same process.

    For a supervisor restarting after it was killed without cleanup: the recorded leader must
    still exist with the recorded ``start_time`` (guards against pid reuse). The file is
    deleted in every case.

    Args:
        pid_file: A file written by :func:`run_command` (``pid_file=``).

    Returns:
        True if a live group was found and killed.
    """
    if not pid_file.exists():
        return False
    try:
        record = json.loads(pid_file.read_text(encoding="utf-8"))
        pid, pgid = int(record["pid"]), int(record["pgid"])
        recorded_start = int(record["start_time"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable pid file %s: %s", pid_file, exc)
        pid_file.unlink(missing_ok=True)
        return False
    killed = bool(kill_by_token(str(record.get("token", ""))))
    if start_time(pid) == recorded_start or orphans_of(pgid, recorded_start):
        killed = _signal_group(pgid, signal.SIGKILL)
        if killed:
            logger.warning("killed stale process group %d recorded in %s", pgid, pid_file)
            _wait_group_gone(pgid, time.monotonic() + _REAP_TIMEOUT_S)
    else:
        logger.info(
            "process %d from %s is gone (or its pid was reused); nothing to kill", pid, pid_file
        )
    pid_file.unlink(missing_ok=True)
    return killed


def live_groups() -> list[int]:
    """The process groups started by this process whose calls have not cleaned them up yet."""
    return list(_LIVE.copy())


def end_live_groups(grace_s: float = 2.0) -> list[int]:
    """End every live group at once: SIGTERM, up to ``grace_s`` to exit, then SIGKILL (and
    their descendants that left the group). For an interrupted supervisor; safe to call from
    a signal handler or another thread while the calls that own the groups are suspended
    (their own cleanup, should they resume, finds nothing left to kill).

    Returns:
        The process group ids that were signalled.
    """
    live = _LIVE.copy()
    for pgid in live:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + max(grace_s, 0.0)
    for pgid in live:
        _wait_group_gone(pgid, deadline)
    for pgid, token in live.items():
        if live_group_members(pgid):  # no logging here: the interrupted thread may hold its lock
            _signal_group(pgid, signal.SIGKILL)
        kill_by_token(token)
    reaped = time.monotonic() + _REAP_TIMEOUT_S
    for pgid in live:
        _wait_group_gone(pgid, reaped)
    return list(live)


# --- starting -------------------------------------------------------------------------------


def _argv_and_display(command: str | Sequence[str]) -> tuple[list[str], str]:
    if isinstance(command, str):
        if not command.strip():
            raise CommandError(
                f"command must be a non-empty shell command line, got {command!r} "
                "(run_command). Pass the command to run."
            )
        return [_SHELL, "-c", command], command
    argv = [str(part) for part in command]
    if not argv or not argv[0]:
        raise CommandError(
            f"command must be a non-empty argv sequence, got {argv!r} (run_command). "
            "Pass the program and its arguments."
        )
    return argv, shlex.join(argv)


def _log_paths(log_dir: Path, name: str, display: str) -> tuple[Path, Path]:
    if not name or "/" in name or name in {".", ".."}:
        raise CommandError(
            f"name must be a plain file-name stem, got {name!r} (log name for {display!r}). "
            "Use something like 'train' or 'eval-3'."
        )
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(
            f"log_dir must be a creatable directory, got {str(log_dir)!r} "
            f"(logs of {display!r}): {exc}. Fix the path or its permissions."
        ) from exc
    return log_dir / f"{name}.stdout.log", log_dir / f"{name}.stderr.log"


def _spawn(
    argv: list[str],
    display: str,
    cwd: Path,
    env: Mapping[str, str] | None,
    stdout_path: Path,
    stderr_path: Path,
) -> subprocess.Popen[bytes]:
    if not Path(cwd).is_dir():
        raise CommandError(
            f"cwd must be an existing directory, got {str(cwd)!r} (starting {display!r}). "
            "Create it or fix the path."
        )
    child_env = {**os.environ, **env} if env is not None else None
    try:
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            return subprocess.Popen(
                argv,
                cwd=cwd,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        raise CommandError(
            f"command must be startable, got {display!r} (cwd={str(cwd)!r}): {exc}. "
            "Check that the program exists, is executable and is on PATH."
        ) from exc


def _write_pid_file(pid_file: Path, pid: int, display: str, token: str) -> None:
    record = {"pgid": pid, "pid": pid, "start_time": start_time(pid), "token": token}
    try:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = pid_file.with_name(f".{pid_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, pid_file)
    except OSError as exc:
        raise CommandError(
            f"pid_file must be writable, got {str(pid_file)!r} (running {display!r}): {exc}. "
            "Fix the path or its permissions."
        ) from exc


# --- waiting and killing --------------------------------------------------------------------


def _supervise(
    proc: subprocess.Popen[bytes], display: str, time_limit_s: float | None, grace_s: float
) -> bool:
    """Wait for the leader to exit (without reaping it); return True if the limit was hit."""
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    if _wait_leader_exit(proc.pid, deadline):
        return False
    logger.warning(
        "%r exceeded its %ss time limit; sending SIGTERM to group %d",
        display,
        time_limit_s,
        proc.pid,
    )
    _signal_group(proc.pid, signal.SIGTERM)
    if not _wait_group_gone(proc.pid, time.monotonic() + max(grace_s, 0.0)):
        logger.warning(
            "group %d still alive %ss after SIGTERM; sending SIGKILL", proc.pid, grace_s
        )
    return True


def _finish_group(proc: subprocess.Popen[bytes], display: str) -> None:
    """SIGKILL whatever is left of the group, then reap the leader.

    The leader is still an unreaped zombie here, so its pid (= the pgid) cannot be reused.
    """
    leftovers = live_group_members(proc.pid)
    if leftovers and _wait_group_gone(proc.pid, time.monotonic() + _WIND_DOWN_S):
        leftovers = []  # still exiting, e.g. a sandbox's init reporting its child's exit
    if leftovers:
        logger.warning(
            "killing %d leftover process(es) of %r: %s", len(leftovers), display, leftovers
        )
    _signal_group(proc.pid, signal.SIGKILL)
    if leftovers:
        _wait_group_gone(proc.pid, time.monotonic() + _REAP_TIMEOUT_S)
    proc.wait()


def _wait_leader_exit(pid: int, deadline: float | None) -> bool:
    """Wait until ``pid`` (our child) has exited, leaving it unreaped; False at the deadline.

    Woken by the exit itself through a pidfd (Linux >= 5.3): polling, the fallback, notices
    it up to an interval late (0.25 s once a run is long, 0.125 s on average per command).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, an old kernel, or already reaped
        return _poll_leader_exit(pid, deadline)
    try:
        watch = select.poll()
        watch.register(pidfd, select.POLLIN)  # readable once the process has exited
        while not _has_exited(pid):
            if deadline is None:
                watch.poll()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            watch.poll(max(1, math.ceil(remaining * 1000)))
        return True
    finally:
        os.close(pidfd)


def _has_exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped elsewhere (e.g. SIGCHLD set to SIG_IGN)
        return True


def _poll_leader_exit(pid: int, deadline: float | None) -> bool:
    delay = 0.005
    while not _has_exited(pid):
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            delay = min(delay, remaining)
        time.sleep(delay)
        delay = min(delay * 2, _MAX_POLL_S)
    return True


def _wait_group_gone(pgid: int, deadline: float) -> bool:
    """Poll until the group has no live (non-zombie) member; False at the deadline."""
    delay = 0.005
    while live_group_members(pgid):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, _MAX_POLL_S)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        logger.warning("cannot send %s to process group %d: %s", sig.name, pgid, exc)
        return False
    return True


def supervisor_path() -> dict[str, str]:
    """PATH with this interpreter's directory first, so `python` in a command is spml's Python.

    Without it, `.venv/bin/spml` run from a shell whose PATH has another Python would train
    with an interpreter that lacks the experiment's packages.
    """
    bindir = str(Path(sys.executable).parent)
    return {"PATH": os.pathsep.join([bindir, os.environ.get("PATH", os.defpath)])}
