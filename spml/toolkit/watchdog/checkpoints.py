"""Find the newest COMPLETE checkpoint of a RUNNING training job, without touching any.

This is the rule while the writer lives (it decides when an asynchronous evaluation may
start). After the writer died, timing proves nothing; a restart verifies checkpoints by their
structure instead (`spml.toolkit.watchdog.resume`, `spml.toolkit.watchdog.verify`).

A checkpoint is a file or a directory matching a glob under the checkpoint directory. It is
complete when

* a marker says so: ``<path><suffix>`` for a marker suffix (``ckpt_120.pt.done``), or a file
  ``COMPLETE`` inside a directory checkpoint, written AFTER the checkpoint (its mtime is not
  older than the checkpoint's content): a marker left by an earlier save vouches for nothing
  once the checkpoint was rewritten in place; or
* its signature (size, newest mtime and file count; for a directory those of the files below
  it, temporary ones left out) stayed the same across the tracker's observations for at least
  ``stable_s`` seconds, and it is not empty. The first sighting is therefore never complete
  unless marked, and a file still being written (growing, or re-touched) is never returned.

Temporary names are never candidates: a name starting with ``.`` or ``tmp``, or carrying a
``tmp`` / ``partial`` token (``ckpt.pt.tmp``, ``ckpt.tmp.123``, ``tmp-checkpoint-100``,
``x.orbax-checkpoint-tmp-9``), anything below such a directory, and the marker files
themselves. A temporary file that grows is a save in progress: `CheckpointTracker.temp_files`
reports them so that the heartbeat counts the save as activity.

Order ("newest"): the most recently WRITTEN first (mtime), the parsed step breaking exact
ties. Names lie too often to come first: ``last.ckpt`` holds the newest state under no step,
``epoch=0-step=100.ckpt`` kept as the best is older, a run restarted from scratch writes
``step_10`` next to an old ``step_500``. What mtime gets wrong is an old checkpoint copied
without its mtime (``cp`` without ``-p``, ``shutil.copy``, a restore from a backup) or touched:
it looks newest. `spml.toolkit.watchdog.resume` then names the older files that carry a
higher step, so the choice can be checked.

A path that cannot be read (permission denied, a stale NFS handle, an I/O error) is never
fatal: it is left out, with its reason, in `CheckpointTracker.survey`'s problems. The tracker
only reads (``stat``); it never opens, locks, moves or deletes anything.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMPLETE_MARKER", "Checkpoint", "CheckpointTracker", "is_temporary", "newest_first",
           "step_from_path"]

COMPLETE_MARKER = "COMPLETE"
# A save in progress: ``x.tmp``, ``x.tmp.123``, ``x.partial``, ``tmp-checkpoint-5``, ``tmpab12``.
_TEMP_TOKEN = re.compile(r"(?i)^tmp(?:[-_.]|[a-z0-9_]{8}$)|[-_.](?:tmp|partial)(?:[-_.\d]|$)")
_STEP_KEY = re.compile(r"(?i)(?<![A-Za-z])(?:global_step|step|iteration|iter)[-_=]?(\d+)"
                       r"(?![\d]|\.\d)")
_EPOCH_KEY = re.compile(r"(?i)(?<![A-Za-z])epoch[-_=]?(\d+)(?![\d]|\.\d)")
_KEY_VALUE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=[^-=/]*")  # val_loss=0.32, epoch=02
# A number not glued to letters and not part of a decimal (``0.32``).
_BARE_NUMBER = re.compile(r"(?<![A-Za-z\d])(?<!\d\.)(\d+)(?![A-Za-z\d]|\.\d)")
_UNREADABLE = (errno.ENOENT, errno.ENOTDIR)  # vanished: not a problem worth reporting


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint.

    Attributes:
        path: The file or directory (``base_dir / <glob match>``).
        step: Training step parsed from its name (or a parent's), if any.
        size: Bytes (for a directory: all files below it, temporary ones left out).
        mtime: Modification time (for a directory: the newest of the files below it).
    """

    path: Path
    step: int | None
    size: int
    mtime: float


@dataclass(frozen=True)
class _Seen:
    signature: tuple[int, float, int]
    since: float


def is_temporary(name: str) -> bool:
    """Whether a file or directory name is a save in progress (module docstring)."""
    return bool(_TEMP_TOKEN.search(name))


