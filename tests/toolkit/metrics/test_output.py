"""Tests of spml.toolkit.metrics.output."""

from __future__ import annotations

import math

import pytest

from spml.errors import MetricNotFound
from spml.toolkit.metrics.output import find_metric, find_pairs, parse_metric, parse_summary


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("val_mse=0.12", 0.12),
        ("val_mse: 0.12", 0.12),
        ("val_mse = 1e-3", 1e-3),
        ("val_mse:0.5", 0.5),
        ("val_mse\t=\t7", 7.0),
        ("epoch 3 | loss=0.9 val_mse=0.25 | lr=1e-4", 0.25),
        ("[INFO] val_mse: -2.5E+2 (best so far)", -250.0),
        ("val_mse=+3", 3.0),
        ("val_mse=.5", 0.5),
        ("val_mse=42", 42.0),
        ("val_mse=12.5s", 12.5),
        ("{'val_mse': 0.3, 'other': 1}\ntrailing line", 0.3),
        ('{"val_mse": 0.4, "x": 1}\ntrailing line', 0.4),
    ],
)
def test_accepted_forms(text: str, expected: float) -> None:
    assert find_metric(text, "val_mse") == pytest.approx(expected)


def test_last_occurrence_wins() -> None:
    text = "val_mse=0.9\nstep 2\nval_mse: 0.5\nval_mse = 0.3 done\nbye\n"

    assert find_metric(text, "val_mse") == pytest.approx(0.3)


def test_last_occurrence_wins_within_a_line() -> None:
    assert find_metric("val_mse=1 val_mse=2", "val_mse") == 2.0


def test_json_on_last_line_wins_over_later_regex_forms() -> None:
    text = 'val_mse=0.1\n{"val_mse": 0.7, "acc": 0.9}\n\n   \n'

    assert find_metric(text, "val_mse") == pytest.approx(0.7)


def test_json_on_last_line_wins_over_text_in_same_line() -> None:
    text = "val_mse: 0.2\n" + '{"note": "val_mse=5", "val_mse": 0.6}'

    assert find_metric(text, "val_mse") == pytest.approx(0.6)


def test_json_last_line_with_log_prefix() -> None:
    assert find_metric('val_mse=1\nINFO final {"val_mse": 0.25}', "val_mse") == 0.25


def test_json_last_line_without_key_falls_back_to_regex() -> None:
    assert find_metric('val_mse=0.2\n{"acc": 0.9}', "val_mse") == pytest.approx(0.2)


def test_json_boolean_and_string_values_are_not_numbers() -> None:
    # The last line has the last word: an earlier number is not the result it refuses.
    assert find_metric('val_mse=0.2\n{"val_mse": true}', "val_mse") is None
    assert find_metric('{"val_mse": "0.5"}', "val_mse") is None
    assert find_metric('{"val_mse": false}', "val_mse") is None
    assert find_metric('{"val_mse": null}', "val_mse") is None


def test_json_only_counts_on_last_line() -> None:
    text = '{"val_mse": 0.9}\nval_mse=0.1\nfinished'

    assert find_metric(text, "val_mse") == pytest.approx(0.1)


def test_json_nan_and_infinity_literals() -> None:
    assert math.isnan(find_metric('{"val_mse": NaN}', "val_mse"))
    assert find_metric('{"val_mse": -Infinity}', "val_mse") == -math.inf


def test_broken_json_last_line_falls_back_to_regex() -> None:
    assert find_metric("val_mse=0.2\n{val_mse: 0.3", "val_mse") == pytest.approx(0.3)


@pytest.mark.parametrize(
    "text",
    [
        "my_val_mse=1",
        "val_mse_std=2",
        "val_mse2=3",
        "train.val_mse=4",
        "x/val_mse=5",
        "pre-val_mse: 6",
        "--val_mse=7",
        "val_mse.ema=8",
        "val_mse==9",
        "val_mse\n0.5",
        "VAL_MSE=1",
        "val_mse: n/a",
        "val_mse: information",
        "",
    ],
)
def test_no_match_for_longer_identifiers_and_non_numbers(text: str) -> None:
    assert find_metric(text, "val_mse") is None


def test_longer_identifiers_do_not_shadow_the_real_key() -> None:
    text = "val_mse=0.25 val_mse_std=0.01 my_val_mse=9"

    assert find_metric(text, "val_mse") == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("value", "check"),
    [
        ("nan", math.isnan),
        ("NaN", math.isnan),
        ("-nan", math.isnan),
        ("inf", lambda v: v == math.inf),
        ("INF", lambda v: v == math.inf),
        ("+inf", lambda v: v == math.inf),
        ("-inf", lambda v: v == -math.inf),
        ("Infinity", lambda v: v == math.inf),
        ("-Infinity", lambda v: v == -math.inf),
    ],
)
def test_nan_and_inf(value: str, check) -> None:
    result = find_metric(f"loss: {value}\n", "loss")

    assert result is not None
    assert check(result)


