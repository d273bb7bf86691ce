"""SPML's verification checklist: every item passes on clean evidence and fails on a fixture
built to break it (real git repositories, real plan files, real measurements)."""

from __future__ import annotations

import shutil
from pathlib import Path

import git as gitpython
import pytest
from helpers import git, write_marked_plan

from spml.protocols.review_criteria import ReviewCriteria
from spml.toolkit.loop.measurement import CheckResult, Measurement, SeedRecord
from spml.toolkit.verification.checklist import (
    anomalies,
    controls_held,
    core_separation,
    criteria_met,
    reproducible,
    vp_completed,
)
from spml.toolkit.verification.report import Report
from spml.toolkit.verification.statistics import Verification

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _plan(exp: Path, done: tuple[int, ...], conclude: bool) -> None:
    (exp / "plans").mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "design" / "good-design.md", exp / "plans" / "2026-12-05-x-design.md")
    write_marked_plan(exp, done, conclude)


def test_vp_completed_needs_every_subtask_done_and_the_integration_concluded(tmp_path):
    assert vp_completed(tmp_path).status == "unknown"  # a loop set up without the pipeline
    _plan(tmp_path, done=(1, 2), conclude=True)
    item = vp_completed(tmp_path)
    assert item.status == "fail"
    assert "Subtask 3 is todo" in item.detail
    _plan(tmp_path, done=(1, 2, 3), conclude=False)
    item = vp_completed(tmp_path)
    assert item.status == "fail"
    assert "has no conclusion" in item.detail
    _plan(tmp_path, done=(1, 2, 3), conclude=True)
    item = vp_completed(tmp_path)
    assert item.status == "pass"
    assert "3 subtasks done" in item.detail


@pytest.fixture
def repo(tmp_path: Path) -> tuple[gitpython.Repo, str]:
    """A project with an experiment in exp/ (params.yaml variable, train.py fixed); the
    baseline commit."""
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.py").write_text("import model\nprint('loss: 1.0')\n")
    (exp / "model.py").write_text("WIDTH = 8\n")
    (exp / "params.yaml").write_text("x: 0\n")
    (tmp_path / "README.md").write_text("project\n")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "baseline")
    repo = gitpython.Repo(tmp_path)
    return repo, repo.head.commit.hexsha


def _commit(repo: gitpython.Repo, files: dict[str, str]) -> str:
    root = Path(repo.working_dir)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "change")
    return repo.head.commit.hexsha


RULES = {"exp_rel": "exp", "variable": ["params.yaml"], "fixed": ["train.py"]}


def test_controls_held_passes_when_only_variable_files_changed(repo):
    repo_, base = repo
    chosen = _commit(repo_, {"exp/params.yaml": "x: 2\n"})
    item = controls_held(repo_, base, chosen, **RULES)
    assert item.status == "pass"
    assert "params.yaml" in item.detail


@pytest.mark.parametrize(("files", "reason"), [
    ({"exp/train.py": "print('loss: 0.0')\n"}, "modified fixed file train.py"),
    ({"exp/model.py": "WIDTH = 64\n"}, "changed file model.py outside variable files"),
    ({"README.md": "edited\n"}, "outside the experiment directory"),
    ({"exp/extra.py": "x = 1\n"}, "created file extra.py outside variable files"),
])
def test_controls_held_fails_on_any_other_change(repo, files, reason):
    repo_, base = repo
    chosen = _commit(repo_, {"exp/params.yaml": "x: 2\n", **files})
    item = controls_held(repo_, base, chosen, **RULES)
    assert item.status == "fail"
    assert reason in item.detail


