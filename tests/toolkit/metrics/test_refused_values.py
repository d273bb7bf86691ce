"""A number ends where its token ends; a refused value is named, never read as a prefix."""

from __future__ import annotations

import pytest

from spml.errors import MetricNotFound
from spml.toolkit.metrics.log import parse_log_line
from spml.toolkit.metrics.output import find_metric, find_pairs, missing_reason, parse_metric


@pytest.mark.parametrize("value", ["0x10", "1_000", "1.2.3", "5e", "5E+", "1,000", "0b101",
                                   "45/50", "1-2", "2024-01-05", "12:30", "1+2", "٣", "１"])
def test_a_prefix_of_a_longer_token_is_not_a_number(value: str) -> None:
    for text in (f"score={value}", f"score: {value}", f"{{'score': {value}}}"):
        assert find_metric(text, "score") is None, text
        with pytest.raises(MetricNotFound) as info:
            parse_metric(text, "score")
        assert info.value.reason == ("'score' is mentioned, but never with a numeric value: "
                                     f"{value!r} is not a number")
        assert info.value.reason in str(info.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("score=12.5s", 12.5), ("score: 95%", 95.0), ("score=0.5.", 0.5), ("score: 3e-4,", 3e-4),
    ("score: 2678M", 2678.0), ("Final score: 0.25.", 0.25),
])
def test_a_unit_or_punctuation_after_the_number_is_allowed(text: str, expected: float) -> None:
    assert find_metric(text, "score") == pytest.approx(expected)


def test_the_last_value_decides_even_when_it_is_refused() -> None:
    assert find_metric("score=0.5\nscore: 0x10\n", "score") is None
    assert missing_reason("score=0.5\nscore: 0x10\n", "score").endswith("'0x10' is not a number")
    assert find_metric("score: 0x10\nscore=0.5\n", "score") == 0.5


@pytest.mark.parametrize(("line", "kind"), [
    ('{"score": "0.5"}', '"0.5" (a string)'), ('{"score": true}', "true (a boolean)"),
    ('{"score": null}', "null (null)"), ('INFO {"score": [1, 2]}', "[1, 2] (a list)"),
])
def test_a_json_value_that_is_not_a_number_is_named(line: str, kind: str) -> None:
    with pytest.raises(MetricNotFound) as info:
        parse_metric(f"score=0.1\n{line}\n", "score")
    assert info.value.reason == ("'score' is mentioned, but never with a numeric value: the "
                                 f"JSON object on the last line has {kind}, not a number")


def test_reasons_for_a_mention_without_value_and_no_mention() -> None:
    assert missing_reason("the score is good", "score") == (
        "'score' is mentioned, but never with a numeric value (never as 'score=<number>' or "
        "'score: <number>')")
    assert missing_reason("loss=1", "score") == "no 'score' in the output"
    # a word that merely contains the key is no mention of it
    assert missing_reason("accuracy unavailable", "acc") == "no 'acc' in the output"
    with pytest.raises(MetricNotFound) as info:
        parse_metric("loss=1", "score")
    assert info.value.reason == "no 'score' in the output"
    assert "mentioned" not in str(info.value)


def test_pairs_and_log_lines_skip_refused_values() -> None:
    text = "a=0x10 b=1_000 c=1.2.3 d=5e e=1,000 f=2 g=3s h=-1e-3"
    assert find_pairs(text) == {"f": 2.0, "g": 3.0, "h": -1e-3}
    assert parse_log_line("step=3 loss=0x10 lr=1_000 acc=0.5") == {"step": 3.0, "acc": 0.5}
