"""The watchdog's durable state under ``<exp>/.spml/watchdog/``: everything is on disk, so a
restarted watchdog (or the next Prefect retry) continues the same history.

* ``attempts.jsonl``: one `AttemptRecord` per ended attempt;
* ``episode-start.txt``: where the current watchdog run's attempts begin;
* ``complete-checkpoints.json``: checkpoints seen complete while their writer lived;
* ``next-resume.json``: the checkpoint chosen for the next attempt, with the listing it was
  chosen from (reused only while that listing is unchanged);
* ``next-delay.txt``, ``alerts.log``, ``attempt-NNN/`` (each attempt's output);
* ``supervisor.lock``: held by the live watchdog (`hold`); free while none runs, so a context
  saying `running` beside a free lock is a killed watchdog (`is_live`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from spml.errors import SupervisorBusy
from spml.toolkit.files import write_atomic
from spml.toolkit.process.lock import SupervisorLock, holder_of, is_held
from spml.toolkit.watchdog.checkpoints import Checkpoint
from spml.toolkit.watchdog.classify import Diagnosis
from spml.toolkit.watchdog.policy import AttemptRecord
from spml.toolkit.watchdog.resume import ResumeChoice

__all__ = ["Listing", "WatchdogState", "liveness"]

log = logging.getLogger(__name__)

Listing = dict[str, list[float]]  # checkpoint path -> [size, mtime]
_LOCK = "supervisor.lock"


class WatchdogState:
    """The watchdog's durable state under `<exp>/.spml/watchdog/`."""

    def __init__(self, exp_dir: Path) -> None:
        self.dir = exp_dir / ".spml" / "watchdog"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._attempts = self.dir / "attempts.jsonl"
        self._complete = self.dir / "complete-checkpoints.json"
        self._choice = self.dir / "next-resume.json"

    def hold(self) -> SupervisorLock:
        """The lock one watchdog holds while it supervises (a second one would launch the same
        training twice); use as a context manager."""
        return SupervisorLock(
            self.dir / _LOCK, SupervisorBusy,
            "another watchdog is already supervising this run ({holder}); "
            "watch it with `spml watchdog status`, or end it first")

    def is_live(self) -> bool:
        """Whether a watchdog supervises this directory now."""
        return is_held(self.dir / _LOCK)

    def history(self) -> list[AttemptRecord]:
        """Every recorded attempt, oldest first."""
        if not self._attempts.is_file():
            return []
        rows = [json.loads(line) for line in self._attempts.read_text().splitlines() if line]
        return [AttemptRecord(**{**r, "diagnosis": Diagnosis(**{
            **r["diagnosis"], "evidence": tuple(r["diagnosis"]["evidence"])})})
                for r in rows if r.get("diagnosis")]

    def start_episode(self) -> None:
        """A new watchdog run begins: earlier failures no longer count against its budgets,
        and the resume checkpoint is chosen afresh (its settings may have changed)."""
        (self.dir / "episode-start.txt").write_text(str(len(self.history())))
        self._choice.unlink(missing_ok=True)

    def episode(self) -> list[AttemptRecord]:
        """The attempts of the current watchdog run (what the crash-loop guard judges)."""
        path = self.dir / "episode-start.txt"
        start = int(path.read_text()) if path.is_file() else 0
        return self.history()[start:]

    def append(self, record: AttemptRecord) -> None:
        """Record one ended attempt."""
        with self._attempts.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(record)) + "\n")

    def attempts_started(self) -> int:
        """Attempts started so far (finished ones included)."""
        return len(list(self.dir.glob("attempt-*")))

    def mark_complete(self, checkpoint: Checkpoint) -> None:
        """Remember a checkpoint seen complete while its writer was alive (size and mtime too,
        so one rewritten in place afterwards is not trusted any more)."""
        known = self._known()
        entry = [checkpoint.step, checkpoint.size, checkpoint.mtime]
        if known.get(str(checkpoint.path)) != entry:
            known[str(checkpoint.path)] = entry
            write_atomic(self._complete, json.dumps(known))

    def remembers(self, checkpoint: Checkpoint) -> bool:
        """Whether ``checkpoint`` was seen complete while its writer lived, and is unchanged
        since: the same size and mtime (for a directory those of its files, which a rewrite
        in place changes; see `spml.toolkit.watchdog.checkpoints`), never the path alone."""
        entry = self._known().get(str(checkpoint.path))
        return entry is not None and (entry[1], entry[2]) == (checkpoint.size, checkpoint.mtime)

    def resume_point(self) -> Checkpoint | None:
        """The newest remembered-complete checkpoint that still exists unchanged."""
        found = []
        for name, (step, size, mtime) in self._known().items():
            path = Path(name)
            try:
                stat = path.stat()
            except OSError:
                continue
            if (stat.st_size, stat.st_mtime) == (size, mtime) or path.is_dir():
                found.append(Checkpoint(path, step, stat.st_size, stat.st_mtime))
        return max(found, key=lambda c: (c.step is not None, c.step or 0, c.mtime), default=None)

    def save_choice(self, choice: ResumeChoice, listing: Listing) -> None:
        """Keep the checkpoint chosen after a failure for the next attempt."""
        found = choice.checkpoint
        write_atomic(self._choice, json.dumps({
            "listing": listing, "how": choice.how, "skipped": list(choice.skipped),
            "candidates": choice.candidates,
            "checkpoint": None if found is None else [str(found.path), found.step, found.size,
                                                      found.mtime]}))

    def load_choice(self, listing: Listing) -> ResumeChoice | None:
        """The saved choice, if the checkpoints are still exactly as when it was made."""
        try:
            saved = json.loads(self._choice.read_text()) if self._choice.is_file() else None
        except ValueError:
            saved = None
        if not saved or saved.get("listing") != listing:
            return None
        found = saved["checkpoint"]
        checkpoint = None if found is None else Checkpoint(Path(found[0]), *found[1:])
        return ResumeChoice(checkpoint, saved["how"], tuple(saved["skipped"]),
                            saved["candidates"])

    def add_alert(self, line: str) -> None:
        """Keep an alert for the run's alert artifact."""
        with (self.dir / "alerts.log").open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def alerts(self) -> list[str]:
        """Every alert raised so far."""
        path = self.dir / "alerts.log"
        return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []

    def pending_delay(self) -> float:
        """The backoff decided after the last failed attempt (0 when none)."""
        path = self.dir / "next-delay.txt"
        return float(path.read_text()) if path.is_file() else 0.0

    def save_delay(self, delay_s: float) -> None:
        """Record the backoff the next attempt must wait out first."""
        write_atomic(self.dir / "next-delay.txt", f"{delay_s}")

    def _known(self) -> dict[str, list]:
        try:
            known = json.loads(self._complete.read_text()) if self._complete.is_file() else {}
        except ValueError:
            log.warning("ignoring an unreadable %s", self._complete.name)
            return {}
        return {k: v for k, v in known.items() if isinstance(v, list) and len(v) == 3}


def liveness(exp_dir: Path, recorded_state: str | None) -> str:
    """Whether a watchdog supervises ``exp_dir`` now, read from its lock without creating any
    state: `live (pid N)`, or `not running` with what a stale `running` record means."""
    lock = exp_dir / ".spml" / "watchdog" / _LOCK
    if is_held(lock):
        pid = holder_of(lock)
        return f"live (pid {pid})" if pid else "live"
    if recorded_state == "running":
        return (f"not running: the watchdog was killed while training ran (the context still "
                f"says running); resume with `spml watchdog run {exp_dir}`")
    return "not running"
