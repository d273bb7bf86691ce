"""Re-entry: one test per row of the table in `spml.toolkit.pipeline.reentry`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import write_marked_plan

from spml.protocols.experiences import Experiences
from spml.toolkit.pipeline.reentry import next_stage
from spml.toolkit.watchdog.context import ContextFile

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def with_design(exp: Path) -> Path:
    (exp / "plans").mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "design" / "good-design.md", exp / "plans" / "2026-12-05-x-design.md")
    return exp


def with_plan(exp: Path, done: tuple[int, ...] = (), conclude: bool = False) -> Path:
    write_marked_plan(exp, done, conclude)
    return exp


def test_nothing_then_a_design_then_a_plan(tmp_path):
    assert next_stage(tmp_path).stage == "brainstorm"
    assert next_stage(with_design(tmp_path)).stage == "plan"
    assert next_stage(with_plan(tmp_path)).stage == "develop"


def test_code_before_any_subtask_is_done_means_revise(tmp_path):
    exp = with_plan(with_design(tmp_path))
    (exp / "train.py").write_text("print('existing code')\n")
    assert next_stage(exp).stage == "revise"
    with_plan(exp, done=(1,))
    nxt = next_stage(exp)
    assert (nxt.stage, nxt.why) == ("develop", "2026-12-05-x.md: 2 subtask(s) not done")


def test_a_concluded_integration_hands_off(tmp_path):
    exp = with_plan(with_design(tmp_path), done=(1, 2, 3), conclude=True)
    assert next_stage(exp).stage == "handoff"


@pytest.mark.parametrize(("status", "stage"), [("not_started", "run"), ("running", "run"),
                                               ("completed", "verify"),
                                               ("target_reached", "verify")])
def test_a_loop_runs_until_its_ledger_says_it_finished(tmp_path, status, stage):
    exp = with_plan(with_design(tmp_path), done=(1, 2, 3), conclude=True)
    (exp / "autoresearch-protocol.md").write_text("---\n---\n")
    assert next_stage(exp).stage == "run"  # no ledger yet
    ledger = Experiences(metric="val_mse", max_rounds=3, status=status)
    (exp / "experiences.md").write_text(ledger.render())
    assert next_stage(exp).stage == stage


def test_a_watchdog_run_is_verified_once_completed(tmp_path):
    exp = tmp_path
    context = ContextFile(exp / "experiment-context.md")
    context.set_status("running")
    assert next_stage(exp).stage == "run"
    context.set_status("completed")
    nxt = next_stage(exp)
    assert nxt.stage == "verify"
    assert "spml verify --baseline A.csv" in nxt.why  # one run: its runs against a baseline's


def test_a_written_verification_is_done(tmp_path):
    (tmp_path / "verification.md").write_text("---\nverdict: effective\n---\n")
    assert next_stage(tmp_path).stage == "done"