def test_core_separation_fails_when_core_code_imports_tests(repo):
    repo_, base = repo
    assert core_separation(repo_, base, "exp").status == "pass"
    chosen = _commit(repo_, {"exp/tests/helpers.py": "def fake(): return 0\n",
                             "exp/tests/test_model.py": "import model\n",
                             "exp/model.py": "from tests.helpers import fake\nWIDTH = 8\n"})
    item = core_separation(repo_, chosen, "exp")
    assert item.status == "fail"
    assert "model.py:1 imports tests.helpers" in item.detail
    assert "test_model.py" not in item.detail  # tests may import core code


@pytest.mark.parametrize("source", ['import importlib\nimportlib.import_module("tests.helpers")\n',
                                    'helpers = __import__("tests.helpers")\n',
                                    "import test\n"])
def test_core_separation_sees_dynamic_imports_of_test_code(repo, source):
    repo_, _ = repo
    chosen = _commit(repo_, {"exp/model.py": source})
    assert core_separation(repo_, chosen, "exp").status == "fail"


ENVIRONMENT = {"git": {"head": "abc123", "uncommitted": []}, "python": "3.11.7",
               "torch": "2.13.0"}


def test_reproducible_needs_both_commits_on_a_ref_and_names_uncommitted_files(repo):
    repo_, base = repo
    chosen = _commit(repo_, {"exp/params.yaml": "x: 2\n"})
    commits = {"baseline": base, "chosen": chosen}
    item = reproducible(repo_, commits, ENVIRONMENT, [])
    assert item.status == "pass"
    assert "python 3.11.7, torch 2.13.0" in item.detail
    # the checkout's scratch files are named, not held against commits the runs never used
    dirty = {**ENVIRONMENT, "git": {"head": "abc123", "uncommitted": ["exp/notes.py",
                                                                      "exp/experiences.md"]}}
    item = reproducible(repo_, commits, dirty, ["exp/experiences.md"])
    assert item.status == "pass"
    assert item.detail.endswith("uncommitted in the checkout (not measured): exp/notes.py")
    # a chosen commit that no branch holds any more cannot be checked out by a clone
    git(Path(repo_.working_dir), "reset", "-q", "--hard", base)
    item = reproducible(repo_, commits, ENVIRONMENT, [])
    assert item.status == "fail"
    assert f"chosen commit {chosen[:12]} is on no branch or tag" in item.detail
    item = reproducible(repo_, {"baseline": base}, {**ENVIRONMENT, "python": None}, [])
    assert item.status == "fail"
    assert "the Python version is not recorded" in item.detail


def test_git_state_lists_unusual_paths_unquoted(tmp_path):
    from spml.toolkit.pipeline.context import git_state

    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "my exp").mkdir()
    (tmp_path / "my exp" / "实验.md").write_text("x\n")
    assert git_state(tmp_path)["uncommitted"] == ["my exp/实验.md"]


def _runs(**seed_fields) -> Measurement:
    seeds = (SeedRecord(seed=20000, metrics={"loss": 1.0}),
             SeedRecord(seed=20001, metrics={"loss": 1.1}, **seed_fields))
    return Measurement(tree="t", primary="loss", seeds=seeds)


@pytest.mark.parametrize(("runs", "found"), [
    (_runs(nonfinite_keys=["grad_norm"]), "chosen seed 20001: non-finite grad_norm"),
    (_runs(pattern_hits={"UserWarning": 3}), "3x forbidden pattern 'UserWarning'"),
    (_runs(custom={"hf": CheckResult(exit_code=1, cause="exit 1")}), "check hf failed"),
    (Measurement(tree="t", primary="loss", cause="train crashed: exit 1"),
     "chosen run failed: train crashed"),
])
def test_anomalies_fail_on_what_a_fresh_run_showed(runs, found):
    item = anomalies({"baseline": _runs(), "chosen": runs},
                     ["round 2 broke a rule (edited train.py)"])
    assert item.status == "fail"
    assert found in item.detail
    assert "loop history: round 2 broke a rule" in item.detail


