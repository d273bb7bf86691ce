"""A checkpoint glob that matches nothing while steps advance is warned about (real files)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from spml.toolkit.watchdog.globcheck import GlobWatch, checkpoint_suspects


def touch(path: Path, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_suspects_are_checkpoint_like_files_newest_first(tmp_path: Path) -> None:
    touch(tmp_path / "ckpt" / "step_3.pt", 300)
    touch(tmp_path / "ckpt" / "step_2.pt", 200)
    touch(tmp_path / "out" / "model.safetensors", 250)
    touch(tmp_path / "state" / "step_000010.json", 100)
    touch(tmp_path / "checkpoints" / "latest", 50)
    for ignored in ("train.py", "train.log", "notes.md", "watchdog.yaml", "plan.json",
                    ".spml/watchdog/attempt-001/x.pt", ".git/objects/ab.pt",
                    "__pycache__/m.pyc", "data/images.bin.py", "step_4.log"):
        touch(tmp_path / ignored, 400)

    found = checkpoint_suspects(tmp_path, limit=10)

    assert [name for name, _ in found] == [
        "ckpt/step_3.pt", "out/model.safetensors", "ckpt/step_2.pt", "state/step_000010.json",
        "checkpoints/latest"]
    assert [name for name, _ in checkpoint_suspects(tmp_path, limit=2)] == [
        "ckpt/step_3.pt", "out/model.safetensors"]


def test_suspects_leave_out_excluded_paths(tmp_path: Path) -> None:
    log = touch(tmp_path / "ckpt" / "train.ckpt.out")
    assert checkpoint_suspects(tmp_path, {log}) == []


def test_no_warning_while_the_glob_matches_or_before_a_step(tmp_path: Path) -> None:
    touch(tmp_path / "ckpt" / "step_3.pt")
    watch = GlobWatch("checkpoints/*.pt", tmp_path, interval_steps=None, grace_s=0.0)
    assert watch.check(True, 1, 50) is None
    assert watch.check(False, None, None) is None


def test_files_written_during_the_attempt_trigger_the_warning_at_once(tmp_path: Path) -> None:
    watch = GlobWatch("checkpoints/*.pt", tmp_path, interval_steps=None, grace_s=3600.0,
                      rescan_s=0.0)
    assert watch.check(False, 1, 1) is None  # nothing looks like a checkpoint yet
    time.sleep(0.01)
    touch(tmp_path / "ckpt" / "step_3.pt")
    warning = watch.check(False, 1, 3)
    assert warning == (
        "checkpoint_glob 'checkpoints/*.pt' matches nothing after 2 steps (now at step 3); "
        "files that look like checkpoints: ckpt/step_3.pt — a restart would begin from scratch")
    assert watch.check(False, 1, 4) == warning  # it holds ...
    assert watch.check(True, 1, 5) is None  # ... until the glob matches


def test_scans_are_rate_limited(tmp_path: Path) -> None:
    watch = GlobWatch("checkpoints/*.pt", tmp_path, interval_steps=None, grace_s=3600.0)
    assert watch.check(False, 1, 1) is None  # scanned: nothing yet
    touch(tmp_path / "ckpt" / "step_3.pt")
    assert watch.check(False, 1, 2) is None  # the next scan is 5 s away


def test_old_look_alikes_wait_for_the_startup_grace(tmp_path: Path) -> None:
    touch(tmp_path / "ckpt" / "step_3.pt", mtime=1_000.0)  # from before this attempt
    patient = GlobWatch("checkpoints/*.pt", tmp_path, interval_steps=None, grace_s=3600.0)
    assert patient.check(False, 1, 10) is None
    eager = GlobWatch("checkpoints/*.pt", tmp_path, interval_steps=None, grace_s=0.0)
    assert eager.check(False, 1, 10) is not None


def test_the_checkpoint_interval_passing_is_enough(tmp_path: Path) -> None:
    watch = GlobWatch("ckpt/*.pt", tmp_path, interval_steps=10, grace_s=3600.0)
    assert watch.check(False, 101, 101) is None  # the first step logged: 0 steps advanced
    assert watch.check(False, 101, 110) is None
    assert watch.check(False, 101, 111) == (
        "checkpoint_glob 'ckpt/*.pt' matches nothing after 10 steps (now at step 111); no file "
        "there looks like a checkpoint — a restart would begin from scratch")
