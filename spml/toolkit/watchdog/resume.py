"""Which checkpoint a restart resumes from: the newest one that verifies.

At a restart the writer is dead (the watchdog stopped whatever was left of it), so waiting for
a checkpoint to look stable proves nothing. The glob's matches are tried newest first and the
first one accepted is handed out; each one skipped is reported with its reason. A candidate is
accepted when

* a user check is set (``checkpoint_check: "python check.py {checkpoint}"``): it exits 0
  within its time limit. The user's rule replaces the built-in ones;
* otherwise its structure verifies (`spml.toolkit.watchdog.verify`). One that fails is skipped
  even when a completeness marker names it: the file is damaged whatever was promised;
* a format without a structural check (a legacy non-zip torch pickle, an unknown suffix) is
  accepted only when a completeness marker names it or the watchdog saw it complete while its
  writer lived. Handing out a half-written file would make the resume crash, and that crash
  reads as a code failure that stops the run, which costs more than one checkpoint interval.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spml.errors import CommandError
from spml.toolkit.process.runner import run_command, supervisor_path
from spml.toolkit.watchdog.checkpoints import Checkpoint, CheckpointTracker
from spml.toolkit.watchdog.verify import Verdict, verify_checkpoint

__all__ = ["ResumeChoice", "UserCheck", "choose_resume", "judge"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumeChoice:
    """The checkpoint a restart resumes from, and what was passed over to find it.

    Attributes:
        checkpoint: The newest accepted checkpoint, or None (a fresh start).
        how: Why it was accepted (empty when there is none).
        skipped: ``"<path>: <reason>"`` for each newer candidate that was rejected.
        candidates: How many paths matched the checkpoint glob.
    """

    checkpoint: Checkpoint | None
    how: str = ""
    skipped: tuple[str, ...] = ()
    candidates: int = 0

    def describe(self) -> str:
        """``ckpt/step_40.pt (step 40; torch archive: ...)`` or ``none``."""
        if self.checkpoint is None:
            return "none"
        step = "" if self.checkpoint.step is None else f"step {self.checkpoint.step}; "
        return f"{self.checkpoint.path} ({step}{self.how})"


@dataclass(frozen=True)
class UserCheck:
    """The user's completeness check: a shell command, ``{checkpoint}`` = the path."""

    command: str
    exp_dir: Path
    log_dir: Path
    time_limit_s: float

    def __call__(self, path: Path) -> Verdict:
        """Run the check on ``path`` (exit 0 within the time limit = complete)."""
        command = self.command.format(checkpoint=shlex.quote(str(path)))
        try:
            result = run_command(command, cwd=self.exp_dir, log_dir=self.log_dir,
                                 name="checkpoint-check", env=supervisor_path(),
                                 time_limit_s=self.time_limit_s)
        except CommandError as exc:
            return Verdict("bad", f"checkpoint_check could not start: {exc}")
        if result.ok:
            return Verdict("ok", "checkpoint_check exited 0")
        return Verdict("bad", f"checkpoint_check failed: {result.describe()}")


def judge(checkpoint: Checkpoint, vouched: Callable[[Checkpoint], bool],
          user_check: UserCheck | None = None) -> Verdict:
    """Whether a restart may resume from ``checkpoint`` (the module docstring's rules).

    Args:
        checkpoint: The candidate.
        vouched: Whether a marker names it or it was seen complete while its writer lived.
        user_check: The user's check, which replaces the built-in rules when given.
    """
    if user_check is not None:
        return user_check(checkpoint.path)
    verdict = verify_checkpoint(checkpoint.path)
    if verdict.status != "unverifiable":
        return verdict
    if vouched(checkpoint):
        return Verdict("ok", f"marked or seen complete while training ran ({verdict.reason})")
    return Verdict("bad", f"{verdict.reason}; no marker and not seen complete while training "
                   "ran (add a .complete marker or a checkpoint_check)")


def choose_resume(tracker: CheckpointTracker, vouched: Callable[[Checkpoint], bool],
                  user_check: UserCheck | None = None) -> ResumeChoice:
    """The newest candidate that ``judge`` accepts, with every newer one it skipped.

    Args:
        tracker: Knows the glob and the directory (only its current listing is used).
        vouched: See `judge`.
        user_check: See `judge`.
    """
    candidates = tracker.newest_first()
    skipped: list[str] = []
    for checkpoint in candidates:
        verdict = judge(checkpoint, vouched, user_check)
        if verdict.ok:
            return ResumeChoice(checkpoint, verdict.reason, tuple(skipped), len(candidates))
        name = _shown(checkpoint.path, tracker.base_dir)
        log.warning("checkpoint %s skipped: %s", name, verdict.reason)
        skipped.append(f"{name}: {verdict.reason}")
    return ResumeChoice(None, "", tuple(skipped), len(candidates))


def _shown(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