def step_from_path(path: Path, base_dir: Path | None = None) -> int | None:
    """Parse the training step from a checkpoint path.

    The name is tried first, then its parents up to ``base_dir``; in each, the last
    ``step``/``iter``/``iteration``/``global_step`` number wins (``epoch=2-step=1200.ckpt``
    -> 1200), else an ``epoch`` number (``sample-epoch=02-val_loss=0.32.ckpt`` -> 2), else
    the last number that is neither glued to letters nor part of a decimal nor the value of
    another ``key=value`` pair (``ckpt_000120.pt``, ``checkpoint-120``; not ``llama2.pt``,
    not ``loss=0.32``, not ``last-v1.ckpt``).

    Args:
        path: The checkpoint path.
        base_dir: Parents at or above this directory are not consulted.

    Returns:
        The step, or None when no part names one.
    """
    parts = path.relative_to(base_dir).parts if base_dir is not None else path.parts
    for part in reversed(parts):
        for pattern in (_STEP_KEY, _EPOCH_KEY):
            if found := pattern.findall(part):
                return int(found[-1])
        if found := _BARE_NUMBER.findall(_KEY_VALUE.sub("-", part)):
            return int(found[-1])
    return None


def newest_first(checkpoints: Iterable[Checkpoint]) -> list[Checkpoint]:
    """Most recently written first; on an exact mtime tie the higher step, then a step over
    none (module docstring: why mtime, and what it gets wrong)."""
    return sorted(checkpoints, key=lambda c: (c.mtime, c.step is not None, c.step or 0),
                  reverse=True)


class CheckpointTracker:
    """Remembers what it saw of matching checkpoints between calls to judge completeness."""

    def __init__(
        self,
        pattern: str,
        base_dir: Path,
        *,
        stable_s: float = 5.0,
        marker_suffixes: Sequence[str] = (".complete", ".done"),
    ) -> None:
        """Track checkpoints matching ``pattern`` under ``base_dir``.

        Args:
            pattern: A relative glob (``ckpt_*.pt``, ``checkpoint-*``, ``**/*.safetensors``).
            base_dir: The checkpoint directory (it may not exist yet).
            stable_s: Seconds an unmarked checkpoint must stay unchanged to count as complete.
            marker_suffixes: Suffixes of marker files next to a checkpoint.

        Raises:
            ValueError: ``pattern`` is empty or absolute, or ``stable_s`` is negative.
        """
        if not pattern or Path(pattern).is_absolute():
            raise ValueError(f"checkpoint glob must be relative to {base_dir}, got {pattern!r}")
        if stable_s < 0:
            raise ValueError(f"stable_s must be >= 0, got {stable_s}")
        self.pattern = pattern
        self.base_dir = Path(base_dir)
        self.stable_s = stable_s
        self.marker_suffixes = tuple(marker_suffixes)
        self._seen: dict[Path, _Seen] = {}

    def newest_complete(self, now: float) -> Checkpoint | None:
        """Observe the checkpoints and return the newest complete one.

        Args:
            now: The current time (same clock on every call, e.g. ``time.time()``).

        Returns:
            The newest complete checkpoint (`newest_first`), or None.
        """
        complete = self.complete(now)
        return complete[0] if complete else None

    def complete(self, now: float) -> list[Checkpoint]:
        """Observe the checkpoints and return all complete ones, newest first.

        Useful when the newest one turns out not to load: fall back to the next.

        Args:
            now: The current time (same clock on every call).

        Returns:
            Complete checkpoints ordered as in :meth:`newest_complete`.
        """
        seen: dict[Path, _Seen] = {}
        found: list[Checkpoint] = []
        for checkpoint, signature in self._measured()[0]:
            path = checkpoint.path
            before = self._seen.get(path)
            unchanged = before is not None and before.signature == signature
            seen[path] = _Seen(signature, before.since if unchanged else now)
            stable = unchanged and now - seen[path].since >= self.stable_s and signature[0] > 0
            if stable or self.is_marked(path):
                found.append(checkpoint)
        self._seen = seen
        return newest_first(found)

    def newest_marked(self) -> Checkpoint | None:
        """The newest checkpoint with a completeness marker, without observing stability.

        For the moment after the writer died: a half-written file then looks "stable" too, so
        only a marker can still prove a checkpoint complete.
        """
        found = [c for c in self.measure_all() if self.is_marked(c.path)]
        return newest_first(found)[0] if found else None

    def measure_all(self) -> list[Checkpoint]:
        """Every readable candidate as it is now, complete or not (no observation recorded)."""
        return self.survey()[0]

    def newest_first(self) -> list[Checkpoint]:
        """Every readable candidate as it is now, ordered as in :meth:`newest_complete`."""
        return newest_first(self.measure_all())

    def survey(self) -> tuple[list[Checkpoint], list[tuple[Path, str]]]:
        """Every candidate as it is now, and ``(path, reason)`` for each that cannot be read
        (permission denied, stale handle, I/O error); a vanished one is simply left out."""
        measured, problems = self._measured()
        return [checkpoint for checkpoint, _ in measured], problems

    def is_marked(self, path: Path) -> bool:
        """Whether a completeness marker written after ``path``'s content vouches for it.

        Never raises: a marker or checkpoint that cannot be read vouches for nothing.
        """
        try:
            markers = [Path(f"{path}{suffix}") for suffix in self.marker_suffixes]
            if path.is_dir():
                markers.append(path / COMPLETE_MARKER)
            made = [m for m in map(_mtime, markers) if m is not None]
            return bool(made) and max(made) >= _content_mtime(path)  # walk only when marked
        except OSError:
            return False

    def temp_files(self) -> tuple[tuple[str, int, float], ...]:
        """``(path, size, mtime)`` of the temporary files where checkpoints are written (the
        glob's fixed leading folders, a few levels deep): a save in progress changes them."""
        root = self.base_dir.joinpath(*_fixed_prefix(self.pattern))
        found: list[tuple[str, int, float]] = []
        seen = 0
        for folder, dirs, names in os.walk(root):
            depth = len(Path(folder).relative_to(root).parts)
            dirs[:] = [] if depth >= _TEMP_DEPTH else [d for d in dirs if d not in _SKIP_DIRS]
            inside_temp = any(is_temporary(p) for p in Path(folder).relative_to(root).parts)
            for name in names:
                seen += 1
                if inside_temp or is_temporary(name):
                    try:
                        stat = os.stat(os.path.join(folder, name))
                    except OSError:
                        continue
                    found.append((os.path.join(folder, name), stat.st_size, stat.st_mtime))
            if seen > _TEMP_ENTRIES:
                break
        return tuple(sorted(found))

    def _measured(self) -> tuple[list[tuple[Checkpoint, tuple[int, float, int]]],
                                 list[tuple[Path, str]]]:
        measured, problems = [], []
        try:
            candidates = self._candidates()
        except OSError as exc:
            return [], [(self.base_dir, _why(exc, "cannot be listed"))]
        for path in candidates:
            try:
                signature = _measure(path)
            except OSError as exc:
                if exc.errno not in _UNREADABLE:
                    problems.append((path, _why(exc, "cannot be read")))
                continue
            step = step_from_path(path, self.base_dir)
            measured.append((Checkpoint(path, step, signature[0], signature[1]), signature))
        return measured, problems

    def _candidates(self) -> list[Path]:
        if not self.base_dir.is_dir():
            return []
        return [
            path for path in self.base_dir.glob(self.pattern)
            if not self._excluded(path.relative_to(self.base_dir))
        ]

    def _excluded(self, relative: Path) -> bool:
        if any(part.startswith(".") or is_temporary(part) for part in relative.parts):
            return True
        name = relative.name
        return name == COMPLETE_MARKER or name.endswith(self.marker_suffixes)


