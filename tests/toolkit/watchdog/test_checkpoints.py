"""Tests of spml.toolkit.watchdog.checkpoints on real files (synthetic `now`, set mtimes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spml.toolkit.watchdog.checkpoints import (
    Checkpoint,
    CheckpointTracker,
    step_from_path,
)


def _write(path: Path, size: int, mtime: float = 1_000.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
    return path


def _steps(checkpoints: list[Checkpoint]) -> list[int | None]:
    return [c.step for c in checkpoints]


def test_first_sighting_is_not_complete_then_stable_is(tmp_path: Path) -> None:
    ckpt = _write(tmp_path / "ckpt_000120.pt", 10)
    tracker = CheckpointTracker("ckpt_*.pt", tmp_path, stable_s=5.0)

    assert tracker.newest_complete(now=100.0) is None
    assert tracker.newest_complete(now=103.0) is None  # unchanged, but not for 5 s yet
    found = tracker.newest_complete(now=105.0)

    assert found == Checkpoint(ckpt, 120, 10, 1_000.0)


def test_first_sighting_is_not_complete_even_with_zero_stable_time(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt_1.pt", 10)
    tracker = CheckpointTracker("ckpt_*.pt", tmp_path, stable_s=0)

    assert tracker.newest_complete(now=0.0) is None
    assert tracker.newest_complete(now=0.0) is not None


def test_a_growing_file_is_never_returned(tmp_path: Path) -> None:
    done = _write(tmp_path / "ckpt_100.pt", 10)
    growing = tmp_path / "ckpt_200.pt"
    tracker = CheckpointTracker("ckpt_*.pt", tmp_path, stable_s=5.0)

    for i, now in enumerate((0.0, 10.0, 20.0, 30.0)):
        _write(growing, 5 + i, mtime=1_000.0 + i)  # still being written between calls
        newest = tracker.newest_complete(now)
        assert newest is None or newest.path == done

    assert tracker.newest_complete(now=34.0).path == done  # growth stopped 4 s ago
    assert tracker.newest_complete(now=35.0).path == growing


def test_a_retouched_file_of_same_size_restarts_the_clock(tmp_path: Path) -> None:
    ckpt = _write(tmp_path / "ckpt_1.pt", 10, mtime=1_000.0)
    tracker = CheckpointTracker("ckpt_*.pt", tmp_path, stable_s=5.0)
    tracker.newest_complete(now=0.0)

    _write(ckpt, 10, mtime=1_004.0)

    assert tracker.newest_complete(now=6.0) is None
    assert tracker.newest_complete(now=11.0) is not None


@pytest.mark.parametrize("suffix", [".complete", ".done"])
def test_a_marker_file_makes_it_complete_at_first_sighting(tmp_path: Path, suffix: str) -> None:
    ckpt = _write(tmp_path / "ckpt_7.pt", 10)
    _write(tmp_path / f"ckpt_7.pt{suffix}", 0)

    found = CheckpointTracker("ckpt_*", tmp_path).newest_complete(now=0.0)

    assert found is not None
    assert found.path == ckpt


def test_custom_marker_suffixes(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt_7.pt", 10)
    _write(tmp_path / "ckpt_7.pt.done", 0)
    _write(tmp_path / "ckpt_8.pt", 10)
    _write(tmp_path / "ckpt_8.pt.ok", 0)
    tracker = CheckpointTracker("ckpt_*", tmp_path, marker_suffixes=[".ok"])

    assert _steps(tracker.complete(now=0.0)) == [8]


def test_directory_checkpoint_with_complete_file(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint-300"
    _write(ckpt / "model.safetensors", 20)
    tracker = CheckpointTracker("checkpoint-*", tmp_path)
    assert tracker.newest_complete(now=0.0) is None

    _write(ckpt / "COMPLETE", 0)
    found = tracker.newest_complete(now=0.0)

    assert found is not None
    assert (found.path, found.step, found.size) == (ckpt, 300, 20)


def test_directory_checkpoint_stability_sees_new_files(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint-300"
    _write(ckpt / "model.bin", 20, mtime=1_000.0)
    tracker = CheckpointTracker("checkpoint-*", tmp_path, stable_s=5.0)
    tracker.newest_complete(now=0.0)

    _write(ckpt / "optimizer.bin", 0, mtime=900.0)  # an old-looking, empty file: still a change
    os.utime(ckpt, (1_000.0, 1_000.0))

    assert tracker.newest_complete(now=10.0) is None
    found = tracker.newest_complete(now=15.0)
    assert found is not None
    assert (found.size, found.mtime) == (20, 1_000.0)


def test_empty_checkpoints_are_never_complete_unless_marked(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt_1.pt", 0)
    (tmp_path / "checkpoint-2").mkdir()
    tracker = CheckpointTracker("*", tmp_path, stable_s=1.0)

    assert tracker.complete(now=0.0) == []
    assert tracker.complete(now=10.0) == []


@pytest.mark.parametrize(
    "name",
    ["ckpt_000120.pt.tmp", ".ckpt_000120.pt", "ckpt_000120.pt.partial", "ckpt_5.pt.tmp.123",
     ".tmp-dir/ckpt_9.pt", "checkpoint-9.tmp/ckpt_9.pt"],
)
def test_temporary_names_are_never_candidates(tmp_path: Path, name: str) -> None:
    _write(tmp_path / name, 10)
    _write(tmp_path / f"{name}.done", 0)
    tracker = CheckpointTracker("**/*ckpt_*", tmp_path, stable_s=0)

    assert tracker.complete(now=0.0) == []
    assert tracker.complete(now=10.0) == []


def test_newest_is_the_newest_written_and_the_step_breaks_exact_ties(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt_900.pt", 10, mtime=1_000.0)
    _write(tmp_path / "ckpt_1000.pt", 10, mtime=500.0)  # a name from an older run
    _write(tmp_path / "last.pt", 10, mtime=2_000.0)  # the newest state, under no step
    _write(tmp_path / "ckpt_950.pt", 10, mtime=1_000.0)  # the same second as ckpt_900
    tracker = CheckpointTracker("*.pt", tmp_path, stable_s=1.0)
    tracker.complete(now=0.0)

    assert _steps(tracker.complete(now=1.0)) == [None, 950, 900, 1000]


def test_without_steps_the_newest_mtime_wins(tmp_path: Path) -> None:
    _write(tmp_path / "a.pt", 10, mtime=1_000.0)
    newest = _write(tmp_path / "b.pt", 10, mtime=3_000.0)
    _write(tmp_path / "c.pt", 10, mtime=2_000.0)
    tracker = CheckpointTracker("*.pt", tmp_path, stable_s=1.0)
    tracker.newest_complete(now=0.0)

    assert tracker.newest_complete(now=1.0).path == newest


def test_an_incomplete_newer_checkpoint_leaves_the_older_one(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt_1.pt", 10)
    _write(tmp_path / "ckpt_1.pt.done", 0)
    tracker = CheckpointTracker("ckpt_*.pt", tmp_path, stable_s=5.0)
    _write(tmp_path / "ckpt_2.pt", 3)

    assert tracker.newest_complete(now=0.0).step == 1
    _write(tmp_path / "ckpt_2.pt", 6, mtime=1_001.0)
    assert tracker.newest_complete(now=10.0).step == 1


def test_vanished_checkpoints_are_forgotten(tmp_path: Path) -> None:
    ckpt = _write(tmp_path / "ckpt_1.pt", 10)
    tracker = CheckpointTracker("ckpt_*.pt", tmp_path, stable_s=1.0)
    tracker.newest_complete(now=0.0)
    ckpt.unlink()
    assert tracker.newest_complete(now=5.0) is None

    _write(ckpt, 10)  # back with the same size and mtime: a new first sighting

    assert tracker.newest_complete(now=10.0) is None
    assert tracker.newest_complete(now=11.0) is not None


def test_nested_glob_relative_to_base_dir(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt" / "step_50.pt", 10)
    _write(tmp_path / "ckpt" / "step_50.pt.complete", 0)
    _write(tmp_path / "other" / "step_99.pt", 10)

    found = CheckpointTracker("ckpt/step_*.pt", tmp_path).newest_complete(now=0.0)

    assert found is not None
    assert found.step == 50


def test_missing_base_dir_gives_none(tmp_path: Path) -> None:
    assert CheckpointTracker("*.pt", tmp_path / "nope").newest_complete(now=0.0) is None


@pytest.mark.parametrize(("pattern", "stable_s"), [("", 5.0), ("/abs/*.pt", 5.0), ("*", -1.0)])
def test_bad_arguments(tmp_path: Path, pattern: str, stable_s: float) -> None:
    with pytest.raises(ValueError, match="pattern|glob|stable_s"):
        CheckpointTracker(pattern, tmp_path, stable_s=stable_s)


@pytest.mark.parametrize(
    ("relative", "step"),
    [
        ("ckpt_000120.pt", 120),
        ("step-120", 120),
        ("checkpoint-120", 120),
        ("epoch=2-step=1200.ckpt", 1200),
        ("global_step120", 120),
        ("iter_0000120", 120),
        ("model_step7_v2.pt", 7),
        ("llama2.pt", None),
        ("last.ckpt", None),
        ("checkpoint-300/model.safetensors", 300),
        ("checkpoint-300/shard_2.bin", 2),
        # Lightning: the step key wins; an epoch is used only without one; never a metric
        ("epoch=0-step=100.ckpt", 100),
        ("sample-mnist-epoch=02-val_loss=0.32.ckpt", 2),
        ("val_loss=0.32.ckpt", None),
        ("model-0.95.pt", None),
        ("last-v1.ckpt", None),
        ("step=12.5.pt", None),
        ("iteration=40-loss=1.25.pt", 40),
    ],
)
def test_step_from_path(tmp_path: Path, relative: str, step: int | None) -> None:
    assert step_from_path(tmp_path / relative, tmp_path) == step


def test_step_from_path_ignores_parents_above_base_dir() -> None:
    assert step_from_path(Path("/runs/run-3/ckpt/model.pt"), Path("/runs/run-3")) is None
    assert step_from_path(Path("run-3/model.pt")) == 3


def test_newest_marked_ignores_unmarked_files_even_if_old(tmp_path: Path) -> None:
    from spml.toolkit.watchdog.checkpoints import CheckpointTracker

    (tmp_path / "step_000010.pt").write_text("x" * 10)
    (tmp_path / "step_000010.pt.complete").write_text("")
    (tmp_path / "step_000020.pt").write_text("half")  # killed mid-write: no marker
    tracker = CheckpointTracker("step_*.pt", tmp_path, stable_s=0.0)
    newest = tracker.newest_marked()
    assert newest is not None
    assert newest.step == 10