def test_keys_with_slash_dot_and_dash() -> None:
    text = "eval/acc: 0.91 eval/acc_top5=0.99\ntrain.loss=0.5 lr-final=3e-4"

    assert find_metric(text, "eval/acc") == pytest.approx(0.91)
    assert find_metric(text, "eval/acc_top5") == pytest.approx(0.99)
    assert find_metric(text, "train.loss") == pytest.approx(0.5)
    assert find_metric(text, "lr-final") == pytest.approx(3e-4)
    assert find_metric("evalXacc=1", "eval.acc") is None  # the `.` is literal, not a wildcard
    assert find_metric('{"eval/acc": 0.8}', "eval/acc") == pytest.approx(0.8)


def test_parse_metric_returns_value() -> None:
    assert parse_metric("val_mse: 0.125\n", "val_mse") == 0.125


def test_parse_metric_error_names_metric_formats_and_last_lines() -> None:
    text = "line one\nline two\n\nval_mse_std=0.1\nfinished training\n\n"

    with pytest.raises(MetricNotFound) as info:
        parse_metric(text, "val_mse", where="eval.stdout.log")

    message = str(info.value)
    assert "'val_mse'" in message
    assert "val_mse=<number>" in message
    assert "val_mse: <number>" in message
    assert "JSON" in message
    assert "eval.stdout.log" in message
    assert "'line two' | 'val_mse_std=0.1' | 'finished training'" in message
    assert "line one" not in message


def test_parse_metric_error_on_empty_text() -> None:
    with pytest.raises(MetricNotFound, match=r"empty output"):
        parse_metric("", "acc")


def test_parse_metric_error_mentions_non_numeric_value() -> None:
    with pytest.raises(MetricNotFound, match=r"mentioned, but never with a numeric value"):
        parse_metric("acc: unknown", "acc")


AUTORESEARCH_OUTPUT = """\
step 00950 | loss: 3.2100 | lr: 0.0004
step 01000 | loss: 3.1000 | val_bpb: 1.2000
---
val_bpb:          0.997900
training_seconds: 300.1
peak_vram_mb:     45060.2
mfu_percent:      39.80
total_tokens_M:   499.6
num_steps:        953
depth:            8
model: gpt-small
"""


def test_parse_summary_autoresearch_block() -> None:
    summary = parse_summary(AUTORESEARCH_OUTPUT)

    assert summary == {
        "val_bpb": pytest.approx(0.9979),
        "training_seconds": pytest.approx(300.1),
        "peak_vram_mb": pytest.approx(45060.2),
        "mfu_percent": pytest.approx(39.8),
        "total_tokens_M": pytest.approx(499.6),
        "num_steps": 953.0,
        "depth": 8.0,
    }


def test_parse_summary_uses_last_block_and_equals_pairs() -> None:
    text = "---\nold: 1\n---\nloss=0.5 acc=0.9\n  eval/acc = nan\nnote: done\nloss=0.4\n"

    summary = parse_summary(text)

    assert summary.keys() == {"loss", "acc", "eval/acc"}
    assert summary["loss"] == 0.4
    assert summary["acc"] == 0.9
    assert math.isnan(summary["eval/acc"])


@pytest.mark.parametrize("text", ["", "val_bpb: 0.9\n", "----x\nval: 1", "a --- b\nval: 1", "---"])
def test_parse_summary_without_block_is_empty(text: str) -> None:
    assert parse_summary(text) == {}


def test_parse_summary_separator_may_have_surrounding_spaces() -> None:
    assert parse_summary("x: 1\n  ---  \ny: 2\n") == {"y": 2.0}


def test_thousands_separator_is_refused_not_misread() -> None:
    for text in ("loss: 1,234.5", "loss: 12,345.5", "loss=12,3", "loss: 12.5,1"):
        assert find_metric(text, "loss") is None, text
    assert find_metric("loss=0.5,acc=0.9", "loss") == 0.5


def test_find_pairs_reads_every_numeric_pair_last_wins() -> None:
    text = "step=3 loss: 0.5 'acc': 1 lr=3e-4 name=run1 loss=0.25 x=1,234"

    assert find_pairs(text) == {"step": 3.0, "loss": 0.25, "acc": 1.0, "lr": 3e-4}


def test_find_pairs_keys_with_slash_dot_dash_and_no_pairs() -> None:
    assert find_pairs("train/loss=1 eval.acc: 2 lr-head=3") == {
        "train/loss": 1.0, "eval.acc": 2.0, "lr-head": 3.0}
    assert find_pairs("nothing here") == {}
