"""Which checkpoint a restart resumes from: verification, markers, the user's check (a real
subprocess), and the newest-first fallback past damaged checkpoints."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from spml.toolkit.watchdog.checkpoints import Checkpoint, CheckpointTracker
from spml.toolkit.watchdog.resume import ResumeChoice, UserCheck, choose_resume, judge


def _never(_: Checkpoint) -> bool:
    return False


def _always(_: Checkpoint) -> bool:
    return True


def saved(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, "w": torch.ones(8, 8)}, path)
    return path


def cut(path: Path) -> Path:
    os.truncate(path, path.stat().st_size // 2)
    return path


def checkpoint(path: Path, step: int | None = None) -> Checkpoint:
    stat = path.stat()
    return Checkpoint(path, step, stat.st_size, stat.st_mtime)


def user_check(tmp_path: Path, command: str, limit: float = 30.0) -> UserCheck:
    return UserCheck(command, tmp_path, tmp_path / "checks", limit)


def test_the_newest_checkpoint_that_verifies_wins_and_newer_ones_are_reported(
        tmp_path: Path) -> None:
    for step in (10, 20, 30):
        saved(tmp_path / "ckpt" / f"step_{step}.pt", step)
    cut(tmp_path / "ckpt" / "step_30.pt")
    (tmp_path / "ckpt" / "step_40.pt").write_bytes(b"")
    choice = choose_resume(CheckpointTracker("ckpt/step_*.pt", tmp_path), _never)
    assert choice.checkpoint is not None
    assert choice.checkpoint.step == 20
    assert choice.candidates == 4
    assert choice.skipped == (
        "ckpt/step_40.pt: empty file",
        "ckpt/step_30.pt: zip central directory unreadable (File is not a zip file): cut short "
        "or corrupt")
    assert choice.describe() == (f"{tmp_path / 'ckpt' / 'step_20.pt'} (step 20; torch archive: "
                                 "central directory intact, data.pkl and its 1 data records "
                                 "listed)")


def test_nothing_to_resume_from(tmp_path: Path) -> None:
    choice = choose_resume(CheckpointTracker("ckpt/*.pt", tmp_path), _never)
    assert choice == ResumeChoice(None, "", (), 0)
    assert choice.describe() == "none"


def test_a_marker_does_not_save_a_damaged_checkpoint(tmp_path: Path) -> None:
    path = cut(saved(tmp_path / "step_10.pt", 10))
    (tmp_path / "step_10.pt.complete").write_text("")
    assert judge(checkpoint(path, 10), _always).status == "bad"


def test_an_unverifiable_checkpoint_needs_a_marker_or_a_sighting(tmp_path: Path) -> None:
    path = tmp_path / "step_10.pt"
    torch.save({"step": 10}, path, _use_new_zipfile_serialization=False)
    refused = judge(checkpoint(path, 10), _never)
    assert refused.status == "bad"
    assert refused.reason == (
        "legacy (non-zip) torch pickle: only loading all of it could prove it whole; no marker "
        "and not seen complete while training ran (add a .complete marker or a "
        "checkpoint_check)")
    accepted = judge(checkpoint(path, 10), _always)
    assert accepted.ok
    assert accepted.reason.startswith("marked or seen complete while training ran (legacy")


def test_markers_and_sightings_vouch_through_the_tracker_and_the_state(tmp_path: Path) -> None:
    from spml.toolkit.watchdog.state import WatchdogState

    for step in (10, 20):
        (tmp_path / f"w_{step}.h5").write_bytes(b"\x89HDF" * step)
    tracker, state = CheckpointTracker("w_*.h5", tmp_path), WatchdogState(tmp_path)

    def vouched(c: Checkpoint) -> bool:
        return tracker.is_marked(c.path) or state.remembers(c)

    assert choose_resume(tracker, vouched).checkpoint is None
    state.mark_complete(checkpoint(tmp_path / "w_10.h5", 10))
    assert choose_resume(tracker, vouched).checkpoint.step == 10
    (tmp_path / "w_20.h5.done").write_text("")
    assert choose_resume(tracker, vouched).checkpoint.step == 20


def test_a_user_check_replaces_the_built_in_rules(tmp_path: Path) -> None:
    good = saved(tmp_path / "ckpt" / "step_20.pt", 20)
    damaged = cut(saved(tmp_path / "ckpt" / "step_30.pt", 30))
    (tmp_path / "check.py").write_text(
        "import sys\nprint('checking', sys.argv[1])\n"
        "sys.exit(0 if sys.argv[1].endswith('step_30.pt') else 3)\n")
    check = user_check(tmp_path, f"{sys.executable} check.py {{checkpoint}}")
    assert judge(checkpoint(damaged, 30), _never, check).ok  # the user's rule, not ours
    refused = judge(checkpoint(good, 20), _never, check)
    assert (refused.status, refused.reason) == ("bad", "checkpoint_check failed: exit 3: "
                                                f"checking {good}")


def test_a_user_check_gets_the_path_quoted_and_a_time_limit(tmp_path: Path) -> None:
    odd = saved(tmp_path / "my ckpt" / "step 1.pt", 1)
    check = user_check(tmp_path, "test -f {checkpoint}")
    assert judge(checkpoint(odd, 1), _never, check).ok
    slow = user_check(tmp_path, "sleep 10", limit=0.3)
    verdict = judge(checkpoint(odd, 1), _never, slow)
    assert verdict.status == "bad"
    assert "killed after exceeding 0.3s time limit" in verdict.reason


def test_a_user_check_that_cannot_start_is_a_failed_check(tmp_path: Path) -> None:
    path = saved(tmp_path / "step_1.pt", 1)
    check = UserCheck("true", tmp_path / "missing-dir", tmp_path / "checks", 5.0)
    verdict = judge(checkpoint(path, 1), _never, check)
    assert verdict.status == "bad"
    assert verdict.reason.startswith("checkpoint_check could not start")
