"""Find the newest COMPLETE checkpoint of a RUNNING training job, without touching any.

This is the rule while the writer lives (it decides when an asynchronous evaluation may
start). After the writer died, timing proves nothing; a restart verifies checkpoints by their
structure instead (`spml.toolkit.watchdog.resume`, `spml.toolkit.watchdog.verify`).

A checkpoint is a file or a directory matching a glob under the checkpoint directory. It is
complete when

* a marker says so: ``<path><suffix>`` for a marker suffix (``ckpt_120.pt.done``), or a file
  ``COMPLETE`` inside a directory checkpoint; or
* its size and mtime (for a directory: total size, newest mtime and file count of everything
  below it) stayed the same across the tracker's observations for at least ``stable_s``
  seconds, and it is not empty. The first sighting is therefore never complete unless marked,
  and a file still being written (growing, or re-touched) is never returned.

Temporary names are never candidates: a name starting with ``.`` or containing a ``.tmp`` /
``.partial`` suffix (``ckpt.pt.tmp``, ``ckpt.tmp.123``), anything below such a directory, and
the marker files themselves. The tracker only reads (``stat``); it never opens, locks, moves
or deletes anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMPLETE_MARKER", "Checkpoint", "CheckpointTracker", "step_from_path"]

COMPLETE_MARKER = "COMPLETE"
_TEMP_NAME = re.compile(r"^\.|\.(?:tmp|partial)(?:\.|$)", re.IGNORECASE)
_NAMED_STEP = re.compile(r"(?i)(?:global_step|step|iteration|iter)[-_=]?(\d+)(?!\d)")
_BARE_NUMBER = re.compile(r"(?<![A-Za-z\d])(\d+)(?![A-Za-z\d])")


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint.

    Attributes:
        path: The file or directory (``base_dir / <glob match>``).
        step: Training step parsed from its name (or a parent's), if any.
        size: Bytes (for a directory: all files below it).
        mtime: Modification time (for a directory: the newest below it, itself included).
    """

    path: Path
    step: int | None
    size: int
    mtime: float


@dataclass(frozen=True)
class _Seen:
    signature: tuple[int, float, int]
    since: float


def step_from_path(path: Path, base_dir: Path | None = None) -> int | None:
    """Parse the training step from a checkpoint path.

    The name is tried first, then its parents up to ``base_dir``; in each, the last
    ``step``/``iter``/``global_step`` number wins (``epoch=2-step=1200.ckpt`` -> 1200), else
    the last number that is not glued to letters (``ckpt_000120.pt``, ``checkpoint-120``;
    not ``llama2.pt``).

    Args:
        path: The checkpoint path.
        base_dir: Parents at or above this directory are not consulted.

    Returns:
        The step, or None when no part names one.
    """
    parts = path.relative_to(base_dir).parts if base_dir is not None else path.parts
    for part in reversed(parts):
        for pattern in (_NAMED_STEP, _BARE_NUMBER):
            found = pattern.findall(part)
            if found:
                return int(found[-1])
    return None


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
            The complete checkpoint with the highest step (ties and step-less ones: newest
            mtime; a checkpoint with a step beats one without), or None.
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
        for path in self._candidates():
            signature = _measure(path)
            if signature is None:  # vanished while we looked
                continue
            before = self._seen.get(path)
            unchanged = before is not None and before.signature == signature
            seen[path] = _Seen(signature, before.since if unchanged else now)
            stable = unchanged and now - seen[path].since >= self.stable_s and signature[0] > 0
            if stable or self._marked(path):
                step = step_from_path(path, self.base_dir)
                found.append(Checkpoint(path, step, signature[0], signature[1]))
        self._seen = seen
        return sorted(found, key=_recency, reverse=True)

    def newest_marked(self) -> Checkpoint | None:
        """The newest checkpoint with a completeness marker, without observing stability.

        For the moment after the writer died: a half-written file then looks "stable" too, so
        only a marker can still prove a checkpoint complete.
        """
        found = []
        for path in self._candidates():
            signature = _measure(path)
            if signature is not None and self._marked(path):
                step = step_from_path(path, self.base_dir)
                found.append(Checkpoint(path, step, signature[0], signature[1]))
        return max(found, key=_recency) if found else None

    def measure_all(self) -> list[Checkpoint]:
        """Every candidate as it is now, complete or not (no observation is recorded)."""
        found = []
        for path in self._candidates():
            if (signature := _measure(path)) is not None:
                found.append(Checkpoint(path, step_from_path(path, self.base_dir),
                                        signature[0], signature[1]))
        return found

    def newest_first(self) -> list[Checkpoint]:
        """Every candidate as it is now, ordered as in :meth:`newest_complete`."""
        return sorted(self.measure_all(), key=_recency, reverse=True)

    def is_marked(self, path: Path) -> bool:
        """Whether a completeness marker vouches for ``path``."""
        return self._marked(path)

    def _candidates(self) -> list[Path]:
        if not self.base_dir.is_dir():
            return []
        return [
            path for path in self.base_dir.glob(self.pattern)
            if not self._excluded(path.relative_to(self.base_dir))
        ]

    def _excluded(self, relative: Path) -> bool:
        if any(_TEMP_NAME.search(part) for part in relative.parts):
            return True
        name = relative.name
        return name == COMPLETE_MARKER or name.endswith(self.marker_suffixes)

    def _marked(self, path: Path) -> bool:
        if any(Path(f"{path}{suffix}").exists() for suffix in self.marker_suffixes):
            return True
        return path.is_dir() and (path / COMPLETE_MARKER).exists()


def _measure(path: Path) -> tuple[int, float, int] | None:
    """(size, mtime, file count) of a file or a directory tree; None if it vanished."""
    try:
        stat = path.stat()
        if not path.is_dir():
            return stat.st_size, stat.st_mtime, 1
        size, mtime, count = 0, stat.st_mtime, 0
        for root, dirs, files in os.walk(path):
            for name in dirs:
                mtime = max(mtime, os.stat(os.path.join(root, name)).st_mtime)
            for name in files:
                entry = os.stat(os.path.join(root, name))
                size, mtime, count = size + entry.st_size, max(mtime, entry.st_mtime), count + 1
        return size, mtime, count
    except FileNotFoundError:
        return None


def _recency(checkpoint: Checkpoint) -> tuple[bool, int, float]:
    step = checkpoint.step
    return step is not None, step if step is not None else 0, checkpoint.mtime
