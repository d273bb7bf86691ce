"""Which checkpoints the watchdog trusts for a resume."""

from __future__ import annotations

import os
import time
from pathlib import Path

from spml.protocols.watchdog import WatchdogSettings
from spml.toolkit.metrics.log import MetricHistory
from spml.toolkit.watchdog.checkpoints import CheckpointTracker
from spml.toolkit.watchdog.context import ContextFile
from spml.toolkit.watchdog.supervise import Observer, WatchdogState

SETTINGS = WatchdogSettings.model_validate(
    {"train_command": "true", "checkpoint_glob": "ckpt/step_*.json", "log_file": "train.log",
     "checkpoint_stable": 0.001})


def observer(exp: Path) -> tuple[Observer, WatchdogState]:
    state = WatchdogState(exp)
    tracker = CheckpointTracker(SETTINGS.checkpoint_glob, exp, stable_s=0.001)
    return Observer(SETTINGS, state, ContextFile(exp / "ctx.md"), tracker, None), state


def test_a_checkpoint_left_half_written_by_a_dead_attempt_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "step_000010.json").write_text('{"st')  # writer died mid-save
    watch, state = observer(tmp_path)
    for _ in range(3):
        watch(MetricHistory())
    assert state.resume_point() is None


def test_a_checkpoint_written_during_the_attempt_is_trusted_once_stable(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    watch, state = observer(tmp_path)
    (tmp_path / "ckpt" / "step_000005.json").write_text('{"step": 5}')
    assert watch(MetricHistory()) is True  # a new file is activity
    time.sleep(0.01)  # longer than checkpoint_stable
    watch(MetricHistory())
    resume = state.resume_point()
    assert resume is not None
    assert resume.step == 5


def test_a_remembered_checkpoint_rewritten_in_place_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    watch, state = observer(tmp_path)
    path = tmp_path / "ckpt" / "step_000005.json"
    path.write_text('{"step": 5}')
    watch(MetricHistory())
    time.sleep(0.01)
    watch(MetricHistory())
    assert state.resume_point() is not None
    path.write_text('{"st')  # overwritten in place and cut short
    os.utime(path, (1, 1))
    assert state.resume_point() is None