def test_anomalies_pass_on_clean_runs_and_list_the_loop_history():
    item = anomalies({"baseline": _runs(), "chosen": _runs()}, [])
    assert (item.status, item.detail) == ("pass", "4 fresh run(s) clean; loop history: clean")
    same = _runs()  # a loop that kept nothing: one arm is both, counted once
    assert anomalies({"baseline": same, "chosen": same}, []).detail.startswith("2 fresh")
    item = anomalies({"baseline": _runs()}, [], ["the baseline arm's saved runs were rewritten"])
    assert item.status == "fail"
    assert item.detail.startswith("the baseline arm's saved runs were rewritten")


CRITERIA = ReviewCriteria.model_validate(
    {"metrics": [{"name": "loss", "op": "<=", "threshold": 1.2}],
     "performance": [{"name": "train_time_s", "op": "<=", "threshold": 60}]})


def test_review_criteria_on_the_chosen_arms_means():
    item = criteria_met(CRITERIA, _runs())
    assert item.status == "pass"
    assert "loss 1.05 (needs <= 1.2)" in item.detail
    strict = ReviewCriteria.model_validate(
        {"metrics": [{"name": "loss", "op": "<=", "threshold": 1.0}]})
    item = criteria_met(strict, _runs())
    assert (item.status, item.integrity) == ("fail", False)
    assert "unmet: loss 1.05 (needs <= 1)" in item.detail
    missing = ReviewCriteria.model_validate(
        {"metrics": [{"name": "acc", "op": ">=", "threshold": 0.9}]})
    assert "acc not measured" in criteria_met(missing, _runs()).detail
    assert criteria_met(None, _runs()).status == "unknown"


def _report(items: list) -> Report:
    stats = Verification("effective", 0.5, 0.2, 0.8, 5, 5, "Welch's t interval", 0.95, 0.0,
                         "the whole interval lies above the minimum effect 0")
    return Report(stats, "loss", "minimize", {"baseline": "a" * 40, "chosen": "b" * 40},
                  {"baseline": [(20000, 1.5)], "chosen": [(20000, 1.0)]}, items)


def test_a_failed_integrity_item_makes_an_effective_gain_inconclusive(repo):
    repo_, base = repo
    chosen = _commit(repo_, {"exp/train.py": "print('loss: 0.0')\n"})
    broken = controls_held(repo_, base, chosen, **RULES)
    report = _report([broken])
    assert report.verdict == "inconclusive"
    assert "checklist failed (controls held)" in report.reason
    front = report.front_matter()
    assert (front["verdict"], front["statistics"]) == ("inconclusive", "effective")


def test_unmet_review_criteria_leave_the_verdict_and_are_named(repo):
    strict = ReviewCriteria.model_validate(
        {"metrics": [{"name": "loss", "op": "<=", "threshold": 1.0}]})
    report = _report([criteria_met(strict, _runs())])
    assert report.verdict == "effective"
    assert "review criteria not met (unmet: loss 1.05" in report.reason
    text = report.markdown()
    assert text.startswith("---\nverdict: effective\nestimate: 0.5\ninterval:\n- 0.2\n- 0.8\n")
    assert "| baseline | aaaaaaaaaaaa | 20000 | 1.5 |" in text


def test_a_failed_run_is_named_with_its_arm_and_seed_and_no_estimate():
    from types import SimpleNamespace

    from spml.toolkit.verification.experiment import judge

    subject = SimpleNamespace(direction="minimize", min_effect=0.0, changed=True)
    broken = Measurement(tree="t", primary="loss", seeds=_runs().seeds[:1],
                         cause="train crashed: exit 1")
    stats = judge(subject, {"baseline": _runs(), "chosen": broken}, 0.95, "welch")
    assert stats.verdict == "inconclusive"
    assert stats.reason == ("the chosen arm's run on seed 20001 failed (train crashed: exit 1); "
                            "fix that before judging")
    assert stats.improvement is None
    assert stats.lines()[1] == "improvement: none (positive is better)"
