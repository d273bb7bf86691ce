"""Content copies of git's admin files (hooks, config, excludes...) and their restoration.

A researcher runs with the user's permissions, so it could plant a hook or a config entry that
later runs code in the user's own checkout. The supervisor records these files before a round
(:func:`scan_admin`) and, on rollback, puts them back exactly (:func:`restore_admin`).
Entries are keyed by a stable name; each holds ``(st_mode, bytes)`` where the bytes are the file
content, or the link target for a symlink.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

AdminEntry = tuple[int, bytes]


def _scan(path: Path, key: str, out: dict[str, AdminEntry]) -> None:
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISLNK(info.st_mode):
        out[key] = (info.st_mode, os.fsencode(os.readlink(path)))
    elif stat.S_ISDIR(info.st_mode):
        for child in sorted(os.listdir(path)):
            _scan(path / child, f"{key}/{child}", out)
    elif stat.S_ISREG(info.st_mode):
        out[key] = (info.st_mode, path.read_bytes())


def scan_admin(roots: Mapping[str, Path]) -> dict[str, AdminEntry]:
    """Read every admin file under the given roots.

    Args:
        roots: Key prefix -> file or directory; directories are read recursively, symlinks are
            recorded as links (never followed), missing paths are skipped.

    Returns:
        Key -> (mode, content or link target).
    """
    out: dict[str, AdminEntry] = {}
    for key, path in roots.items():
        _scan(path, key, out)
    return out


def digest(entry: AdminEntry) -> str:
    """sha256 over an entry's mode and bytes."""
    mode, data = entry
    return hashlib.sha256(f"{mode:o}\0".encode() + data).hexdigest()


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _write(path: Path, entry: AdminEntry) -> None:
    mode, data = entry
    if path.is_symlink() or path.exists():
        _remove(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if stat.S_ISLNK(mode):
        os.symlink(os.fsdecode(data), path)
        return
    path.write_bytes(data)
    path.chmod(stat.S_IMODE(mode))


def restore_admin(saved: Mapping[str, AdminEntry], current: Mapping[str, AdminEntry],
                  resolve: Callable[[str], Path]) -> list[str]:
    """Make the admin files equal ``saved`` again.

    Args:
        saved: The recorded entries.
        current: The entries as they are now (from :func:`scan_admin` with the same roots).
        resolve: Key -> filesystem path.

    Returns:
        The keys that were deleted or rewritten, sorted.
    """
    changed = set()
    for key in sorted(set(current) - set(saved), reverse=True):
        path = resolve(key)
        if path.is_symlink() or path.exists():
            _remove(path)
        changed.add(key)
    for key, entry in saved.items():
        if current.get(key) != entry:
            _write(resolve(key), entry)
            changed.add(key)
    return sorted(changed)
