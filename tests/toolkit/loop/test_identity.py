"""Experiment names and ledger generations: nothing one experiment or ledger records is
overwritten by another (two experiments in one repository, a restarted ledger, an experiment
made before names and generations were recorded)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import attempt_ref, drive, git, toy_repo

from spml.protocols.experiences import parse_experiences
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.identity import claim_name, fresh_name, legacy_name
from spml.toolkit.loop.overrides import queue_override

PROTOCOL = "autoresearch-protocol.md"
HELPERS = Path(__file__).parents[2] / "helpers.py"


def experiment(exp: Path) -> Experiment:
    return Experiment.locate(exp, PROTOCOL)


def rows(exp: Path) -> list[tuple[int, str]]:
    ledger = parse_experiences((exp / "experiences.md").read_text())
    return [(r.round, r.verdict) for r in ledger.rows]


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("paths", [("exp a", "exp-a"), ("Exp", "exp"), ("a/b", "a-b"),
                                   ("x_1", "x-1"), ("x.1", "x-1")])
def test_paths_that_once_shared_a_name_get_different_names(paths: tuple[str, str]) -> None:
    first, second = (fresh_name(path, "repo") for path in paths)
    assert first != second
    if "_" not in paths[0] and "." not in paths[0]:  # the old slug merged these
        assert legacy_name(paths[0], "repo") == legacy_name(paths[1], "repo")


def test_a_clean_path_is_its_own_name_and_others_keep_a_readable_slug() -> None:
    assert fresh_name("exp", "repo") == "exp"
    assert fresh_name("runs/mlp", "repo").startswith("runs-mlp-")
    assert fresh_name(".", "my-project") == "my-project"
    assert len(fresh_name("a" * 300, "repo")) <= 64


def test_a_name_claimed_by_another_directory_is_passed_over(tmp_path: Path) -> None:
    never: object = lambda _name: False  # noqa: E731
    assert claim_name(tmp_path, "proj", ".", never) == "proj"  # the repository root
    other = claim_name(tmp_path, "proj", "proj", never)  # a folder named like the repo
    assert other.startswith("proj-")
    assert other != "proj"
    assert claim_name(tmp_path, "proj", "proj", never) == other  # stable once claimed
    assert claim_name(tmp_path, "proj", ".", never) == "proj"


def test_two_experiments_in_one_repository_keep_all_their_attempts(tmp_path: Path) -> None:
    exp_a, exp_b = toy_repo(tmp_path, {"default": "good", "1": "worse"}, "exp a", "exp-a",
                            max_rounds=2)
    drive(exp_a)
    drive(exp_b)
    a, b = experiment(exp_a), experiment(exp_b)
    assert a.name != b.name
    assert a.branch("autoresearch") != b.branch("autoresearch")
    assert a.worktree_dir("autoresearch") != b.worktree_dir("autoresearch")
    for exp, rel in ((exp_a, "exp a"), (exp_b, "exp-a")):
        assert rows(exp) == [(0, "committed"), (1, "rolled_back"), (2, "committed")]
        ref = attempt_ref(exp, 1)
        assert git(exp, "show", f"{ref}:{rel}/params.yaml") == "x: -5.0"
        assert f"{rel}/params.yaml" in git(exp, "show", "--name-only", "--format=", ref)
    assert attempt_ref(exp_a, 1) != attempt_ref(exp_b, 1)
    # Each branch holds only its own experiment's commits.
    for exp, other in ((exp_a, "exp-a/"), (exp_b, "exp a/")):
        changed = git(exp, "log", "--name-only", "--format=",
                      f"main..{experiment(exp).branch('autoresearch')}")
        assert changed
        assert other not in changed


def test_a_new_experiment_does_not_take_an_older_unclaimed_branch(tmp_path: Path) -> None:
    (exp,) = toy_repo(tmp_path, {"default": "good"}, "exp", max_rounds=0)
    git(exp, "branch", "spml/autoresearch/exp")  # left by an experiment of an older spml
    drive(exp)
    assert experiment(exp).name.startswith("exp-")
    assert (exp / ".spml" / "autoresearch" / "identity.json").is_file()


# --- generations ---------------------------------------------------------------------------


def test_a_restarted_ledger_keeps_the_old_generations_rounds_and_attempts(tmp_path: Path
                                                                           ) -> None:
    (exp,) = toy_repo(tmp_path, {"default": "good", "1": "worse"}, "exp", max_rounds=2)
    drive(exp)
    old = experiment(exp)
    old_brief = (old.round_dir(1) / "brief.md").read_text()
    old_attempt = git(exp, "rev-parse", old.attempt_ref(1))
    study = old.state_dir / "optuna.db"  # an Optuna researcher's study (bytes stand in for it)
    study.write_bytes(b"old generation's trials")
    (exp / "experiences.md").unlink()  # the advice for a broken header: start a new ledger

    drive(exp, max_rounds=1)  # the branch has old round 2's commit: not a ledger that lost rows

    new = experiment(exp)
    assert new.generation
    assert new.generation != old.generation
    assert rows(exp) == [(0, "committed"), (1, "rolled_back")]
    archive = new.state_dir / "generations" / old.generation
    assert (archive / "rounds" / "0001" / "brief.md").read_text() == old_brief
    assert (archive / "rounds" / "0002").is_dir()
    assert (archive / "optuna.db").read_bytes() == b"old generation's trials"
    assert not study.exists()  # the new ledger's round 0 seeds a new study
    assert (new.round_dir(1) / "brief.md").read_text() != old_brief  # a fresh round 1
    assert not new.round_dir(2).exists()
    assert [r.round for r in parse_experiences((archive / "ledger-copy.md").read_text()).rows
            ] == [0, 1, 2]
    assert git(exp, "rev-parse", old.attempt_ref(1)) == old_attempt
    assert git(exp, "rev-parse", new.attempt_ref(1)) != old_attempt
    trailers = git(exp, "log", "-1", "--format=%(trailers)", new.branch("autoresearch"))
    assert f"Spml-Generation: {old.generation}" in trailers  # round 0 commits nothing


def test_an_override_acts_on_its_own_generations_round(tmp_path: Path) -> None:
    (exp,) = toy_repo(tmp_path, {"default": "good"}, "exp", max_rounds=1)
    drive(exp)  # generation 1: round 1 committed (x: 2.0)
    queue_override(experiment(exp), 1, "rollback")
    drive(exp, max_rounds=2)  # ...then reverted by a person
    (exp / "experiences.md").unlink()
    (tmp_path / "plan.json").write_text(json.dumps({"1": "worse"}))
    drive(exp, max_rounds=1)  # generation 2: its round 1 (x: -5.0) is rolled back
    queue_override(experiment(exp), 1, "commit")
    (tmp_path / "plan.json").write_text(json.dumps({"default": "crash"}))
    drive(exp, max_rounds=2)
    branch = experiment(exp).branch("autoresearch")
    picked = git(exp, "log", "-1", "--format=%H", "--grep=re-apply round 1", branch)
    # Generation 2's attempt came back, not generation 1's reverted round.
    assert git(exp, "show", f"{picked}:exp/params.yaml") == "x: -5.0"
    assert f"Spml-Generation: {experiment(exp).generation}" in git(
        exp, "log", "-1", "--format=%(trailers)", picked)


# --- experiments made before names and generations were recorded -----------------------------


def _make_legacy(exp: Path) -> None:
    """Turn a loop's state into what an older spml left: no identity, attempts under
    `refs/spml/attempts/<round>`."""
    state = experiment(exp).state_dir
    for line in git(exp, "for-each-ref", "--format=%(refname)", "refs/spml/attempts/").split():
        round_no = line.rsplit("/", 1)[1]
        git(exp, "update-ref", f"refs/spml/attempts/{round_no}", line)
        git(exp, "update-ref", "-d", line)
    (state / "identity.json").unlink()
    (state / "ledger-copy.md").unlink()


def test_an_experiment_made_before_identities_keeps_its_branch_and_attempts(tmp_path: Path
                                                                            ) -> None:
    (exp,) = toy_repo(tmp_path, {"default": "good", "1": "worse"}, "exp", max_rounds=1)
    drive(exp)
    branch_tip = git(exp, "rev-parse", "spml/autoresearch/exp")
    _make_legacy(exp)
    legacy = experiment(exp)
    assert (legacy.name, legacy.generation) == ("exp", "")
    queue_override(legacy, 1, "commit")  # re-applies the attempt kept where it used to be
    drive(exp, max_rounds=2)
    assert rows(exp)[:4] == [(0, "committed"), (1, "rolled_back"), (1, "override: commit"),
                             (2, "committed")]
    assert git(exp, "merge-base", "--is-ancestor", branch_tip, "spml/autoresearch/exp",
               check=False) == 0
    assert experiment(exp).generation == ""  # the same ledger goes on
    assert json.loads((experiment(exp).state_dir / "identity.json").read_text())["name"] == "exp"


def test_an_old_experiment_keeps_its_old_name(tmp_path: Path) -> None:
    (exp,) = toy_repo(tmp_path, {"default": "good"}, "my_exp", max_rounds=0)
    state = exp / ".spml" / "autoresearch"
    state.mkdir(parents=True)
    (state / "session.json").write_text("{}")  # opened by an older spml, no identity
    assert experiment(exp).name == "my_exp"
    (state / "session.json").unlink()
    assert experiment(exp).name.startswith("my-exp-")


def test_a_copied_experiment_folder_does_not_take_the_originals_branch(tmp_path: Path
                                                                        ) -> None:
    (exp,) = toy_repo(tmp_path, {"default": "good"}, "exp a", max_rounds=0)
    drive(exp)
    tip = git(exp, "rev-parse", experiment(exp).branch("autoresearch"))
    copy = exp.parent / "exp b"
    shutil.copytree(exp, copy)  # with its .spml/ and experiences.md
    git(exp.parent, "add", "exp b")
    git(exp.parent, "commit", "-qm", "a copy")
    assert experiment(copy).name != experiment(exp).name
    drive(copy)
    assert git(exp, "rev-parse", experiment(exp).branch("autoresearch")) == tip


def test_a_round_left_in_flight_is_finished_in_the_old_ledger_before_a_new_one(
        tmp_path: Path) -> None:
    (exp,) = toy_repo(tmp_path, {"default": "good", "1": "worse"}, "exp", max_rounds=1)
    env = {**os.environ, "SPML_CRASH_AT": "before-rollback@1"}  # decided, not yet archived
    crashed = subprocess.run([sys.executable, str(HELPERS), str(exp)], env=env, check=False,
                             capture_output=True)
    assert crashed.returncode == -signal.SIGKILL
    old = experiment(exp)
    (exp / "experiences.md").unlink()  # while no supervisor runs: a new ledger

    drive(exp, max_rounds=0)

    archived = old.state_dir / "generations" / old.generation / "experiences.md"
    assert [(r.round, r.verdict) for r in parse_experiences(archived.read_text()).rows] == \
        [(0, "committed"), (1, "rolled_back")]
    assert git(exp, "show", f"{old.attempt_ref(1)}:exp/params.yaml") == "x: -5.0"
    assert rows(exp) == [(0, "committed")]
    assert experiment(exp).generation != old.generation
