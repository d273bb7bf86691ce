"""Process facts read from Linux ``/proc``: start times, group members, escaped descendants.

Used by the command runner (`spml.toolkit.process.runner`) to kill everything a command left behind
and to tell a stale pid file from a reused pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

logger = logging.getLogger(__name__)
PROC = Path("/proc")
# Set in every child's environment: finds descendants that left the process group.
TOKEN_VAR = "SPML_RUN_TOKEN"


def stat_fields(pid: int | str) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (index 0 = state, 2 = pgrp, 19 = starttime)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def live_group_members(pgid: int) -> list[int]:
    """Pids of non-zombie processes in group ``pgid`` (any signalable member without /proc)."""
    if not PROC.joinpath("self", "stat").exists():
        return [pgid] if _signal_group_probe(pgid) else []
    members = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        fields = stat_fields(entry.name)
        if fields and len(fields) > 2 and fields[0] not in "ZX" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _signal_group_probe(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_by_token(token: str) -> list[int]:
    """SIGKILL every process whose environment carries this run's token.

    Descendants that left the process group (`setsid`, a double fork, a daemon an agent
    started) still inherit the environment, so they are found here. A process that also
    scrubs its environment escapes; only a container or cgroup stops that.
    """
    if not token or not PROC.is_dir():
        return []
    marker = f"{TOKEN_VAR}={token}".encode()
    found = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (PROC / entry.name / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if found:
        logger.warning("killed %d escaped descendant(s): %s", len(found), found)
    return found


def orphans_of(pgid: int, leader_start: int) -> list[int]:
    """Live members of a group whose leader has exited (e.g. `sleep 30 &` of a dead shell).

    A pgid cannot be reused while any member of its group lives, so members started after the
    recorded leader belong to it, unless a new process now leads a group of that number.
    """
    leader = stat_fields(pgid)
    if leader is not None and len(leader) > 19 and int(leader[2]) == pgid:
        return []  # the number now leads another group: pid reuse, not ours
    return [pid for pid in live_group_members(pgid)
            if (start_time(pid) or 0) >= leader_start]
