"""Catch a checkpoint glob that matches nothing while training makes progress.

A mistyped glob (``checkpoints/*.pt`` for a trainer writing ``ckpt/step_N.pt``) would otherwise
throw progress away silently: every restart would begin from scratch. `GlobWatch` warns once
steps advance and the glob still matches nothing, when

* ``checkpoint_interval`` is set: the interval has passed (no save was due before that, so
  nothing else can raise the alarm: pretrained weights lying around or a first save still in
  progress are no evidence); otherwise
* the startup grace is over and files that look like checkpoints exist, or
* files that look like checkpoints appeared since the attempt started (the trainer is saving,
  just not where the glob looks).

Images, logs, text and tables (``samples/step_20.png``, ``metrics_step_20.csv``), TensorBoard
event files and temporary names (``step_20.pt.tmp``: a save in progress) never look like
checkpoints.

The warning names the glob and the newest files that look like checkpoints
(`checkpoint_suspects`).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from spml.toolkit.watchdog.checkpoints import is_temporary

__all__ = ["GlobWatch", "checkpoint_suspects", "no_match_warning"]

_CKPT_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".distcp", ".pkl", ".npz",
                  ".h5", ".msgpack", ".index", ".metadata"}
_NOT_CKPT_SUFFIXES = {".py", ".md", ".log", ".txt", ".sh", ".toml", ".cfg", ".lock", ".yaml",
                      ".yml", ".ipynb", ".out", ".err", ".csv", ".tsv", ".jsonl", ".html",
                      ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".svg", ".webp", ".tif", ".tiff",
                      ".pdf", ".mp4", ".wav", ".mp3"}
_NOT_CKPT_NAME = re.compile(r"(?i)tfevents")
_CKPT_WORD = re.compile(r"(?i)ckpt|checkpoint")
_STEP_NAME = re.compile(r"(?i)(?:step|iter|iteration|epoch)[-_=]?\d+")
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "venv", "wandb", "mlruns"}
_MAX_ENTRIES = 5000  # a bounded walk: the experiment dir may hold a dataset
_MAX_DEPTH = 4
_RESCAN_S = 5.0


def checkpoint_suspects(exp_dir: Path, exclude: set[Path] | None = None,
                        limit: int = 5) -> list[tuple[str, float]]:
    """Files under ``exp_dir`` that look like checkpoints, newest first.

    A file looks like one when its suffix is a checkpoint format's (``.pt``,
    ``.safetensors``, ...) or its path says ``ckpt``/``checkpoint`` or its name carries a step
    (``step_20.json``); source, text and config files, hidden and tool directories do not.

    Args:
        exp_dir: Where to look (at most 4 levels deep and 5000 entries).
        exclude: Paths never listed (the training log).
        limit: How many to return.

    Returns:
        ``(path relative to exp_dir, mtime)`` pairs.
    """
    skip, found, seen = exclude or set(), [], 0
    for root, dirs, names in os.walk(exp_dir):
        depth = len(Path(root).relative_to(exp_dir).parts)
        dirs[:] = [] if depth >= _MAX_DEPTH else [
            d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in names:
            seen += 1
            path = Path(root, name)
            if path not in skip and _looks_like_checkpoint(path.relative_to(exp_dir)):
                try:
                    found.append((str(path.relative_to(exp_dir)), path.stat().st_mtime))
                except OSError:
                    continue
        if seen > _MAX_ENTRIES:
            break
    return sorted(found, key=lambda item: item[1], reverse=True)[:limit]


def _looks_like_checkpoint(relative: Path) -> bool:
    suffix = relative.suffix.lower()
    if relative.name.startswith(".") and relative.name != ".metadata":
        return False
    if suffix in _NOT_CKPT_SUFFIXES or _NOT_CKPT_NAME.search(relative.name):
        return False
    if any(is_temporary(part) for part in relative.parts):
        return False
    if suffix in _CKPT_SUFFIXES or _CKPT_WORD.search(str(relative)):
        return True
    return _STEP_NAME.search(relative.name) is not None


def no_match_warning(pattern: str, suspects: list[tuple[str, float]], steps: str) -> str:
    """The warning text: the glob, what happened, and the files it may have meant."""
    files = (f"files that look like checkpoints: {', '.join(name for name, _ in suspects)}"
             if suspects else "no file there looks like a checkpoint")
    return (f"checkpoint_glob {pattern!r} matches nothing {steps}; {files} — a restart would "
            "begin from scratch")


class GlobWatch:
    """Decides, poll by poll, whether the glob's silence deserves a warning."""

    def __init__(self, pattern: str, exp_dir: Path, *, interval_steps: int | None,
                 grace_s: float, exclude: set[Path] | None = None,
                 rescan_s: float = _RESCAN_S) -> None:
        self.pattern, self.exp_dir = pattern, exp_dir
        self._interval, self._grace_s = interval_steps, grace_s
        self._exclude = exclude or set()
        self._started, self._wall_started = time.monotonic(), time.time()
        self._next_scan, self._rescan_s = 0.0, rescan_s  # a walk per poll would be wasteful
        self.warning: str | None = None

    def check(self, matched: bool, first_step: int | None,
              last_step: int | None) -> str | None:
        """The warning while it holds (None once the glob matches, or while all is well).

        Args:
            matched: Whether the glob matches anything now.
            first_step: The first step this attempt logged (None before it).
            last_step: Its latest logged step.
        """
        if matched:
            self.warning = None
            return None
        if first_step is None or last_step is None or self.warning is not None:
            return self.warning
        now, advanced = time.monotonic(), last_step - first_step
        due = self._interval is not None and advanced >= self._interval
        if self._interval is not None and not due:
            return None  # no save was due yet: nothing is evidence of a wrong glob
        if not due and now < self._next_scan:
            return None
        self._next_scan = now + self._rescan_s
        suspects = checkpoint_suspects(self.exp_dir, self._exclude)
        fresh = any(mtime >= self._wall_started for _, mtime in suspects)
        if due or fresh or (suspects and now - self._started >= self._grace_s):
            self.warning = no_match_warning(self.pattern, suspects,
                                            f"after {advanced} steps (now at step {last_step})")
        return self.warning
