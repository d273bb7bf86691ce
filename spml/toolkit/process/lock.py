"""One supervisor per directory: an advisory `flock` the kernel drops when its holder dies.

Shared by the loop engine (one autoresearch / ml-iteration supervisor per experiment) and the
watchdog (one per training run: two would launch the same training twice). Because a killed
holder (kill -9 included) releases the lock at once, a free lock beside a `running` record
means that run was killed, which is how `status` tells a live supervisor from a dead one.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

__all__ = ["SupervisorLock", "holder_of", "is_held"]

# `is_held` takes a shared lock for an instant: a supervisor starting then waits it out.
_PROBE_GRACE_S = 1.0


class SupervisorLock:
    """An exclusive lock on ``path`` (created if needed), holding the holder's pid.

    ``refuse(holder)`` builds the exception raised when another process holds it, from the
    holder's recorded pid text ('' when unknown)."""

    def __init__(self, path: Path, refuse: type[Exception] | None = None,
                 busy: str = "another supervisor is already running ({holder})") -> None:
        self._path = path
        self._refuse = refuse or RuntimeError
        self._busy = busy
        self._fd: int | None = None

    def __enter__(self) -> SupervisorLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _lock_within(fd, fcntl.LOCK_EX, _PROBE_GRACE_S):
            os.close(fd)
            pid = holder_of(self._path)
            raise self._refuse(self._busy.format(
                holder=f"pid {pid}" if pid else "pid unknown")) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid()}).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _lock_within(fd: int, mode: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock at ``path`` now (no file: nobody ever did)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        if not _lock_within(fd, fcntl.LOCK_SH, 0.0):
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def holder_of(path: Path) -> int | None:
    """The pid recorded by the lock's last holder (None when unreadable)."""
    try:
        return int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