_SKIP_DIRS = {".spml", ".git", ".venv", "venv", "__pycache__", "node_modules", "wandb",
              "mlruns", "site-packages"}
_TEMP_DEPTH = 3
_TEMP_ENTRIES = 2000


def _fixed_prefix(pattern: str) -> tuple[str, ...]:
    """The glob's leading folders without wildcards (``ckpt/run1/step_*`` -> ckpt, run1)."""
    parts = Path(pattern).parts[:-1]
    fixed = []
    for part in parts:
        if any(char in part for char in "*?["):
            break
        fixed.append(part)
    return tuple(fixed)


def _why(exc: OSError, what: str) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{what} ({type(exc).__name__}: {exc.strerror or exc}{where})"


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def _inside(path: Path) -> Iterable[tuple[str, str]]:
    """``(folder, name)`` of each file below a directory, temporary ones left out; raises
    OSError when a folder cannot be listed (what a loader could not read either)."""
    def fail(exc: OSError) -> None:
        raise exc

    for root, dirs, files in os.walk(path, onerror=fail):
        dirs[:] = [d for d in dirs if not is_temporary(d)]
        for name in files:
            if not is_temporary(name):
                yield root, name


def _measure(path: Path) -> tuple[int, float, int]:
    """(size, mtime, file count) of a file or a directory's files (its folders' own mtimes
    change with their listings, so only the files count); raises OSError."""
    stat = path.stat()
    if not path.is_dir():
        return stat.st_size, stat.st_mtime, 1
    size, mtime, count = 0, None, 0
    for root, name in _inside(path):
        entry = os.stat(os.path.join(root, name))
        size, count = size + entry.st_size, count + 1
        mtime = entry.st_mtime if mtime is None else max(mtime, entry.st_mtime)
    return size, stat.st_mtime if mtime is None else mtime, count


def _content_mtime(path: Path) -> float:
    """The newest mtime of what a marker vouches for (a directory's ``COMPLETE`` left out)."""
    if not path.is_dir():
        return path.stat().st_mtime
    newest = float("-inf")
    for root, name in _inside(path):
        if not (name == COMPLETE_MARKER and Path(root) == path):
            newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    return newest
