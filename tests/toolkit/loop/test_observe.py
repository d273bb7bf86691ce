"""What the supervisor reads from the training output, and when the first step line appears."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from spml.toolkit.loop.observe import (
    FirstStepClock,
    TrainingScan,
    has_key,
    is_step_line,
    read_lines,
    scan_training_output,
)
from spml.toolkit.metrics.log import parse_log_line

STEP_LINES = [
    "step=1 loss=0.5",
    '{"step": 2, "train": {"loss": 0.4}, "lr": 0.001}',
    "Iter [3/10] loss: nan",
    "Step 4 | loss: 0.2 | eta: 0:10:35",
    "epoch 1:  50%|#####     | 5/10 [00:01<00:01,  4.2it/s, loss=0.3, step=5]",
    "global_step=6 loss=0.1 grad_norm=NaN",
]
NOT_STEP_LINES = [
    "eval acc=0.9 lr=3e-4",
    "epoch 1:  50%|#####     | 5/10 [00:01<00:01,  4.2it/s, loss=0.3]",
    "steps=10 loss=1",
    "loading step function",
    "",
]


@pytest.mark.parametrize("line", STEP_LINES)
def test_step_lines(line: str) -> None:
    assert is_step_line(parse_log_line(line))
    assert scan_training_output([line]).step_lines == 1


@pytest.mark.parametrize("line", NOT_STEP_LINES)
def test_lines_that_name_no_step_are_not_step_lines(line: str) -> None:
    # Not step lines, but a NaN on any line is still seen (stability reads every line).
    scan = scan_training_output([line, "eval loss=nan"])
    assert (scan.step_lines, scan.step_keys, scan.nonfinite_keys, scan.step_values) == (
        0, set(), {"loss"}, {})


def test_scan_of_a_realistic_log() -> None:
    scan = scan_training_output(STEP_LINES + NOT_STEP_LINES)
    assert scan.step_lines == len(STEP_LINES)
    assert scan.step_keys == {"step", "iter", "global_step", "loss", "train/loss", "lr",
                              "grad_norm"}
    assert scan.nonfinite_keys == {"loss", "grad_norm"}
    assert scan.step_values["train/loss"] == [0.4]
    assert "acc" not in scan.step_values


def test_non_finite_word_without_a_pair() -> None:
    assert scan_training_output(["Iter [3/10] loss nan"]).nonfinite_keys == {"(unparsed)"}
    assert scan_training_output(["step=1 loss=NaN"]).nonfinite_keys == {"loss"}
    assert scan_training_output(["step=1 model=nanogpt info=inference"]).nonfinite_keys \
        == set()


@pytest.mark.parametrize("value", ["inf", "-inf"])
def test_parsed_inf_counts_once(value: str) -> None:
    assert scan_training_output([f"step=3 loss={value}"]).nonfinite_keys == {"loss"}


def test_pattern_hits_are_counted_per_line() -> None:
    lines = ["UserWarning: a UserWarning: b", "step=1 loss=0.5 UserWarning",
             "all good", "userwarning"]
    scan = scan_training_output(lines, ["UserWarning", r"^all", "never"])
    assert scan.pattern_hits == {"UserWarning": 2, "^all": 1, "never": 0}
    assert scan_training_output(lines).pattern_hits == {}


def test_reported_medians_ignore_non_finite() -> None:
    scan = scan_training_output(["step=1 loss=0.5 mfu=0.3", "step=2 loss=nan mfu=0.5",
                                 "step=3 loss=0.7 mfu=0.1", "step=4 loss=0.9 gnorm=inf"])
    assert scan.reported() == {"step": 2.5, "loss": 0.7, "mfu": 0.3}
    assert TrainingScan(step_values={"x": [math.nan, math.inf]}).reported() == {}


@pytest.mark.parametrize(("keys", "wanted", "found"), [
    (["loss"], "loss", True), (["train/loss"], "loss", True), (["a/b/loss"], "loss", True),
    (["val_loss"], "loss", False), (["loss/train"], "loss", False), (["trainloss"], "loss", False),
    ([], "loss", False), (["train/loss"], "train/loss", True),
])
def test_has_key(keys: list[str], wanted: str, found: bool) -> None:
    assert has_key(keys, wanted) is found


def test_read_lines(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a\nb\n")
    (tmp_path / "err").write_bytes(b"c\xff\nddddd")
    lines = read_lines(tmp_path / "out", tmp_path / "missing", tmp_path / "err")
    assert list(lines) == ["a", "b", "c\ufffd", "ddddd"]
    # A huge line is cut into pieces; nothing after it is lost (a flood hides no NaN).
    (tmp_path / "flood").write_text("x" * 30 + "\nstep=9 loss=nan\n")
    assert list(read_lines(tmp_path / "flood", max_line=16)) == [
        "x" * 16, "x" * 14, "step=9 loss=nan"]


SLOW_STEP = ("import time; print('loading data', flush=True); time.sleep(0.3); "
             "print('step=1 loss=0.5', flush=True)")
NO_STEP = ("import time; print('loading data', flush=True); time.sleep(0.2); "
           "print('eval acc=0.9', flush=True)")


def run_clocked(tmp_path: Path, script: str) -> float | None:
    log = tmp_path / "train.stdout.log"
    with log.open("w") as out, FirstStepClock(log, poll_s=0.02) as clock:
        subprocess.run([sys.executable, "-c", script], stdout=out, check=True, timeout=30)
    return clock.first_step_s


def test_first_step_clock_times_a_late_step_line(tmp_path: Path) -> None:
    first = run_clocked(tmp_path, SLOW_STEP)
    assert first is not None
    assert 0.25 <= first < 10


def test_first_step_clock_without_step_lines(tmp_path: Path) -> None:
    assert run_clocked(tmp_path, NO_STEP) is None


def test_first_step_clock_counts_a_run_shorter_than_one_poll(tmp_path: Path) -> None:
    log = tmp_path / "train.stdout.log"
    with FirstStepClock(log, poll_s=60) as clock:
        log.write_text("warming up\nstep=1 loss=0.5\n")
    assert clock.first_step_s is not None
    assert clock.first_step_s < 5
