"""One attempt of the supervised training run: start it, watch its heartbeat, end it.

The heartbeat is any new line in the training log (or its stdout when no log file is set). After
the startup grace (or once a first step was logged), silence longer than `hang_timeout_s` is a
hang: a Python stack dump is taken when py-spy is available, then the process group is
stopped. The attempt's end is returned as evidence for `classify`.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spml.toolkit.metrics.log import LogFollower, MetricHistory
from spml.toolkit.process.result import CommandResult
from spml.toolkit.process.runner import RunningCommand, start_command, supervisor_path
from spml.toolkit.watchdog.checkpoints import Checkpoint
from spml.toolkit.watchdog.classify import AttemptEnd, read_oom_evidence

log = logging.getLogger(__name__)
TAIL_LINES = 200
LOW_DISK_BYTES = 16 << 20


@dataclass(frozen=True)
class AttemptConfig:
    """What one attempt needs (built from the watchdog settings)."""

    train_command: str
    exp_dir: Path
    log_file: Path | None
    hang_timeout_s: float
    startup_grace_s: float
    poll_interval_s: float
    state_dir: Path


@dataclass
class AttemptOutcome:
    """How an attempt ended, with what the watchdog saw of it."""

    end: AttemptEnd
    result: CommandResult
    started_at: float
    ended_at: float
    resume_from: Path | None
    history: MetricHistory = field(repr=False, default_factory=MetricHistory)

    @property
    def finished(self) -> bool:
        """Training ended by itself with exit 0."""
        return not self.end.hung and self.end.exit_code == 0


def attempt_command(config: AttemptConfig, resume_from: Checkpoint | None) -> tuple[str, dict]:
    """The command line and extra environment of an attempt (resume contract).

    ``{checkpoint}`` becomes the checkpoint's path as one shell word (quoted: a directory
    with a space or a quote stays one argument), and ``''`` on a fresh start, so
    ``--resume {checkpoint}`` still passes an (empty) value. ``$SPML_RESUME_FROM`` holds the
    path, or is empty on a fresh start (also when the watchdog's own environment set it).
    Other braces in the command are left as they are (shell ``${VAR}``, ``awk '{...}'``).
    """
    path = str(resume_from.path) if resume_from else ""
    command = config.train_command.replace("{checkpoint}", shlex.quote(path))
    env = {**supervisor_path(), "PYTHONFAULTHANDLER": "1", "SPML_RESUME_FROM": path}
    return command, env


def run_attempt(config: AttemptConfig, number: int, resume_from: Checkpoint | None,
                on_poll: Callable[[MetricHistory], bool | None] | None = None,
                xid_events: Callable[[], list[int]] | None = None) -> AttemptOutcome:
    """Run attempt ``number`` until it exits or hangs; never raises for a failing run."""
    command, env = attempt_command(config, resume_from)
    log_dir = config.state_dir / f"attempt-{number:03d}"
    _, oom_counts = read_oom_evidence()
    started = time.time()
    # Earlier attempts' lines in an appended log must not count for this one.
    follower = _follow_from_now(config.log_file) if config.log_file else None
    running = start_command(command, cwd=config.exp_dir, log_dir=log_dir, name="train", env=env,
                            pid_file=config.state_dir / "train.pid")
    follower = follower or LogFollower(running.stdout_path)
    history = MetricHistory()
    recent: deque[str] = deque(maxlen=TAIL_LINES)  # this attempt's log lines only
    try:
        hung = _watch(running, follower, (history, recent), config, on_poll)
    finally:  # the watchdog itself failing or being cancelled must not orphan the training
        result = running.finish()
    oom, _ = read_oom_evidence(oom_counts)
    end = AttemptEnd(
        exit_code=None if hung else result.exit_code, hung=hung,
        log_tail="\n".join([*recent, _tail(result), _disk_evidence(config.exp_dir)]),
        started_step=resume_from.step if resume_from
        else None, last_step=history.last_step, oom_kill_evidence=oom,
        xid_events=tuple(xid_events()) if xid_events else (),
    )
    return AttemptOutcome(end, result, started, time.time(), resume_from.path if resume_from
                          else None, history)


def _disk_evidence(directory: Path) -> str:
    """A line classify() recognises when the experiment's disk is (nearly) full: the run's own
    ENOSPC traceback may not have reached a log on that same disk."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return ""
    return f"system: No space left on device ({free} bytes free)" if free < LOW_DISK_BYTES else ""


def _follow_from_now(path: Path) -> LogFollower:
    follower = LogFollower(path)
    while follower.poll():  # consume what is already there
        pass
    return follower


def _watch(running: RunningCommand, follower: LogFollower,
           seen: tuple[MetricHistory, deque[str]], config: AttemptConfig,
           on_poll: Callable[[MetricHistory], bool | None] | None) -> bool:
    """Poll until the process exits (False) or is killed for a hang (True)."""
    history, recent = seen
    started = last_beat = time.monotonic()
    sizes = _output_sizes(running)
    while not running.exited(timeout_s=config.poll_interval_s):
        now = time.monotonic()
        lines = follower.poll()
        recent.extend(lines)
        history.add_lines(lines, time.time())
        # Any new log line or output counts as a heartbeat, and so does a growing checkpoint
        # (the observer returns True): a long save is not a hang.
        active = bool(on_poll(history)) if on_poll is not None else False
        if lines or active or sizes != (sizes := _output_sizes(running)):
            last_beat = now
        in_grace = history.last_step is None and now - started < config.startup_grace_s
        if not in_grace and now - last_beat > config.hang_timeout_s:
            log.warning("no heartbeat for %.0fs: treating the run as hung", now - last_beat)
            _dump_stacks(running.pid, config.state_dir)
            running.stop(grace_s=5.0)
            return True
    lines = follower.poll()
    recent.extend(lines)
    history.add_lines(lines, time.time())
    return False


def _output_sizes(running: RunningCommand) -> tuple[int, int]:
    sizes = []
    for path in (running.stdout_path, running.stderr_path):
        try:
            sizes.append(path.stat().st_size)
        except OSError:
            sizes.append(-1)
    return sizes[0], sizes[1]


def _dump_stacks(pid: int, state_dir: Path) -> None:
    """A Python stack dump of the hung process, when py-spy is installed (best effort)."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        return
    try:
        dump = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=20, check=False)
        (state_dir / f"hang-{int(time.time())}.txt").write_text(dump.stdout + dump.stderr)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("stack dump failed: %s", exc)


def _tail(result: CommandResult) -> str:
    parts = []
    for path in (result.stdout_path, result.stderr_path):
        if path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            parts.append("\n".join(lines[-TAIL_LINES:]))
    return "\n".join(parts)
