"""A person's verdict override: `override DIR --round N --verdict commit|rollback`.

Queued like notes (a file in `.spml/<kind>/overrides/inbox/`, or the Prefect Variable
`spml-override-<experiment>`), applied when the next round begins, never blocking the loop:

* ``rollback`` of a kept round: `git revert` of its commit (history is kept; later commits that
  build on it stay);
* ``commit`` of a rolled-back round: its archived attempt (`refs/spml/attempts/...`) is
  cherry-picked onto HEAD.

Each applied override appends a ledger row whose Verdict is `override: commit|rollback` (rows
are append-only). The git commit carries the trailer `Spml-Override: <id>`, so a supervisor
killed between the git operation and the row finishes the row and never applies it twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from spml.errors import SpmlError
from spml.protocols.experiences import ExperienceRow
from spml.toolkit.files import write_atomic
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.faults import crash_point
from spml.toolkit.loop.handedits import load_ledger
from spml.toolkit.loop.ledger import write_ledger
from spml.toolkit.loop.record import ROUND_TRAILER, generation_lines, generation_trailers
from spml.toolkit.loop.session import LoopSession

log = logging.getLogger(__name__)
OVERRIDE_TRAILER = "Spml-Override"
OVERRIDES_ROUND_TRAILER = "Spml-Reverts-Round"
HELD_FILENAME = "held-overrides.txt"
OverrideVerdict = Literal["commit", "rollback"]


@dataclass(frozen=True)
class Override:
    """One queued override."""

    id: str
    round: int
    verdict: OverrideVerdict


def _inbox(experiment: Experiment) -> Path:
    return experiment.state_dir / "overrides" / "inbox"


def queue_override(experiment: Experiment, round_no: int, verdict: str) -> Path:
    """Queue an override for the next round's start.

    Raises:
        SpmlError: ``verdict`` is not commit/rollback, or ``round_no`` is not positive.
    """
    if verdict not in ("commit", "rollback"):
        raise SpmlError(f"--verdict must be commit or rollback, got {verdict!r}.")
    if round_no < 1:
        raise SpmlError(f"--round must be a round >= 1 (round 0 is the baseline), got "
                        f"{round_no}.")
    override_id = f"{time.time_ns():020d}-{os.getpid()}"
    path = _inbox(experiment) / f"{override_id}.json"
    write_atomic(path, json.dumps({"id": override_id, "round": round_no, "verdict": verdict}))
    return path


def pending_overrides(experiment: Experiment) -> list[Override]:
    """Overrides queued and not applied yet, oldest first."""
    inbox = _inbox(experiment)
    out = []
    for path in sorted(inbox.glob("*.json")) if inbox.is_dir() else []:
        try:
            out.append(Override(**json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, TypeError):
            log.warning("ignoring an unreadable override file %s", path.name)
    return out


def hold_overrides_queued_since(experiment: Experiment, known: tuple[str, ...],
                                round_dir: Path) -> list[str]:
    """Move overrides queued while the researcher ran to `overrides/held/`; say which.

    The researcher has the user's rights and could queue an override of its own rejected
    round. An override is a person's act between rounds: one that appears during the
    researcher step is held (never applied, never deleted) and named in the round's Note.
    """
    held_dir = experiment.state_dir / "overrides" / "held"
    notes = []
    for override in pending_overrides(experiment):
        if override.id in known:
            continue
        held_dir.mkdir(parents=True, exist_ok=True)
        os.replace(_inbox(experiment) / f"{override.id}.json",
                   held_dir / f"{override.id}.json")
        notes.append(f"override {override.id} (round {override.round} -> {override.verdict}) "
                     "queued while the researcher ran: held in .spml, not applied; queue it "
                     "again if it was yours")
    if notes:
        write_atomic(round_dir / HELD_FILENAME, "\n".join(notes))
    return notes


def held_notes(round_dir: Path) -> list[str]:
    """What `hold_overrides_queued_since` held during this round."""
    path = round_dir / HELD_FILENAME
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def apply_overrides(session: LoopSession) -> list[str]:
    """Apply every queued override to the branch and the ledger; say what was done."""
    done = []
    for override in pending_overrides(session.experiment):
        row = _apply(session, override)
        ledger = load_ledger(session.experiment)
        if not any(r.is_override and override.id in r.insight for r in ledger.rows):
            ledger = ledger.with_row(row).model_copy(
                update={"best_commit": session.workspace.head()[:12]})
            write_ledger(session.experiment, ledger)
        (_inbox(session.experiment) / f"{override.id}.json").unlink(missing_ok=True)
        log.warning("override applied: %s", row.insight)
        done.append(row.insight)
    return done


def _apply(session: LoopSession, override: Override) -> ExperienceRow:
    ledger = load_ledger(session.experiment)
    kept = ledger.kept_rounds()
    base = dict(round=override.round, verdict=f"override: {override.verdict}",
                strategy="person on the loop")
    if not ledger.has_round(override.round):
        return ExperienceRow(**base, insight=f"override {override.id} refused: round "
                             f"{override.round} is not in the ledger")
    wanted = override.verdict == "commit"
    if (override.round in kept) == wanted:
        state = "kept" if wanted else "not kept"
        return ExperienceRow(**base, insight=f"override {override.id}: nothing to do, round "
                             f"{override.round} is already {state}")
    done = _find_override_commit(session, override.id)
    if done is None:
        try:
            done = _revert(session, override) if not wanted else _pick(session, override)
        except SpmlError as exc:
            return ExperienceRow(**base, insight=f"override {override.id} refused: {exc}")
    verb = "reverted" if not wanted else "re-applied"
    return ExperienceRow(**base, insight=f"override {override.id}: {verb} round "
                         f"{override.round} as {done[:7]}")


def _trailers(session: LoopSession, override: Override) -> dict[str, str]:
    trailers = {OVERRIDE_TRAILER: override.id, **generation_trailers(session.experiment)}
    if override.verdict == "rollback":  # what a later `commit` override of the round undoes
        trailers[OVERRIDES_ROUND_TRAILER] = str(override.round)
    return trailers


def _revert(session: LoopSession, override: Override) -> str:
    commit = _round_commit(session, override.round)
    if commit is None:
        raise SpmlError(f"no commit of round {override.round} on the branch")
    return _replay(session, override, commit, revert=True)


def _pick(session: LoopSession, override: Override) -> str:
    # A kept round an earlier override reverted comes back by reverting that revert.
    reverted = session.workspace.find_commit(f"{OVERRIDES_ROUND_TRAILER}: {override.round}",
                                             *generation_lines(session.experiment))
    if reverted is not None:
        return _replay(session, override, reverted, revert=True)
    attempt = _attempt(session, override.round)
    if attempt is None:
        raise SpmlError(f"round {override.round} left no archived attempt to re-apply")
    return _replay(session, override, attempt, revert=False)


def _replay(session: LoopSession, override: Override, commit: str, *, revert: bool) -> str:
    workspace = session.workspace
    workspace.rollback(workspace.head())
    workspace.replay(commit, revert=revert)
    crash_point("override-before-commit", override.round)
    what = "revert" if override.verdict == "rollback" else "re-apply"
    return workspace.commit_all(
        f"{session.kind.commit_prefix}: override — {what} round {override.round}",
        trailers=_trailers(session, override))


def _attempt(session: LoopSession, round_no: int) -> str | None:
    """The round's archived attempt; an experiment begun before attempts were kept per
    experiment may still have it where they all used to be."""
    experiment = session.experiment
    found = session.workspace.attempt(experiment.attempt_ref(round_no))
    legacy = experiment.legacy_attempt_ref(round_no)
    if found is None and legacy is not None:
        found = session.workspace.attempt(legacy)
    return found


def _round_commit(session: LoopSession, round_no: int) -> str | None:
    return session.workspace.find_commit(f"{ROUND_TRAILER}: {round_no}",
                                         *generation_lines(session.experiment))


def _find_override_commit(session: LoopSession, override_id: str) -> str | None:
    return session.workspace.find_commit(f"{OVERRIDE_TRAILER}: {override_id}")
