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
  A marker counts only when it is not older than the checkpoint's content (one left by an
  earlier save does not vouch for a rewrite), a sighting only while the checkpoint's size and
  mtime are still the ones seen (`spml.toolkit.watchdog.checkpoints`).

Candidates are tried most recently written first (`checkpoints.newest_first`); when older
files name a higher step than the one chosen, the choice says so (a copied old checkpoint
looks newest). A candidate that cannot be read (permission denied, an I/O error) is skipped
with its reason, never fatal. The skipped list keeps the first `SHOWN_SKIPPED` with their
reasons and counts the rest. A fresh start although candidates exist is never silent:
`fresh_start_warning` names them and the fix (a marker or a ``checkpoint_check``); this holds
at the first attempt too, when files from before the watchdog started cannot be verified.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spml.errors import CommandError
from spml.toolkit.process.runner import run_command, supervisor_path
from spml.toolkit.watchdog.checkpoints import Checkpoint, CheckpointTracker, newest_first
from spml.toolkit.watchdog.verify import Verdict, verify_checkpoint

__all__ = ["SHOWN_SKIPPED", "ResumeChoice", "UserCheck", "choose_resume", "fresh_start_warning",
           "judge"]

log = logging.getLogger(__name__)
SHOWN_SKIPPED = 5  # skipped candidates listed with their reasons; the rest are counted


@dataclass(frozen=True)
class ResumeChoice:
    """The checkpoint a restart resumes from, and what was passed over to find it.

    Attributes:
        checkpoint: The newest accepted checkpoint, or None (a fresh start).
        how: Why it was accepted (empty when there is none).
        skipped: ``"<path>: <reason>"`` for the first `SHOWN_SKIPPED` newer candidates that
            were rejected, then ``"and N more skipped"`` when there were more.
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
    """The newest candidate that ``judge`` accepts, with the newer ones it skipped.

    Args:
        tracker: Knows the glob and the directory (only its current listing is used).
        vouched: See `judge`.
        user_check: See `judge`.
    """
    measured, problems = tracker.survey()
    candidates = newest_first(measured)
    rejected = [f"{_shown(path, tracker.base_dir)}: {reason}" for path, reason in problems]
    chosen: Checkpoint | None = None
    how = ""
    for checkpoint in candidates:
        try:
            verdict = judge(checkpoint, vouched, user_check)
        except OSError as exc:  # a path that turned unreadable between listing and reading
            verdict = Verdict("bad", f"cannot be read ({exc})")
        if verdict.ok:
            chosen, how = checkpoint, verdict.reason + _higher_steps_note(checkpoint, candidates,
                                                                          tracker.base_dir)
            break
        rejected.append(f"{_shown(checkpoint.path, tracker.base_dir)}: {verdict.reason}")
    for line in rejected[:SHOWN_SKIPPED]:
        log.warning("checkpoint skipped: %s", line)
    skipped = rejected[:SHOWN_SKIPPED]
    if len(rejected) > SHOWN_SKIPPED:
        skipped.append(f"and {len(rejected) - SHOWN_SKIPPED} more skipped")
        log.warning("and %d more checkpoint(s) skipped", len(rejected) - SHOWN_SKIPPED)
    return ResumeChoice(chosen, how, tuple(skipped), len(candidates) + len(problems))


def fresh_start_warning(choice: ResumeChoice, pattern: str) -> str | None:
    """The warning for a fresh start although checkpoints match the glob (None otherwise).

    At the first attempt no checkpoint was seen complete by this watchdog, so a format
    without a structural check needs a marker: the files are not used, but never silently
    (the fresh run may overwrite them).
    """
    if choice.checkpoint is not None or not choice.candidates:
        return None
    named = [line.split(": ", 1) for line in choice.skipped if ": " in line]
    names = ", ".join(name for name, _ in named)
    more = choice.candidates - len(named)
    example = f"; {named[0][0]}: {named[0][1]}" if named else ""
    return (f"starting from SCRATCH although {choice.candidates} checkpoint(s) match "
            f"{pattern!r} ({names}{f' and {more} more' if more > 0 else ''}): none could be "
            f"used{example}. To resume from one whose format cannot be verified (a legacy "
            "torch pickle, .pkl, .h5, ...), write a marker next to it once it is complete "
            "(<path>.complete, or COMPLETE inside a directory) or set checkpoint_check "
            "(--checkpoint-check 'python check.py {checkpoint}'); the fresh run may "
            "overwrite them")


def _higher_steps_note(chosen: Checkpoint, candidates: list[Checkpoint], base: Path) -> str:
    """Older candidates that name a higher step than the chosen one (a copied old checkpoint
    gets a new mtime and looks newest; a run restarted from scratch keeps old high steps)."""
    if chosen.step is None:
        return ""
    higher = [c for c in candidates if c.step is not None and c.step > chosen.step
              and c.mtime < chosen.mtime]
    if not higher:
        return ""
    top = max(higher, key=lambda c: c.step or 0)
    return (f"; note: {len(higher)} older file(s) name a higher step, e.g. "
            f"{_shown(top.path, base)} (step {top.step}): newest written wins; if that one "
            "holds the newer state, its mtime was reset (copied without cp -p?)")


def _shown(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
