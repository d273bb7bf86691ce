"""A round's measurement as data: per-seed records, the primary metric, save and load."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from spml.toolkit.loop.measurement import (
    MEASUREMENT_FILENAME,
    CheckResult,
    Measurement,
    SeedRecord,
    ViolationRecord,
    load_measurement,
    mean_and_sem,
    save_measurement,
)

FULL = Measurement(
    round=3, tree="abc123", primary="acc",
    seeds=(
        SeedRecord(seed=0, metrics={"acc": 0.5, "loss": 1.25}, train_time_s=2.5,
                   first_step_time_s=0.75, eval_time_s=1.0, step_lines=10,
                   step_keys=["loss", "step"], nonfinite_keys=["(unparsed)"],
                   pattern_hits={"Warn": 2}, reported={"mfu": 0.25},
                   custom={"hf": CheckResult(exit_code=0),
                           "slow": CheckResult(exit_code=None, cause="timed out after 5s")}),
        SeedRecord(seed=1, metrics={"acc": 0.75}, train_time_s=3.5, eval_time_s=0.5),
    ),
    source="measured",
)


def seeds(*metrics: dict[str, float]) -> tuple[SeedRecord, ...]:
    return tuple(SeedRecord(seed=i, metrics=m) for i, m in enumerate(metrics))


def test_round_trip(tmp_path: Path) -> None:
    round_dir = tmp_path / "rounds" / "0003"
    save_measurement(round_dir, FULL)
    assert (round_dir / MEASUREMENT_FILENAME).is_file()
    loaded = load_measurement(round_dir)
    assert loaded == FULL
    assert loaded is not None
    assert loaded.seeds[0].custom["slow"].cause == "timed out after 5s"
    assert not loaded.seeds[0].custom["slow"].passed
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["0003", MEASUREMENT_FILENAME, "rounds"]


def test_save_replaces_the_previous_file(tmp_path: Path) -> None:
    save_measurement(tmp_path, FULL)
    save_measurement(tmp_path, Measurement(round=4, cause="train crashed"))
    assert load_measurement(tmp_path) == Measurement(round=4, cause="train crashed")


@pytest.mark.parametrize("text", ["", "{not json", '{"seeds": "nope"}', '{"round": "x"}',
                                  "[]"])
def test_unusable_file_loads_as_none(tmp_path: Path, text: str) -> None:
    (tmp_path / MEASUREMENT_FILENAME).write_text(text)
    assert load_measurement(tmp_path) is None


def test_missing_file_loads_as_none(tmp_path: Path) -> None:
    assert load_measurement(tmp_path) is None
    assert load_measurement(tmp_path / "never" / "made") is None


def test_non_finite_metric_round_trip(tmp_path: Path) -> None:
    measurement = Measurement(primary="loss", seeds=seeds({"acc": 0.5, "loss": math.nan}))
    save_measurement(tmp_path, measurement)
    loaded = load_measurement(tmp_path)
    assert loaded is not None
    assert loaded.seeds[0].metrics["acc"] == 0.5


def test_ok() -> None:
    assert FULL.ok
    assert not Measurement(primary="acc").ok                        # nothing ran
    assert not FULL.model_copy(update={"cause": "train crashed"}).ok
    violation = (ViolationRecord(path="evaluate.py", reason="changed"),)
    assert not FULL.model_copy(update={"violations": violation}).ok
    partial = Measurement(primary="acc", seeds=seeds({"acc": 0.5}, {"loss": 1.0}))
    assert not partial.ok                                           # one seed printed no acc
    assert Measurement(seeds=seeds({}, {})).ok                      # no primary: ran is enough


def test_ok_needs_a_finite_primary() -> None:
    assert not Measurement(primary="acc", seeds=seeds({"acc": math.nan})).ok


def test_values_and_mean() -> None:
    assert FULL.values == (0.5, 0.75)
    assert FULL.mean == 0.625
    partial = Measurement(primary="acc", seeds=seeds({"acc": 0.5}, {"loss": 1.0}, {"acc": 1.5}))
    assert (partial.values, partial.mean) == ((0.5, 1.5), 1.0)
    no_primary = Measurement(seeds=seeds({"acc": 0.5}))
    assert (no_primary.values, no_primary.mean) == ((), None)
    assert Measurement(primary="acc", seeds=seeds({"loss": 1.0})).mean is None


def test_wall_times() -> None:
    assert (FULL.train_s, FULL.eval_s) == (6.0, 1.5)
    assert (Measurement().train_s, Measurement().eval_s) == (0, 0)


def test_samples_by_source() -> None:
    assert FULL.samples("metrics", "acc") == [0.5, 0.75]
    assert FULL.samples("metrics", "loss") == [1.25]                 # seed 1 printed none
    assert FULL.samples("measured", "train_time_s") == [2.5, 3.5]
    assert FULL.samples("measured", "first_step_time_s") == [0.75]   # None is left out
    assert FULL.samples("reported", "mfu") == [0.25]
    assert FULL.samples("reported", "acc") == []
    assert FULL.samples("metrics", "mfu") == []
    assert Measurement().samples("metrics", "acc") == []


def test_mean_and_sem() -> None:
    assert mean_and_sem([2.0]) == (2.0, None)
    mean, sem = mean_and_sem([1.0, 3.0])                # stdev sqrt(2), over sqrt(2)
    assert mean == 2.0
    assert sem == pytest.approx(1.0)
    mean, sem = mean_and_sem([1.0, 2.0, 3.0, 4.0])      # stdev 1.291, over 2
    assert mean == 2.5
    assert sem == pytest.approx(math.sqrt(5 / 3) / 2)


def test_check_result_passes_on_exit_zero_only() -> None:
    assert CheckResult(exit_code=0).passed
    assert not CheckResult(exit_code=1).passed
    assert not CheckResult(exit_code=None, cause="could not start").passed


def test_records_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        FULL.seeds[0].seed = 5  # type: ignore[misc]
