"""Steering a loop: notes, stop requests, protocol edits, repeats, targets, min_delta."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import git

from spml.errors import ProtocolError
from spml.toolkit.loop import control
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_ledger

BRANCH = "spml/autoresearch/exp"


def experiment(exp: Path) -> Experiment:
    return Experiment.locate(exp, "autoresearch-protocol.md")


def rows(exp: Path) -> dict:
    ledger = read_ledger(experiment(exp))
    assert ledger is not None
    return {r.round: r for r in ledger.rows}


def edit_protocol(exp: Path, change) -> None:
    path = exp / "autoresearch-protocol.md"
    _, front, body = path.read_text().split("---\n", 2)
    fields = yaml.safe_load(front)
    change(fields)
    path.write_text(f"---\n{yaml.safe_dump(fields, sort_keys=False)}---\n{body}")


def test_note_reaches_next_brief_and_note_column(toy_experiment, drive_loop, tmp_path) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=2)
    control.add_note(experiment(exp), "try x close to 3")
    drive_loop(exp)
    assert rows(exp)[1].note == "try x close to 3"
    assert rows(exp)[2].note == ""
    briefs = (tmp_path / "briefs.log").read_text().split("=== round ")
    assert "- try x close to 3" in briefs[1]
    assert "try x close to 3" not in briefs[2].split("## Notes")[1].split("##")[0]
    assert "Never touch (fixed): `train.py`, `evaluate.py`" in briefs[1]
    assert "| 1 | pass |" in briefs[2]  # the previous round is in the window


def test_stop_request_ends_after_current_step(toy_experiment, drive_loop) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=5)

    def stop_after(round_no: int) -> None:
        if round_no == 2:
            control.request_stop(experiment(exp))

    ledger = drive_loop(exp, between_rounds=stop_after)
    assert ledger.status == "stopped"
    assert ledger.rounds_done == 2
    assert control.stop_requested(experiment(exp)) is None  # acknowledged
    ledger = drive_loop(exp)  # running again continues where it stopped
    assert ledger.status == "completed"
    assert sorted(rows(exp)) == [0, 1, 2, 3, 4, 5]


def test_protocol_edit_applies_next_round_and_locked_edit_is_refused(toy_experiment,
                                                                     drive_loop) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=2)

    def edit(round_no: int) -> None:
        if round_no == 1:
            edit_protocol(exp, lambda f: f.update(max_rounds=3))
        if round_no == 2:
            edit_protocol(exp, lambda f: f["eval"].update(metric="accuracy"))

    ledger = drive_loop(exp, between_rounds=edit)
    assert ledger.rounds_done == 3
    assert rows(exp)[2].note == "protocol edit applied: max_rounds"
    assert rows(exp)[3].note.startswith("protocol edit refused: eval cannot change mid-run")
    with pytest.raises(ProtocolError, match="eval changed since this loop started"):
        drive_loop(exp)


def test_repeats_use_seeds_and_the_mean_decides(toy_experiment, drive_loop) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=1, acceptance={"repeats": 3})
    (exp / "params.yaml").write_text("x: 0.0\nnoise: 1.0\n")
    git(exp, "commit", "-qam", "noise")
    drive_loop(exp)
    baseline = rows(exp)[0]
    assert baseline.result == pytest.approx(10.0)  # 9 + mean(0, 1, 2)
    assert baseline.result_text.startswith("10.0 ± 1 (n=3)")
    round_dir = experiment(exp).round_dir(0)
    seeds = [(round_dir / f"train-{i}.stdout.log").read_text().split()[0] for i in range(3)]
    assert seeds == ["seed=0", "seed=1", "seed=2"]


def test_min_delta_rejects_small_gains(toy_experiment, drive_loop) -> None:
    # good: x = 3 - 2/(n+1) -> loss 1, 0.444, 0.25: gains 8, 0.556, 0.194
    exp = toy_experiment({"default": "good"}, acceptance={"min_delta": 0.3})
    drive_loop(exp)
    assert [rows(exp)[n].verdict for n in (1, 2, 3)] == ["committed", "committed", "rolled_back"]
    assert "by more than 0.3" in rows(exp)[3].insight


def test_target_reached_stops_the_loop(toy_experiment, drive_loop) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=10, target=0.5)
    ledger = drive_loop(exp)
    assert ledger.status == "target_reached"
    assert ledger.rounds_done == 2


def test_a_given_baseline_is_measured_and_a_mismatch_is_noted(toy_experiment,
                                                               drive_loop) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=1, baseline=0.5)
    drive_loop(exp)
    baseline = rows(exp)[0]
    assert baseline.insight == "baseline measured on the base commit"
    assert baseline.result == 9.0  # the toy's loss at x=0, whatever the protocol claims
    assert "the protocol's baseline 0.5 differs from the measured 9 (n=1)" in baseline.note
    assert rows(exp)[1].verdict == "committed"  # loss 1.0 beats the measured 9, not the claim


def test_a_given_baseline_that_matches_up_to_rounding_is_not_noted(toy_experiment,
                                                                   drive_loop) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=0, baseline=9.001)
    drive_loop(exp)
    assert rows(exp)[0].note == ""


def test_second_supervisor_is_refused(toy_experiment) -> None:
    from spml.toolkit.loop.experiment import LoopAlreadyRunning, hold_experiment

    exp = toy_experiment()
    with hold_experiment(exp), pytest.raises(LoopAlreadyRunning, match="already running"), \
            hold_experiment(exp):
        pass


def test_broken_baseline_fails_with_cause(toy_experiment, drive_loop) -> None:
    from spml.errors import BaselineFailed

    exp = toy_experiment(train_command="python -c 'import sys; sys.exit(\"no data\")'")
    with pytest.raises(BaselineFailed, match="train crashed: exit 1: no data"):
        drive_loop(exp)


def test_user_checkout_is_never_touched(toy_experiment, drive_loop) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=1)
    head = git(exp, "rev-parse", "HEAD")
    (exp.parent / "wip.txt").write_text("user work in progress\n")
    drive_loop(exp)
    assert git(exp, "rev-parse", "HEAD") == head
    assert git(exp, "branch", "--show-current") == "main"
    assert (exp / "params.yaml").read_text() == "x: 0.0\n"
    status = set(git(exp.parent, "status", "--porcelain").splitlines())
    assert status == {"?? exp/experiences.md", "?? wip.txt"}


def test_a_failed_repeat_fails_the_round_without_a_partial_result(toy_experiment,
                                                                  drive_loop) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=1, acceptance={"repeats": 2},
                         train_command="python -c \"import os, sys; "
                         "sys.exit(int(os.environ['SPML_SEED']) * (os.environ['SPML_ROUND'] "
                         "== '1'))\" && python train.py")
    drive_loop(exp)
    failed = rows(exp)[1]
    assert (failed.verdict, failed.result) == ("rolled_back", None)
    assert failed.insight.startswith("train crashed: exit 1")


def test_unignored_training_output_fails_the_baseline_with_a_gitignore_hint(toy_experiment,
                                                                             drive_loop) -> None:
    from spml.errors import BaselineFailed

    exp = toy_experiment()
    (exp / ".gitignore").write_text("__pycache__/\n")
    git(exp, "commit", "-qam", "forget to ignore outputs")
    with pytest.raises(BaselineFailed, match=r"outputs/result.json.*covered by \.gitignore"):
        drive_loop(exp)


def test_protocol_edit_that_fails_preflight_is_refused(toy_experiment, drive_loop) -> None:
    exp = toy_experiment({"default": "good"}, max_rounds=2)

    def edit(round_no: int) -> None:
        if round_no == 1:  # make a fixed file variable too
            edit_protocol(exp, lambda f: f["variable"].update(files=["params.yaml", "*.py"]))

    drive_loop(exp, between_rounds=edit)
    note = rows(exp)[2].note
    assert note.startswith("protocol edit refused:")
    assert "matches both fixed.files and variable.files" in note
