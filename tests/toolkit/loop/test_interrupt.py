"""What an interrupted supervisor leaves: `status: interrupted`, the journal, the resume line."""

from __future__ import annotations

from pathlib import Path

from helpers import drive, git

from spml.protocols.experiences import parse_experiences
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.interrupt import record_interrupted
from spml.toolkit.loop.ledger import (
    Journal,
    ledger_copy_path,
    read_journal,
    read_ledger,
    write_journal,
)


def running_loop(toy_experiment) -> Experiment:
    """A ledger as a live supervisor leaves it in round 2: rows 0 and 1, `running`, a journal."""
    exp = toy_experiment(max_rounds=1)
    drive(exp)
    experiment = Experiment.locate(exp, "autoresearch-protocol.md")
    for path in (experiment.ledger_path, ledger_copy_path(experiment)):
        path.write_text(path.read_text().replace("status: completed", "status: running"))
    base = git(exp, "rev-parse", experiment.branch("autoresearch"))
    write_journal(experiment, Journal(round=2, base=base))
    return experiment


def test_the_status_becomes_interrupted_and_the_journal_stays(toy_experiment) -> None:
    experiment = running_loop(toy_experiment)
    before = experiment.ledger_path.read_text()
    interruption = record_interrupted(experiment, ("--max-rounds", "3"))
    assert read_ledger(experiment).status == "interrupted"
    assert parse_experiences(ledger_copy_path(experiment).read_text()).status == "interrupted"
    # Only the status line changed.
    assert experiment.ledger_path.read_text() == before.replace("status: running",
                                                                 "status: interrupted")
    assert read_journal(experiment).round == 2
    assert interruption.describe("SIGINT") == (
        f"interrupted by SIGINT at round 2; resume with: spml autoresearch run "
        f"{experiment.exp_dir} --max-rounds 3")


def test_recording_twice_is_harmless_and_between_rounds_names_the_last_round(
        toy_experiment) -> None:
    experiment = running_loop(toy_experiment)
    (experiment.state_dir / "round.json").unlink()
    record_interrupted(experiment)
    assert record_interrupted(experiment).describe() == (
        f"interrupted after round 1; resume with: spml autoresearch run {experiment.exp_dir}")
    assert read_ledger(experiment).status == "interrupted"


def test_a_deleted_ledger_is_not_brought_back(toy_experiment) -> None:
    experiment = running_loop(toy_experiment)
    experiment.ledger_path.unlink()
    record_interrupted(experiment)
    assert not experiment.ledger_path.exists()
    assert parse_experiences(ledger_copy_path(experiment).read_text()).status == "interrupted"


def test_an_ended_loop_keeps_its_status(toy_experiment) -> None:
    exp = toy_experiment(max_rounds=1)
    drive(exp)
    experiment = Experiment.locate(exp, "autoresearch-protocol.md")
    assert record_interrupted(experiment).describe("SIGTERM") == (
        "interrupted by SIGTERM after the loop ended (status: completed)")
    assert read_ledger(experiment).status == "completed"


def test_an_interrupted_ledger_resumes(toy_experiment) -> None:
    experiment = running_loop(toy_experiment)
    record_interrupted(experiment)
    drive(Path(experiment.exp_dir), max_rounds=2)
    ledger = read_ledger(experiment)
    assert ledger.status == "completed"
    assert [r.round for r in ledger.rows] == [0, 1, 2]
    assert read_journal(experiment) is None
