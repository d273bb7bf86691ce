"""Tests of spml.toolkit.metrics.log: line parser, log tail, metric history (real files)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from spml.toolkit.metrics.log import (
    LOSS_KEYS,
    LogFollower,
    MetricHistory,
    MetricPoint,
    find_key,
    find_value,
    grad_norm_of,
    loss_of,
    mfu_of,
    parse_log_line,
    throughput_of,
)

# ---------------------------------------------------------------- parse_log_line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("step=120 loss=0.53 lr=3e-4 grad_norm=1.2",
         {"step": 120.0, "loss": 0.53, "lr": 3e-4, "grad_norm": 1.2}),
        ("step 120 | loss: 0.53", {"step": 120.0, "loss": 0.53}),
        ('{"step": 120, "loss": 0.53}', {"step": 120.0, "loss": 0.53}),
        ("[2024-05-01 12:30:01] INFO step=5 loss=1.0", {"step": 5.0, "loss": 1.0}),
        ("train/loss: 0.5 eval.acc=0.9 lr-head=1e-3",
         {"train/loss": 0.5, "eval.acc": 0.9, "lr-head": 1e-3}),
        ("{'loss': 0.5, 'acc': 1}", {"loss": 0.5, "acc": 1.0}),
        ("Epoch 1:  45%|####  | 450/1000 [00:30<00:37, loss=0.53, v_num=0]",
         {"loss": 0.53, "v_num": 0.0}),
        ("Iter [120/1000] lr: 1.000e-02, eta: 0:10:35, time: 0.330",
         {"iter": 120.0, "lr": 0.01, "time": 0.33}),
        ("eta: 1:02:03.5  iter: 19  total_loss: 2.2  max_mem: 2678M",
         {"iter": 19.0, "total_loss": 2.2, "max_mem": 2678.0}),
        ("Step 7: loss=0.3", {"step": 7.0, "loss": 0.3}),
        ("global_step=9 step 3 loss=1", {"global_step": 9.0, "loss": 1.0}),
        ("INFO {\"step\": 3, \"train\": {\"loss\": 0.5, \"ok\": true}, \"tag\": \"x\"}",
         {"step": 3.0, "train/loss": 0.5}),
        ("{broken json, loss=0.7}", {"loss": 0.7}),
    ],
)
def test_parse_log_line_forms(line: str, expected: dict[str, float]) -> None:
    assert parse_log_line(line) == pytest.approx(expected)


def test_nan_and_inf_are_kept_as_floats() -> None:
    values = parse_log_line("step=3 loss=nan grad_norm=inf other=-Infinity")

    assert values is not None
    assert math.isnan(values["loss"])
    assert values["grad_norm"] == math.inf
    assert values["other"] == -math.inf


def test_json_nan_literal_is_kept() -> None:
    values = parse_log_line('{"step": 4, "loss": NaN}')

    assert values is not None
    assert math.isnan(values["loss"])


@pytest.mark.parametrize(
    "line",
    ["", "   ", "Saving checkpoint to ckpt_000120.pt", "loss=high", "{}", '{"msg": "hi"}',
     "started at 12:30:01", "count=1,234", "Traceback (most recent call last):"],
)
def test_lines_without_metrics_give_none(line: str) -> None:
    assert parse_log_line(line) is None


def test_step_word_needs_an_integer() -> None:
    assert parse_log_line("step 1.5 done") is None
    assert parse_log_line("stepping 12") is None


def test_find_key_and_value_are_case_insensitive_and_ordered() -> None:
    values = {"Loss": 0.4, "train_loss": 0.6}

    assert find_key(values, LOSS_KEYS) == "Loss"
    assert find_value({"train_loss": 0.6, "lm_loss": 0.2}, LOSS_KEYS) == 0.6
    assert find_value({"acc": 1.0}, LOSS_KEYS) is None


def test_metric_accessors() -> None:
    assert loss_of({"loss": math.nan}) is None
    assert grad_norm_of({"gnorm": 2.0}) == 2.0
    assert mfu_of({"mfu": 0.41}) == pytest.approx(0.41)
    assert mfu_of({"MFU": 41.0}) == pytest.approx(0.41)
    assert mfu_of({"mfu_pct": 0.5}) == pytest.approx(0.005)
    assert throughput_of({"samples_per_s": 10.0, "tokens_per_s": 500.0}) == 500.0
    assert throughput_of({"step_time": 0.25}) == pytest.approx(4.0)
    assert throughput_of({"step_time": 0.0}) is None


# ---------------------------------------------------------------- LogFollower


def _append(path: Path, data: str | bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def test_follower_waits_for_the_file_and_keeps_partial_lines(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    follower = LogFollower(log)

    assert follower.poll() == []
    _append(log, "step=1 loss=2\nstep=2 lo")
    assert follower.poll() == ["step=1 loss=2"]
    assert follower.poll() == []
    _append(log, "ss=1.5\n")
    assert follower.poll() == ["step=2 loss=1.5"]


def test_follower_handles_crlf_and_carriage_return_progress(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    follower = LogFollower(log)
    _append(log, "a\r\nbar 10%\rbar 20%\r")

    assert follower.poll() == ["a", "bar 10%"]  # the trailing "\r" may start a "\r\n"
    _append(log, "\nnext\n")
    assert follower.poll() == ["bar 20%", "next"]


def test_follower_decodes_multibyte_characters_split_across_polls(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    follower = LogFollower(log)
    data = "loss=0.5 µ\n".encode()
    _append(log, data[:-3])

    assert follower.poll() == []
    _append(log, data[-3:])
    assert follower.poll() == ["loss=0.5 µ"]


def test_follower_restarts_after_truncation(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    follower = LogFollower(log)
    log.write_text("step=1\nstep=2\nhalf")
    assert follower.poll() == ["step=1", "step=2"]

    log.write_text("new=1\n")

    assert follower.poll() == ["new=1"]


def test_follower_restarts_after_rotation(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    follower = LogFollower(log)
    log.write_text("old=1\n")
    assert follower.poll() == ["old=1"]

    log.rename(tmp_path / "train.log.1")
    assert follower.poll() == []
    log.write_text("fresh=1\nfresh=2\n")

    assert follower.poll() == ["fresh=1", "fresh=2"]


def test_follower_restarts_when_rewritten_longer_in_place(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    follower = LogFollower(log)
    log.write_text("a=1\n")
    assert follower.poll() == ["a=1"]

    with log.open("r+") as fh:  # same inode, larger than before: only the head tells
        fh.truncate(0)
        fh.write("b=1\nb=2\nb=3\n")

    assert follower.poll() == ["b=1", "b=2", "b=3"]


def test_follower_reads_at_most_max_bytes_per_poll(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("aaaa\nbbbb\ncccc\n")
    follower = LogFollower(log, max_bytes=6)

    assert follower.poll() == ["aaaa"]
    assert follower.poll() == ["bbbb"]
    assert follower.poll() == ["cccc"]
    assert follower.poll() == []


def test_follower_splits_an_overlong_line(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("x" * 10 + "\n")
    follower = LogFollower(log, max_bytes=4)

    lines = []
    for _ in range(4):
        lines += follower.poll()

    assert "".join(lines) == "x" * 10
    assert all(len(line) <= 8 for line in lines)


def test_follower_raises_for_an_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="directory"):
        LogFollower(tmp_path).poll()


# ---------------------------------------------------------------- MetricHistory


def test_history_parses_points_and_tracks_step_and_heartbeat() -> None:
    history = MetricHistory()

    new = history.add_lines(["step=10 loss=0.5", "loading data...", "loss: 0.4"], now=100.0)

    assert new == [MetricPoint(10, {"loss": 0.5}, 100.0), MetricPoint(None, {"loss": 0.4}, 100.0)]
    assert history.last_step == 10
    assert history.last_beat == 100.0
    assert history.points == new


def test_history_heartbeat_counts_lines_without_metrics() -> None:
    history = MetricHistory()
    history.add_lines(["step=1 loss=1"], now=1.0)

    assert history.add_lines(["compiling..."], now=5.0) == []
    assert history.last_beat == 5.0
    history.add_lines([], now=9.0)
    assert history.last_beat == 5.0
    assert history.last_step == 1


def test_history_step_can_go_back_after_a_resume() -> None:
    history = MetricHistory()
    history.add_lines(["step=500 loss=1"], now=1.0)
    history.add_lines(["step 400 | loss: 1.1"], now=2.0)

    assert history.last_step == 400


def test_history_keeps_a_non_integer_step_as_a_value() -> None:
    point = MetricHistory().add_lines(["step=1.5 loss=2", "step=nan"], now=0.0)

    assert point[0].step is None
    assert point[0].values == {"step": 1.5, "loss": 2.0}
    assert point[1].step is None
    assert math.isnan(point[1].values["step"])


def test_history_is_bounded() -> None:
    history = MetricHistory(maxlen=3)
    history.add_lines([f"step={i} loss=1" for i in range(10)], now=0.0)

    assert [p.step for p in history.points] == [7, 8, 9]
    assert history.last_step == 9


def test_follower_feeds_history_from_a_growing_file(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    follower, history = LogFollower(log), MetricHistory()
    _append(log, "step=1 loss=3.0\nstep=2 loss=2.")

    first = history.add_lines(follower.poll(), now=10.0)
    _append(log, "5\n")
    os.utime(log)
    second = history.add_lines(follower.poll(), now=20.0)

    assert [(p.step, p.values["loss"], p.at) for p in first + second] == [
        (1, 3.0, 10.0), (2, 2.5, 20.0)]
    assert history.last_step == 2
    assert history.last_beat == 20.0
