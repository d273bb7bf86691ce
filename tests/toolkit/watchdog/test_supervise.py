"""Which checkpoints the watchdog trusts for a resume."""

from __future__ import annotations

import os
import time
from pathlib import Path

from spml.protocols.watchdog import WatchdogSettings
from spml.toolkit.metrics.log import MetricHistory
from spml.toolkit.watchdog.checkpoints import CheckpointTracker
from spml.toolkit.watchdog.context import ContextFile
from spml.toolkit.watchdog.observer import Observer
from spml.toolkit.watchdog.state import WatchdogState

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


def test_a_glob_that_matches_nothing_is_warned_in_the_progress_line_and_status(
        tmp_path: Path, caplog) -> None:
    settings = SETTINGS.model_copy(update={"checkpoint_glob": "checkpoints/*.json",
                                           "checkpoint_interval": 5})
    state, context = WatchdogState(tmp_path), ContextFile(tmp_path / "ctx.md")
    context.set_status("running", attempt="1")
    tracker = CheckpointTracker(settings.checkpoint_glob, tmp_path)
    watch = Observer(settings, state, context, tracker, None)
    history = MetricHistory()
    history.add_lines([f"step={s} loss=1.0" for s in range(1, 4)], time.time())
    with caplog.at_level("INFO", logger="spml.toolkit.watchdog.supervise"):
        watch(history)
        history.add_lines([f"step={s} loss=1.0" for s in range(4, 7)], time.time())
        watch(history)
    warning = ("checkpoint_glob 'checkpoints/*.json' matches nothing after 5 steps (now at step "
               "6); no file there looks like a checkpoint — a restart would begin from scratch")
    assert context.read_status()["warning"] == f"checkpoints: {warning}"
    assert context.read_status()["attempt"] == "1"
    assert any(r.message.endswith(f"step 6 — loss=1 — WARNING: checkpoints: {warning}")
               for r in caplog.records)
    assert f"checkpoints: {warning}" in context.path.read_text()  # the alerts section
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "a.json").write_text("{}")
    watch(history)
    assert context.read_status()["warning"] == "none"


def test_progress_lines_continue_after_the_history_drops_its_oldest_points(
        tmp_path: Path, caplog) -> None:
    watch, _ = observer(tmp_path)
    history = MetricHistory(maxlen=3)
    with caplog.at_level("INFO", logger="spml.toolkit.watchdog.supervise"):
        for start in range(1, 20, 2):
            history.add_lines([f"step={start} loss=1.0", f"step={start + 1} loss=1.0"], 0.0)
            watch(history)
    steps = [r.message.split(" step ")[1].split(" ")[0] for r in caplog.records
             if " step " in r.message]
    assert steps == [str(s) for s in range(2, 21, 2)]


def test_a_saved_resume_choice_is_reused_only_while_the_checkpoints_are_unchanged(
        tmp_path: Path) -> None:
    from spml.toolkit.watchdog.checkpoints import Checkpoint
    from spml.toolkit.watchdog.resume import ResumeChoice

    state = WatchdogState(tmp_path)
    choice = ResumeChoice(Checkpoint(tmp_path / "step_10.json", 10, 11, 5.5), "JSON parses",
                          ("step_20.json: JSON does not parse",), 2)
    listing = {str(tmp_path / "step_10.json"): [11, 5.5], str(tmp_path / "step_20.json"): [3, 6.0]}
    state.save_choice(choice, listing)
    assert state.load_choice(listing) == choice
    assert state.load_choice({**listing, str(tmp_path / "step_30.json"): [1, 7.0]}) is None
    state.start_episode()
    assert state.load_choice(listing) is None


def test_the_settings_budgets_reach_the_policy() -> None:
    from spml.toolkit.watchdog.supervise import policy_of

    policy = policy_of(SETTINGS.model_copy(update={"max_restarts": 5, "max_no_progress": 3}))
    assert (policy.max_restarts, policy.max_restarts_per_hour, policy.max_no_progress) == (
        5, None, 3)
    assert policy.max_same_signature == 2


def test_a_run_that_shows_no_sign_of_training_is_named_after_the_startup_grace(
        tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={"startup_grace": 0.05})
    state, context = WatchdogState(tmp_path), ContextFile(tmp_path / "ctx.md")
    context.set_status("running", attempt="1")
    watch = Observer(settings, state, context, CheckpointTracker(settings.checkpoint_glob,
                                                                 tmp_path), None)
    watch(MetricHistory())
    assert "warning" not in context.read_status()  # within the grace: nothing to say yet
    time.sleep(0.1)
    watch(MetricHistory())
    warning = context.read_status()["warning"]
    assert warning.startswith("training: no training seen after 0s: the log file train.log "
                              "has not appeared, no step was logged")
    assert state.alerts() == [warning]  # once, not at every poll
    watch(MetricHistory())
    assert state.alerts() == [warning]
    (tmp_path / "train.log").write_text("loading data\n")  # the run shows up
    watch(MetricHistory())
    assert context.read_status()["warning"] == "none"
