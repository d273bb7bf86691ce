"""S3+S4 `measure` on a real git repo: measurement.json, per-seed records, every failure cause.

Most cases measure round 0 of a project whose committed params.yaml switches on the behaviour
under test (see tests/fixtures/loop_steps/train.py and evaluate.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.loop_steps.stepkit import (
    experiment,
    load,
    make_experiment,
    open_and_baseline,
)

from spml.toolkit.loop.begin import begin_round
from spml.toolkit.loop.lifecycle import open_loop
from spml.toolkit.loop.measure import Measurement, measure
from spml.toolkit.loop.measurement import load_measurement
from spml.toolkit.loop.researchers.dispatch import run_researcher


def measure_round_zero(tmp_path: Path, params: str, **protocol: object) -> Measurement:
    exp = make_experiment(tmp_path, params=params, **protocol)
    open_loop(str(exp))
    session, plan = begin_round(load(exp), 0)
    measured = measure(session, plan)
    assert load_measurement(experiment(exp).round_dir(0)) == measured
    return measured


def logs(tmp_path: Path) -> set[str]:
    round_dir = experiment(tmp_path / "repo" / "exp").round_dir(0)
    return {p.name for p in round_dir.glob("*.stdout.log")}


def test_measurement_records_the_measured_tree_and_the_eval_metrics(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"default": "good"})
    open_and_baseline(exp)
    session, plan = begin_round(load(exp), 1)
    assert run_researcher(session, plan).ok  # round 1, mode good: x = 2.0
    changed = session.workspace.state_tree()
    assert changed != session.workspace.head_tree()

    measured = measure(session, plan)

    assert load_measurement(experiment(exp).round_dir(1)) == measured
    assert measured.round == 1
    assert measured.tree == changed
    assert measured.primary == "loss"
    assert (measured.cause, measured.violations) == ("", ())
    assert measured.ok
    assert measured.mean == pytest.approx(1.0)
    (seed,) = measured.seeds
    assert seed.seed == 0
    assert seed.metrics == {"loss": 1.0, "score": 9.0, "seed": 0.0, "eval_seed": 0.0}
    assert seed.train_time_s > 0
    assert seed.eval_time_s > 0
    assert seed.first_step_time_s is None  # train printed no step line
    assert seed.step_lines == 0
    baseline = load_measurement(experiment(exp).round_dir(0))
    assert baseline is not None
    assert baseline.tree == session.workspace.head_tree()
    assert baseline.mean == pytest.approx(9.0)


def test_a_step_line_sets_the_time_to_the_first_step(tmp_path: Path) -> None:
    measured = measure_round_zero(tmp_path, "x: 1.0\nstep_lines: true\n")

    (seed,) = measured.seeds
    assert seed.first_step_time_s is not None
    assert 0 <= seed.first_step_time_s <= seed.train_time_s + 1.0
    assert seed.step_lines == 2
    assert seed.step_keys == ["loss", "step"]
    assert seed.reported["loss"] == pytest.approx(0.75)  # median of 1.0 and 0.5
    assert seed.metrics["loss"] == pytest.approx(4.0)


def test_repeats_run_one_seed_each_and_average_them(tmp_path: Path) -> None:
    measured = measure_round_zero(tmp_path, "x: 1.0\nnoise: 0.5\n", acceptance={"repeats": 3})

    assert [s.seed for s in measured.seeds] == [0, 1, 2]
    # train.py wrote SPML_SEED into its result; evaluate.py printed its own SPML_SEED.
    assert [s.metrics["seed"] for s in measured.seeds] == [0, 1, 2]
    assert [s.metrics["eval_seed"] for s in measured.seeds] == [0, 1, 2]
    assert measured.values == pytest.approx((4.0, 4.5, 5.0))
    assert measured.mean == pytest.approx(4.5)
    assert measured.ok
    assert logs(tmp_path) == {f"{step}-{n}.stdout.log" for step in ("train", "eval")
                              for n in range(3)}


def test_a_nan_metric_fails_the_measurement(tmp_path: Path) -> None:
    measured = measure_round_zero(tmp_path, "x: 1.0\neval_mode: nan\n")

    assert measured.cause == "eval reported loss=nan (not a finite number)"
    assert measured.seeds == ()
    assert not measured.ok
    assert measured.mean is None


def test_an_eval_without_the_metric_fails_the_measurement(tmp_path: Path) -> None:
    measured = measure_round_zero(tmp_path, "x: 1.0\neval_mode: silent\n")

    assert measured.cause == "eval printed no loss value on stdout"
    assert measured.seeds == ()


def test_the_parsers_reason_reaches_the_cause(tmp_path: Path) -> None:
    measured = measure_round_zero(tmp_path, "x: 1.0\neval_mode: hex\n")

    assert measured.cause == ("eval printed no loss value on stdout: 'loss' is mentioned, but "
                              "never with a numeric value: '0x10' is not a number")


def test_a_failing_eval_fails_the_measurement(tmp_path: Path) -> None:
    measured = measure_round_zero(tmp_path, "x: 1.0\neval_mode: fail\n")

    assert measured.cause.startswith("eval failed: exit 1")
    assert "cannot evaluate" in measured.cause
    assert measured.seeds == ()


def test_an_eval_past_its_timeout_is_killed(tmp_path: Path) -> None:
    measured = measure_round_zero(tmp_path, "x: 1.0\neval_sleep: 5\n", eval={"timeout": 1})

    assert measured.cause == "eval killed: exceeded 1s"  # only a killed eval says this
    assert measured.seeds == ()


def test_a_training_crash_fails_the_measurement_before_any_eval(tmp_path: Path) -> None:
    measured = measure_round_zero(tmp_path, "x: 1.0\ntrain_exit: 3\n",
                                  acceptance={"repeats": 2})

    assert measured.cause.startswith("train crashed: exit 3")
    assert "training blew up" in measured.cause
    assert measured.seeds == ()
    assert logs(tmp_path) == {"train-0.stdout.log"}  # no eval, no second seed


def test_a_fixed_file_changed_during_training_is_a_violation(tmp_path: Path) -> None:
    measured = measure_round_zero(tmp_path, "x: 1.0\ntamper: true\n")

    reasons = {v.reason for v in measured.violations}
    assert "fixed file exp/evaluate.py was modified during the round" in reasons
    assert all(v.path.endswith("evaluate.py") for v in measured.violations)
    assert measured.cause == ""
    assert measured.seeds == ()
    assert not measured.ok
    assert logs(tmp_path) == {"train-0.stdout.log"}  # the changed eval never ran


def test_a_later_seed_failing_fails_the_round_and_keeps_the_earlier_seeds(tmp_path: Path) -> None:
    measured = measure_round_zero(tmp_path, "x: 1.0\ntrain_exit: 4\ncrash_seed: 1\n",
                                  acceptance={"repeats": 3})

    assert measured.cause.startswith("train crashed: exit 4")
    assert [s.seed for s in measured.seeds] == [0]  # recorded, but not the round's value
    assert measured.mean == pytest.approx(4.0)
    assert not measured.ok
    assert logs(tmp_path) == {"train-0.stdout.log", "eval-0.stdout.log", "train-1.stdout.log"}
