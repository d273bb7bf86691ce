"""`find_incumbent`: the newest kept round's measurement of HEAD's tree, on real git repos."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.loop_steps.stepkit import (
    experiment,
    full_round,
    load,
    make_experiment,
    open_and_baseline,
    worktree,
)
from helpers import git, iteration_experiment

from spml.toolkit.loop.begin import begin_round
from spml.toolkit.loop.incumbent import find_incumbent
from spml.toolkit.loop.kind import ITERATION
from spml.toolkit.loop.lifecycle import open_loop
from spml.toolkit.loop.measure import measure
from spml.toolkit.loop.measurement import (
    Measurement,
    SeedRecord,
    ViolationRecord,
    load_measurement,
    save_measurement,
)
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.loop.settle import decide, settle


def hand_measured_round(exp: Path, round_no: int, loss: float) -> str:
    """Round ``round_no`` with no change to the code, 'measured' at ``loss``; its verdict."""
    session, plan = begin_round(load(exp), round_no)
    measured = Measurement(round=round_no, tree=session.workspace.head_tree(), primary="loss",
                           seeds=(SeedRecord(seed=0, metrics={"loss": loss}),))
    save_measurement(experiment(exp).round_dir(round_no), measured)
    return settle(session, plan, decide(session, plan, None, [], measured)).row.verdict


def manual_commit(exp: Path, params: str) -> None:
    """A person commits on the loop branch, in the loop's worktree."""
    (worktree(exp) / "exp" / "params.yaml").write_text(params)
    git(worktree(exp), "commit", "-qam", "manual change")


def test_the_kept_round_whose_tree_is_head(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"1": "good", "2": "worse"})
    open_and_baseline(exp)
    baseline = find_incumbent(load(exp))
    assert baseline is not None
    assert (baseline.round, baseline.source, baseline.mean) == (0, "measured", 9.0)

    full_round(exp, 1)  # committed, loss 1
    full_round(exp, 2)  # rolled back, loss 64

    incumbent = find_incumbent(load(exp))
    assert incumbent is not None
    assert incumbent.round == 1
    assert incumbent.tree == load(exp).workspace.head_tree()
    assert incumbent.mean == pytest.approx(1.0)
    assert incumbent.source == "measured"


def test_every_run_of_heads_tree_is_pooled_and_rule_breaking_ones_never_are(
        tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    open_and_baseline(exp)  # loss 9 on the base tree
    assert hand_measured_round(exp, 1, 5.0) == "committed"  # an empty commit: same tree
    assert hand_measured_round(exp, 2, 100.0) == "rolled_back"  # same tree, not kept

    # Three runs of the same code, whichever round made them: the incumbent is all of them.
    incumbent = find_incumbent(load(exp))
    assert incumbent is not None
    assert (incumbent.round, incumbent.values) == (2, (9.0, 5.0, 100.0))
    assert incumbent.mean == pytest.approx(38.0)

    # A run that broke the rules (a tampered file found while measuring) is no evidence.
    broken = load_measurement(experiment(exp).round_dir(2))
    assert broken is not None
    save_measurement(experiment(exp).round_dir(2), broken.model_copy(update={
        "violations": (ViolationRecord(path="evaluate.py", reason="modified"),)}))
    pooled = find_incumbent(load(exp))
    assert pooled is not None
    assert (pooled.round, pooled.values) == (1, (9.0, 5.0))


def test_head_never_measured_after_a_revert_to_measured_code_finds_that_round(
        tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"1": "good", "2": "good"})
    open_and_baseline(exp)
    full_round(exp, 1)  # x = 2.0
    full_round(exp, 2)  # x = 2.333...
    manual_commit(exp, "x: 2.0\n")  # back to round 1's code, as a new commit

    incumbent = find_incumbent(load(exp))

    assert incumbent is not None
    assert (incumbent.round, incumbent.mean) == (1, 1.0)


def test_no_incumbent_when_heads_tree_was_never_measured(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"1": "good"})
    open_and_baseline(exp)
    full_round(exp, 1)
    manual_commit(exp, "x: 2.75\n")

    assert find_incumbent(load(exp)) is None


def test_no_incumbent_for_ml_iteration_when_heads_tree_was_never_measured(
        tmp_path: Path) -> None:
    exp = iteration_experiment(tmp_path, plan={})
    open_loop(str(exp), kind=ITERATION)
    session, plan = begin_round(LoopSession.load(exp, ITERATION), 0)
    settle(session, plan, decide(session, plan, None, [], measure(session, plan)))
    assert find_incumbent(LoopSession.load(exp, ITERATION)).round == 0

    work = LoopSession.load(exp, ITERATION).workdir
    (work / "train.py").write_text((work / "train.py").read_text() + "\n# manual\n")
    git(work, "commit", "-qam", "manual change")

    assert find_incumbent(LoopSession.load(exp, ITERATION)) is None


def test_the_ledger_stands_in_when_the_measurement_files_are_lost(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, plan={"1": "good", "2": "worse"})
    open_and_baseline(exp)
    full_round(exp, 1)
    full_round(exp, 2)
    for path in (experiment(exp).state_dir / "rounds").glob("*/measurement.json"):
        path.unlink()

    incumbent = find_incumbent(load(exp))

    assert incumbent is not None
    assert incumbent.source == "ledger"
    assert incumbent.round == 1
    assert incumbent.tree is None
    assert incumbent.mean == pytest.approx(1.0)
    assert incumbent.primary == "loss"


def test_no_incumbent_before_the_baseline(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    open_loop(str(exp))

    assert find_incumbent(load(exp)) is None
