"""Refused before any round runs, with one clear line: uncommitted changes the loop would leave
out, a variable glob nothing can match, and (in tests/protocols) absurd durations."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import git, iteration_experiment, toy_protocol, write_protocol

from spml.errors import GitStateError, ProtocolError
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.kind import ITERATION
from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.loop.lifecycle import open_loop


def commit_protocol(exp: Path, tmp_path: Path, **fields: object) -> None:
    write_protocol(exp, toy_protocol(tmp_path / "plan.json", **fields))
    git(exp, "commit", "-qam", "protocol")


# --- uncommitted changes --------------------------------------------------------------------


def test_uncommitted_fixed_and_variable_files_are_refused_by_name(toy_experiment) -> None:
    exp = toy_experiment()
    (exp / "params.yaml").write_text("x: 2.5\n")
    (exp / "train.py").write_text((exp / "train.py").read_text() + "\n# wip\n")
    (exp / "notes.txt").write_text("mine\n")  # new, and no list names it: not the loop's
    (exp / ".gitignore").write_text("outputs/\n__pycache__/\n*.tmp\n")  # committed: run too

    with pytest.raises(GitStateError) as caught:
        open_loop(str(exp))

    message = str(caught.value)
    assert "uncommitted changes to files the loop runs: .gitignore, params.yaml (variable), " \
           "train.py (fixed)." in message
    assert "notes.txt" not in message
    assert "--allow-dirty" in message
    assert read_ledger(Experiment.locate(exp, "autoresearch-protocol.md")) is None


def test_allow_dirty_runs_the_committed_code_and_says_what_it_leaves_out(
        toy_experiment, caplog) -> None:
    exp = toy_experiment()
    (exp / "params.yaml").write_text("x: 2.5\n")

    session = open_loop(str(exp), allow_dirty=True)

    assert "running without the uncommitted changes to params.yaml (variable)" in caplog.text
    assert (session.workdir / "params.yaml").read_text() == "x: 0.0\n"


def test_the_protocol_and_the_loops_own_files_are_not_dirty(toy_experiment) -> None:
    exp = toy_experiment()
    protocol = exp / "autoresearch-protocol.md"
    protocol.write_text(protocol.read_text() + "\nMore background.\n")  # read from disk
    open_loop(str(exp), max_rounds=0)  # writes experiences.md and .spml/
    open_loop(str(exp), max_rounds=0)


def test_an_ml_iteration_loop_runs_every_file_of_its_directory(tmp_path: Path) -> None:
    exp = iteration_experiment(tmp_path, {})
    (exp / "helper.py").write_text("x = 1\n")  # editable: every file not fixed
    with pytest.raises(GitStateError, match=r"helper\.py \(variable\)"):
        open_loop(str(exp), kind=ITERATION)


# --- variable globs ---------------------------------------------------------------------------


@pytest.mark.parametrize(("files", "why"), [
    (["params.yaml", "train.py/lr.yaml"], "its folder train.py is a committed file"),
    (["params.yaml", "outputs/*.yaml"], "git ignores what it names (outputs/x.yaml)"),
    (["params.yaml", "evaluate.py"], "matches both fixed.files and variable.files"),
])
def test_a_variable_glob_that_names_nothing_creatable_is_refused(toy_experiment, tmp_path,
                                                                files, why) -> None:
    exp = toy_experiment()
    commit_protocol(exp, tmp_path, variable={"files": files})
    with pytest.raises(ProtocolError) as caught:
        open_loop(str(exp))
    assert why in str(caught.value)


def test_a_variable_glob_inside_a_fixed_folder_is_refused(toy_experiment, tmp_path) -> None:
    exp = toy_experiment()
    (exp / "data").mkdir()
    (exp / "data" / "train.csv").write_text("1\n")
    git(exp, "add", "data")
    commit_protocol(exp, tmp_path, fixed={"files": ["train.py", "evaluate.py", "data/"]},
                    variable={"files": ["params.yaml", "data/extra.csv"]})
    with pytest.raises(ProtocolError, match=r"'data/extra\.csv' matches no committed file, and "
                       r"what it names \(data/extra\.csv\) lies inside fixed\.files"):
        open_loop(str(exp))


def test_a_variable_file_the_researcher_may_create_is_accepted(toy_experiment, tmp_path) -> None:
    exp = toy_experiment()
    commit_protocol(exp, tmp_path, variable={"files": ["params.yaml", "extra/*.yaml",
                                                       "notes.md"]})
    open_loop(str(exp), max_rounds=0)
