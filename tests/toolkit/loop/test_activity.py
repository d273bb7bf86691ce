"""`status` tells a live loop from a dead one: the experiment lock is held only by a running
supervisor, so a journal without a lock holder is an interrupted round."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import drive

from spml.toolkit.loop.activity import loop_activity
from spml.toolkit.loop.experiment import Experiment, hold_experiment, is_running
from spml.toolkit.loop.ledger import Journal, write_journal

HELPERS = Path(__file__).parents[2] / "helpers.py"


def experiment(exp: Path) -> Experiment:
    return Experiment.locate(exp, "autoresearch-protocol.md")


def test_before_the_first_run_nothing_runs(toy_experiment) -> None:
    exp = toy_experiment()
    activity = loop_activity(experiment(exp))
    assert not activity.running
    assert activity.describe() == "not started"
    assert not (exp / ".spml" / "supervisor.lock").exists()  # probing creates nothing


def test_a_finished_loop_is_not_running(toy_experiment) -> None:
    exp = toy_experiment(max_rounds=1)
    drive(exp)
    assert loop_activity(experiment(exp)).describe() == "not running (status: completed)"


def test_a_live_supervisor_and_then_a_killed_one(toy_experiment, tmp_path: Path) -> None:
    exp = toy_experiment({"default": "good", "1": "marker_sleep"})
    proc = subprocess.Popen([sys.executable, str(HELPERS), str(exp)], env={**os.environ},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "researcher-1.started").exists():
            assert proc.poll() is None, "the supervisor ended before its researcher started"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert loop_activity(experiment(exp)).describe() == \
            "running: round 1 in flight (phase started)"
    finally:
        proc.kill()
        proc.wait()

    activity = loop_activity(experiment(exp))

    assert not activity.running
    assert activity.describe() == (
        "interrupted at round 1 (phase started): no supervisor is running; "
        "`spml autoresearch run` finishes or redoes that round")


def test_between_rounds_held_lock_or_none(toy_experiment) -> None:
    exp = toy_experiment(max_rounds=1)
    drive(exp, max_rounds=0)
    ledger = exp / "experiences.md"
    ledger.write_text(ledger.read_text().replace("status: completed", "status: running"))
    assert loop_activity(experiment(exp)).describe().startswith(
        "interrupted between rounds: no supervisor is running")
    with hold_experiment(exp):
        assert is_running(experiment(exp))
        assert loop_activity(experiment(exp)).describe() == "running: between rounds"
        write_journal(experiment(exp), Journal(round=1, base="0" * 40, phase="committing"))
        assert loop_activity(experiment(exp)).describe() == \
            "running: round 1 in flight (phase committing)"
    assert not is_running(experiment(exp))


def test_a_deleted_ledger_means_a_new_one_next_run(toy_experiment) -> None:
    exp = toy_experiment(max_rounds=1)
    drive(exp, max_rounds=0)
    (exp / "experiences.md").unlink()
    assert loop_activity(experiment(exp)).describe() == (
        "not running; experiences.md was deleted: `spml autoresearch run` starts a new ledger "
        "(the old one is kept under .spml)")
