"""The evidence the handoff pre-checks judge (`handoff_checks`): the runs and git's view.

`HandoffSettings` (what the runs run, and their limits); the runs themselves: L1 in command
mode (unless a report is passed in) and the time-limit probe, a training run with a short
SPML_TIME_LIMIT and a huge SPML_MAX_STEPS; the snapshots before and after them that tell what
a run writes; and the git queries the checks need (the files git sees, which paths it
ignores and by which rule). Pure toolkit code: no Prefect.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import git

from spml.errors import ProtocolError, SpmlError
from spml.toolkit.git.runner import HARDENING, config_args
from spml.toolkit.git.setup import find_repo
from spml.toolkit.loop.observe import FirstStepClock
from spml.toolkit.process.result import CommandResult
from spml.toolkit.process.runner import run_command, supervisor_path
from spml.toolkit.runtime import contract
from spml.toolkit.runtime.command import CommandSettings, run_commands
from spml.toolkit.runtime.report import L1Report
from spml.toolkit.runtime.thresholds import Thresholds

ENV_EPOCH_LIMIT = "SPML_EPOCH_LIMIT"
PROBE_TIME_LIMIT_S = 3.0  # the probe only needs to see the limit work, not a full budget
PROBE_MAX_STEPS = 10**9  # so large that only the time (or epoch) limit can end the probe
_KILL_GRACE_S = 2.0


@dataclass(frozen=True)
class HandoffSettings:
    """What the checks run and their limits.

    Attributes:
        train_command: The training command (L1's); reads ``SPML_*`` or placeholders.
        eval_command: Prints ``metric`` for ``{checkpoint}``; None fails deterministic_eval.
        metric: The name the eval command prints.
        fixed_files: Globs (relative to the experiment dir) of the files a loop never edits.
        time_limit_s: The loop's training budget; the probe uses min(this, 3 s).
        epoch_limit: ``SPML_EPOCH_LIMIT`` for the probe, when the protocol has one.
        max_steps: ``SPML_MAX_STEPS`` of the L1 run.
        first_step_limit_s: The first step line must arrive within this.
        log_glob: Where the run's own log file lands (relative to the experiment dir).
        checkpoint_glob: Where the run's checkpoint lands (L1 evaluates the newest).
        grace_s: The probe may run this long past its time limit before it is killed.
    """

    train_command: str
    eval_command: str | None
    metric: str | None
    fixed_files: list[str]
    time_limit_s: float
    epoch_limit: int | None = None
    max_steps: int = 50
    first_step_limit_s: float = 60.0
    log_glob: str = "**/*.log"
    checkpoint_glob: str = "outputs/*.pt"
    grace_s: float = 30.0

    def __post_init__(self) -> None:
        if min(self.time_limit_s, self.first_step_limit_s, self.grace_s) <= 0:
            raise ProtocolError("time_limit_s, first_step_limit_s and grace_s must be > 0")
        if self.epoch_limit is not None and self.epoch_limit < 1:
            raise ProtocolError(f"epoch_limit must be >= 1 (or None), got {self.epoch_limit}")
        self.l1_settings()  # L1's own rules: a non-empty command, a metric for the eval

    def l1_settings(self) -> CommandSettings:
        """The settings of L1 command mode on this experiment."""
        return CommandSettings(train_command=self.train_command, eval_command=self.eval_command,
                               metric=self.metric, checkpoint_glob=self.checkpoint_glob,
                               max_steps=self.max_steps, time_limit_s=self.time_limit_s)


@dataclass(frozen=True)
class _Probe:
    """The time-limit probe: its result, its limits and when its first step line came."""

    result: CommandResult
    time_limit_s: float
    allowed_s: float
    first_step_s: float | None


@dataclass(frozen=True)
class _Evidence:
    """What the checks judge: the runs and the files they wrote (relative POSIX paths)."""

    exp_dir: Path
    settings: HandoffSettings
    l1: L1Report
    probe: _Probe
    written: list[str]


def _gather_evidence(exp_dir: Path, settings: HandoffSettings, l1_report: L1Report | None,
                     log_dir: Path | None) -> _Evidence:
    """Run L1 (unless ``l1_report`` is given) and the time-limit probe in ``exp_dir`` and
    note the files they wrote; raises as `handoff_checks.run_handoff_checks` documents."""
    exp_dir = Path(exp_dir).resolve()
    if not exp_dir.is_dir():
        raise ProtocolError(f"{exp_dir}: no such folder (the handoff checks an experiment dir)")
    find_repo(exp_dir)  # the gitignore checks, and every loop after handoff, need one
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="spml-handoff-")).resolve()
    before = _snapshot(exp_dir, log_dir)
    l1 = l1_report if l1_report is not None else run_commands(
        settings.l1_settings(), exp_dir, thresholds=Thresholds(), log_dir=log_dir / "l1")
    probe = _time_limit_probe(exp_dir, settings, log_dir / "time-limit")
    after = _snapshot(exp_dir, log_dir)
    written = sorted(path for path, stamp in after.items() if before.get(path) != stamp)
    return _Evidence(exp_dir, settings, l1, probe, written)


# --- the runs -------------------------------------------------------------------------------


def _snapshot(exp_dir: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``exp_dir`` (but .git and spml's own logs) -> (mtime_ns, size)."""
    files: dict[str, tuple[int, int]] = {}
    for root, dirs, names in os.walk(exp_dir):
        dirs[:] = [d for d in dirs if d != ".git" and os.path.join(root, d) != str(skip)]
        for name in names:
            path = Path(root, name)
            try:
                stat = path.lstat()
            except OSError:  # vanished while we walked
                continue
            files[path.relative_to(exp_dir).as_posix()] = (stat.st_mtime_ns, stat.st_size)
    return files


def _time_limit_probe(exp_dir: Path, settings: HandoffSettings, log_dir: Path) -> _Probe:
    """Train with a short SPML_TIME_LIMIT and a huge SPML_MAX_STEPS; it must exit 0 in time."""
    probe_s = min(settings.time_limit_s, PROBE_TIME_LIMIT_S)
    (log_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    values = {"max_steps": str(PROBE_MAX_STEPS), "time_limit": f"{probe_s:g}",
              "checkpoint_dir": str(log_dir / "checkpoints"),
              "metrics_file": str(log_dir / "metrics.jsonl"), "seed": "0"}
    env = {**supervisor_path(), **contract.contract_env(values)}
    if settings.epoch_limit is not None:
        env[ENV_EPOCH_LIMIT] = str(settings.epoch_limit)
    command = contract.fill_placeholders(settings.train_command, values)
    allowed = probe_s + settings.grace_s
    with FirstStepClock(log_dir / "train.stdout.log", log_dir / "train.stderr.log") as clock:
        result = run_command(command, cwd=exp_dir, log_dir=log_dir, name="train", env=env,
                             time_limit_s=allowed, kill_grace_s=_KILL_GRACE_S)
    return _Probe(result, probe_s, allowed, clock.first_step_s)


# --- git ------------------------------------------------------------------------------------


def _git(cwd: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """``git <args>`` in ``cwd`` with spml's hardening: (status, stdout, stderr)."""
    runner = git.Git(str(cwd))
    command = [runner.GIT_PYTHON_GIT_EXECUTABLE or "git", *config_args(HARDENING), *args]
    with tempfile.TemporaryFile() as feed:  # GitPython feeds stdin from a real file only
        feed.write(stdin or b"")
        feed.seek(0)
        status, out, err = runner.execute(command, istream=feed, with_extended_output=True,
                                          with_exceptions=False)
    return int(status or 0), str(out), str(err)


def _listed_files(exp_dir: Path) -> list[str]:
    """The experiment's files git sees (tracked or untracked, not ignored), relative."""
    status, out, err = _git(exp_dir, "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard", "--", ".")
    if status != 0:
        raise SpmlError(f"`git ls-files` failed in {exp_dir}: {err.strip()}")
    return sorted({path for path in out.split("\0") if path})


def _ignored_by(exp_dir: Path, paths: Sequence[str], *, no_index: bool) -> dict[str, str]:
    """Each of ``paths`` git ignores -> the rule (``source:line:pattern``) that does it.

    Without ``no_index`` a tracked file counts as not ignored: a loop commits its changes.
    """
    found: dict[str, str] = {}
    options = ["-z", "-v", "--stdin", *(["--no-index"] if no_index else [])]
    paths_in = "".join(f"{path}\0" for path in paths).encode()  # -z: any file name is safe
    status, out, err = _git(exp_dir, "check-ignore", *options, stdin=paths_in)
    if status not in (0, 1):  # 1: nothing ignored
        raise SpmlError(f"`git check-ignore` failed in {exp_dir}: {err.strip()}")
    fields = out.split("\0")
    for source, line, pattern, path in zip(*[iter(fields)] * 4, strict=False):
        if not pattern.startswith("!"):  # -v also names the negation that un-ignores
            found[path] = f"{source}:{line}:{pattern}"
    return found
