"""The person on the loop: notes as files moved into rounds, and stop requests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from spml.errors import ProtocolError
from spml.protocols.autoresearch import PROTOCOL_FILENAME
from spml.toolkit.loop import control
from spml.toolkit.loop.experiment import Experiment


@pytest.fixture
def experiment(toy_experiment: Callable[..., Path]) -> Experiment:
    return Experiment.locate(toy_experiment(), PROTOCOL_FILENAME)


def _inbox(experiment: Experiment) -> list[Path]:
    return sorted((experiment.state_dir / "notes" / "inbox").glob("*"))


def test_add_note_queues_one_file_with_collapsed_whitespace(experiment: Experiment) -> None:
    path = control.add_note(experiment, "  try a\n cosine   schedule ")

    assert path.parent == experiment.state_dir / "notes" / "inbox"
    assert path.read_text() == "try a cosine schedule"
    assert _inbox(experiment) == [path]  # no temporary file left behind
    assert control.pending_notes(experiment) == ["try a cosine schedule"]


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_note_is_refused(experiment: Experiment, text: str) -> None:
    with pytest.raises(ProtocolError, match="a note must say something"):
        control.add_note(experiment, text)

    assert control.pending_notes(experiment) == []


def test_no_notes_anywhere(experiment: Experiment) -> None:
    assert control.pending_notes(experiment) == []
    assert control.take_notes(experiment, 1) == []


def test_take_notes_moves_the_inbox_into_the_round(experiment: Experiment) -> None:
    control.add_note(experiment, "first")
    control.add_note(experiment, "second")

    taken = control.take_notes(experiment, 3)

    assert taken == ["first", "second"]
    assert control.pending_notes(experiment) == []
    owned = sorted((experiment.state_dir / "notes" / "round-0003").glob("*.txt"))
    assert [p.read_text() for p in owned] == ["first", "second"]


def test_a_redone_round_sees_the_same_notes_plus_new_ones(experiment: Experiment) -> None:
    control.add_note(experiment, "use dropout")
    assert control.take_notes(experiment, 2) == ["use dropout"]

    # The round is interrupted and redone: its notes stay with it, a new note joins them.
    control.add_note(experiment, "and a smaller lr")
    assert control.take_notes(experiment, 2) == ["use dropout", "and a smaller lr"]
    assert control.take_notes(experiment, 2) == ["use dropout", "and a smaller lr"]

    # The next round does not see them again.
    assert control.take_notes(experiment, 3) == []


def test_notes_added_after_a_round_took_its_notes_wait_for_the_next(
        experiment: Experiment) -> None:
    control.add_note(experiment, "for round 1")
    control.take_notes(experiment, 1)
    control.add_note(experiment, "for round 2")

    assert control.pending_notes(experiment) == ["for round 2"]
    assert control.take_notes(experiment, 2) == ["for round 2"]
    assert control.take_notes(experiment, 1) == ["for round 1"]


def test_stop_request_and_clear(experiment: Experiment) -> None:
    assert control.stop_requested(experiment) is None

    control.request_stop(experiment)
    assert control.stop_requested(experiment) == "stop requested by user"

    control.request_stop(experiment, "out of budget")
    assert control.stop_requested(experiment) == "out of budget"

    control.clear_stop(experiment)
    assert control.stop_requested(experiment) is None
    control.clear_stop(experiment)  # clearing twice is fine
    assert control.stop_requested(experiment) is None


def test_control_files_live_in_the_state_dir(experiment: Experiment) -> None:
    control.add_note(experiment, "a note")
    control.request_stop(experiment)

    state = experiment.state_dir
    assert state == experiment.exp_dir / ".spml" / "autoresearch"
    assert (state / "stop-requested").is_file()
    assert (state / "notes" / "inbox").is_dir()
