"""Batches of candidates on the local runner, driven without Prefect (`tests/helpers.py`):
K rounds against one incumbent at once, at most one kept, every other one archived.

Batches need the sandbox (each candidate may write its own worktree only), so the scripted
researcher's plan and log live in `tmp_path/researcher`, outside the repository."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
from fixtures.loop_steps.stepkit import make_experiment
from helpers import (
    attempt_ref,
    drive,
    git,
    iteration_experiment,
    iteration_protocol_fields,
    toy_protocol,
    toy_repo,
    write_iteration_protocol,
)
from optuna.trial import TrialState

from spml.errors import ProtocolError
from spml.protocols.autoresearch import AutoresearchProtocol
from spml.toolkit.loop.batch import (
    begin_batch,
    candidate_session,
    comply_batch,
    read_batch,
    research_candidate,
)
from spml.toolkit.loop.experiment import Experiment
from spml.toolkit.loop.ledger import read_journal, read_ledger
from spml.toolkit.loop.remote import RemoteJob, measure_remotely
from spml.toolkit.loop.researchers.optuna_search import STUDY_NAME
from spml.toolkit.loop.sandboxing import command_box
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.process.runner import run_command
from spml.toolkit.process.sandbox import unavailable_reason

BRANCH = "spml/autoresearch/exp"
TRAIN_S = 1.5


pytestmark = pytest.mark.skipif(bool(unavailable_reason()),
                                reason=f"no sandbox here: {unavailable_reason()}")


def outside(tmp_path: Path) -> Path:
    """The researcher's folder, outside the repository (the sandbox lets it write there)."""
    return tmp_path / "researcher"


def batch_repo(tmp_path: Path, plan: dict[str, str], **protocol) -> Path:
    [exp] = toy_repo(tmp_path, plan, "exp", plan_dir=outside(tmp_path),
                     parallel={"candidates": 4}, **protocol)
    return exp


def ledger(exp: Path):
    return read_ledger(Experiment.locate(exp, "autoresearch-protocol.md"))


def loop_commits(exp: Path) -> Counter:
    subjects = str(git(exp, "log", "--format=%s", BRANCH)).splitlines()
    found = (re.match(r"autoresearch: round (\d+) — ", s) for s in subjects)
    return Counter(int(m[1]) for m in found if m)


def spans(path: Path) -> dict[int, tuple[float, float]]:
    """Round -> (start, end) of its training run, as the toy training wrote them."""
    rows = (line.split() for line in path.read_text().splitlines())
    return {int(r[0]): (float(r[2]), float(r[3])) for r in rows}


def test_a_batch_of_four_trains_at_once_and_keeps_only_the_best(tmp_path: Path) -> None:
    log = outside(tmp_path) / "spans.txt"
    plan = {str(n): f"set:x={x},train_s={TRAIN_S},spans={log}"
            for n, x in ((1, 1.0), (2, 2.9), (3, 2.0), (4, -5.0))}
    exp = batch_repo(tmp_path, plan, max_rounds=4)
    drive(exp)
    rows = ledger(exp).rows
    assert [(r.round, r.verdict, r.extra.get("Batch") or None) for r in rows] == [
        (0, "committed", None), (1, "rolled_back", "1"), (2, "committed", "1"),
        (3, "rolled_back", "1"), (4, "rolled_back", "1")]
    assert "kept R2 of this batch instead (0.01 vs 4)" in rows[1].insight
    assert "kept R2 of this batch instead (0.01 vs 1)" in rows[3].insight
    assert "Batch" in ledger(exp).columns
    # One commit for the batch, on the baseline; the others kept as attempts.
    assert loop_commits(exp) == Counter({2: 1})
    assert git(exp, "show", f"{BRANCH}:exp/params.yaml").startswith("x: 2.9")
    for round_no in (1, 3, 4):
        assert git(exp, "show", f"{attempt_ref(exp, round_no)}:exp/params.yaml").startswith(
            f"x: {dict(((1, 1.0), (3, 2.0), (4, -5.0)))[round_no]}")
    # The four trainings overlapped: each started before any of them ended.
    trained = spans(log)
    assert sorted(trained) == [1, 2, 3, 4]
    assert max(start for start, _ in trained.values()) < min(end for _, end in trained.values())
    experiment = Experiment.locate(exp, "autoresearch-protocol.md")
    assert read_batch(experiment) is None
    assert read_journal(experiment) is None
    assert git(experiment.worktree_dir("autoresearch"), "status", "--porcelain") == ""


def test_batches_number_their_candidates_as_consecutive_rounds(tmp_path: Path) -> None:
    plan = {"1": "set:x=1.0", "2": "set:x=0.5", "3": "set:x=2.0", "4": "set:x=0.1",
            "5": "set:x=2.5", "6": "set:x=2.99"}
    exp = batch_repo(tmp_path, plan, max_rounds=6)
    drive(exp)
    rows = ledger(exp).rows
    assert [(r.round, r.extra.get("Batch")) for r in rows[1:]] == [
        (1, "1"), (2, "1"), (3, "1"), (4, "1"), (5, "2"), (6, "2")]
    assert loop_commits(exp) == Counter({3: 1, 6: 1})
    # The second batch was judged against the first batch's winner.
    assert "improved on best 1" in rows[6].insight


def test_a_failing_candidate_does_not_affect_its_siblings(tmp_path: Path) -> None:
    plan = {"1": "crash", "2": "edit_fixed", "3": "set:x=2.5", "4": "sleep"}
    exp = batch_repo(tmp_path, plan, max_rounds=4, researcher={"timeout": 3})
    drive(exp)
    rows = {r.round: r for r in ledger(exp).rows}
    assert rows[1].verdict == "rolled_back"
    assert "exit 3" in rows[1].insight
    assert rows[2].compliance == "fail"
    assert "evaluate.py" in rows[2].insight
    assert rows[4].verdict == "rolled_back"
    assert "timed out" in rows[4].insight
    assert rows[3].verdict == "committed"
    assert loop_commits(exp) == Counter({3: 1})
    assert git(exp, "rev-parse", f"{BRANCH}~1") == git(exp, "rev-parse", "main")
    assert git(exp, "diff", "--quiet", "main", BRANCH, "--", "exp/evaluate.py",
               check=False) == 0


def test_a_candidate_cannot_move_the_loop_branch(tmp_path: Path) -> None:
    # The sandbox keeps the repository's refs read-only to the researcher: the attempt fails
    # that candidate alone, and its siblings go on.
    plan = {"1": "set:x=2.5", "2": "move_loop_branch", "3": "set:x=2.9", "4": "worse"}
    exp = batch_repo(tmp_path, plan, max_rounds=4)
    drive(exp)
    rows = {r.round: r for r in ledger(exp).rows}
    assert rows[2].verdict == "rolled_back"
    assert "researcher crashed" in rows[2].insight
    assert rows[3].verdict == "committed"
    assert git(exp, "rev-parse", f"{BRANCH}~1") == git(exp, "rev-parse", "main")


def begun(tmp_path: Path, plan: dict[str, str]) -> tuple[Path, Any, tuple]:
    """A batch of four begun and researched, not yet checked (what comply_batch sees)."""
    exp = batch_repo(tmp_path, plan, max_rounds=4)
    drive(exp, max_rounds=0)  # the baseline
    session = replace(LoopSession.load(exp), max_rounds_override=4)
    plans = begin_batch(session, 1)
    for plan_ in plans:
        research_candidate(session, plan_)
    return exp, session, plans


def test_a_changed_supervisor_file_fails_every_candidate(tmp_path: Path) -> None:
    # Unconfined commands could write it; whichever wrote it, no candidate may be kept.
    exp, session, plans = begun(tmp_path, {"default": "set:x=2.5"})
    path = session.experiment.state_dir / "session.json"
    original = path.read_bytes()
    path.write_bytes(original + b" ")
    checked = comply_batch(session, plans)
    assert [[v.reason for v in found] for found in checked] == [
        ["modified supervisor file session.json (restored)"]] * 4
    assert path.read_bytes() == original


def test_a_moved_sibling_branch_fails_every_candidate(tmp_path: Path) -> None:
    exp, session, plans = begun(tmp_path, {"default": "set:x=2.5"})
    branch = session.experiment.candidate_branch("autoresearch", 0)
    git(exp, "update-ref", f"refs/heads/{branch}", git(exp, "rev-parse", "main~0"))
    forged = git(exp, "commit-tree", "main^{tree}", "-p", "main", "-m", "forged")
    git(exp, "update-ref", f"refs/heads/{branch}", forged)
    owner, *siblings = comply_batch(session, plans)
    assert any(v.reason.startswith("moved HEAD") for v in owner)
    for found in siblings:  # a sibling's branch moved: not pinned on its owner alone
        assert any(f"moved ref refs/heads/{branch}" in v.reason for v in found), found


def test_a_batch_needs_the_sandbox(tmp_path: Path) -> None:
    exp = batch_repo(tmp_path, {}, max_rounds=4, sandbox={"mode": "off"})
    with pytest.raises(ProtocolError, match=r"parallel.candidates 4: candidates that run at "
                                            r"once must be kept out of each other's worktrees"):
        drive(exp)


def test_a_batch_refuses_a_writable_grant_over_the_repository(tmp_path: Path) -> None:
    [exp] = toy_repo(tmp_path, {}, "exp", parallel={"candidates": 2})  # grants tmp_path
    with pytest.raises(ProtocolError, match=r"sandbox.writable .* overlaps the repository's "
                                            r"git directory"):
        drive(exp)


@pytest.mark.parametrize("inside", ["exp", "exp/.spml", "."])
def test_a_batch_refuses_a_writable_grant_inside_the_checkout(tmp_path: Path,
                                                              inside: str) -> None:
    # The state folder, the ledger or the experiment: a candidate's training could rewrite a
    # sibling's logs there.
    repo = tmp_path / "repo"
    [exp] = toy_repo(tmp_path, {}, "exp", plan_dir=outside(tmp_path),
                     parallel={"candidates": 2},
                     sandbox={"writable": [str(outside(tmp_path)), str(repo / inside)]})
    with pytest.raises(ProtocolError, match=r"overlaps the repository's (checkout|git dir)"):
        drive(exp)


def test_a_candidate_cannot_read_its_siblings_work(tmp_path: Path) -> None:
    # R1 tries to copy R2's params.yaml (and R2's strategy) into its own worktree.
    exp, session, plans = begun(tmp_path, {"2": "set:x=2.77", "default": "set:x=1.0"})
    candidate = candidate_session(session, plans[0])
    assert candidate.sealed_extra == (
        session.experiment.candidate_worktree_dir("autoresearch", 1),
        session.experiment.candidate_worktree_dir("autoresearch", 2),
        session.experiment.candidate_worktree_dir("autoresearch", 3),
        session.experiment.round_dir(2), session.experiment.round_dir(3),
        session.experiment.round_dir(4))
    sibling = session.experiment.candidate_worktree_dir("autoresearch", 1) / "exp"
    assert (sibling / "params.yaml").read_text() == "x: 2.77\n"  # there, to the supervisor
    with command_box(candidate, candidate.workspace.path) as box:
        done = run_command(f"cat {sibling / 'params.yaml'}; ls {sibling}", cwd=candidate.workdir,
                           log_dir=tmp_path / "logs", name="peek", confine=box,
                           time_limit_s=30)
    seen = done.stdout_text()
    assert "2.77" not in seen, seen
    assert "train.py" not in seen, seen


@pytest.mark.parametrize("candidates", [1, 4])
def test_the_batch_budget_never_runs_past_max_rounds(tmp_path: Path, candidates: int) -> None:
    [exp] = toy_repo(tmp_path, {}, "exp", max_rounds=2, plan_dir=outside(tmp_path),
                     parallel={"candidates": candidates})
    drive(exp)
    assert [r.round for r in ledger(exp).rows] == [0, 1, 2]


HELPERS = Path(__file__).parents[2] / "helpers.py"
WINNER_PLAN = {"1": "set:x=1.0", "2": "set:x=2.9", "3": "set:x=2.0", "4": "worse"}


def supervise(exp: Path, crash_at: str = "") -> int:
    """The Prefect-free supervisor (`tests/helpers.py`) as a process; its exit code."""
    env = {**os.environ, "SPML_CRASH_AT": crash_at}
    done = subprocess.run([sys.executable, str(HELPERS), str(exp)], env=env, timeout=180,
                          capture_output=True, text=True)
    if done.returncode not in (0, -signal.SIGKILL):
        print(done.stdout, done.stderr)
    return done.returncode


def researcher_runs(tmp_path: Path) -> Counter:
    log = (outside(tmp_path) / "briefs.log").read_text()
    return Counter(int(n) for n in re.findall(r"^=== round (\d+)$", log, flags=re.MULTILINE))


@pytest.mark.parametrize(("crash_at", "redone"), [
    ("batch-begun@1", None),         # journal written, no candidate set up yet
    ("after-measure@3", True),       # one candidate measured, its siblings still training
    ("batch-decided@1", False),      # every row decided and journaled, nothing settled
    ("batch-archived@3", False),     # a loser archived as its attempt, not journaled
    ("before-rollback@4", False),    # a loser's rollback journaled
    ("batch-loaded@2", False),       # the winner's files in the loop's worktree
    ("before-commit@2", False),      # the winner's commit journaled, not made
    ("after-commit@2", False),       # the winner committed, its row not written
    ("after-ledger@2", False),       # the winner's row written, the batch not cleared
])
def test_kill_9_anywhere_in_a_batch_resumes_exactly_once(tmp_path: Path, crash_at: str,
                                                         redone: bool | None) -> None:
    exp = batch_repo(tmp_path, WINNER_PLAN, max_rounds=4)
    assert supervise(exp, crash_at) == -signal.SIGKILL
    assert supervise(exp) == 0
    rows = ledger(exp).rows
    assert [(r.round, r.verdict) for r in rows] == [
        (0, "committed"), (1, "rolled_back"), (2, "committed"), (3, "rolled_back"),
        (4, "rolled_back")]
    assert ledger(exp).status == "completed"
    assert loop_commits(exp) == Counter({2: 1})
    assert git(exp, "rev-parse", f"{BRANCH}~1") == git(exp, "rev-parse", "main")
    for round_no in (1, 3, 4):
        assert git(exp, "rev-parse", "--verify", "-q", attempt_ref(exp, round_no),
                   check=False) == 0
    for round_no, x in ((1, "1.0"), (3, "2.0"), (4, "-5.0")):  # each its own candidate's code
        assert git(exp, "show", f"{attempt_ref(exp, round_no)}:exp/params.yaml").startswith(
            f"x: {x}")
    experiment = Experiment.locate(exp, "autoresearch-protocol.md")
    assert read_batch(experiment) is None
    assert read_journal(experiment) is None
    assert git(experiment.worktree_dir("autoresearch"), "status", "--porcelain") == ""
    # A batch killed before it was decided is run again; one decided is only settled.
    assert researcher_runs(tmp_path) == Counter(
        {n: 2 if redone else 1 for n in (1, 2, 3, 4)})
    redone = bool(redone)
    discarded = sorted(p.name for p in experiment.round_dir(1).parent.glob("*.discarded"))
    assert discarded == (["0001.discarded", "0002.discarded", "0003.discarded",
                          "0004.discarded"] if redone else [])
    # No training of the killed supervisor outlives it.
    assert not list(experiment.state_dir.glob("*.pid"))



def test_a_persons_edit_before_a_resume_never_becomes_a_losers_attempt(
        tmp_path: Path) -> None:
    """Killed once R3 (a loser) was archived and its rollback journaled; a person edits the
    loop's worktree before resuming. R3's attempt keeps R3's code (review finding: the
    recovery archived the loop's worktree, the person's edit without R3's change)."""
    exp = batch_repo(tmp_path, WINNER_PLAN, max_rounds=4)
    assert supervise(exp, "before-rollback@3") == -signal.SIGKILL
    experiment = Experiment.locate(exp, "autoresearch-protocol.md")
    train = experiment.worktree_dir("autoresearch") / "exp" / "train.py"
    train.write_text(train.read_text() + "\n# a person's edit\n")
    assert supervise(exp) == 0
    assert git(exp, "show", f"{attempt_ref(exp, 3)}:exp/params.yaml").startswith("x: 2.0")
    assert "a person's edit" not in git(exp, "show", f"{attempt_ref(exp, 3)}:exp/train.py")
    assert [(r.round, r.verdict) for r in ledger(exp).rows][3] == (3, "rolled_back")
    assert git(experiment.worktree_dir("autoresearch"), "status", "--porcelain") == ""

def test_optuna_asks_a_batch_of_distinct_trials_and_tells_each_one(tmp_path: Path) -> None:
    optuna_researcher = {"kind": "optuna", "params_file": "params.yaml", "sampler": "tpe",
                         "seed": 3, "startup_trials": 2,
                         "space": {"x": {"type": "float", "low": -5.0, "high": 5.0}}}
    exp = make_experiment(tmp_path, max_rounds=8, researcher=optuna_researcher,
                          parallel={"candidates": 4}, sandbox={"writable": []})
    drive(exp)
    experiment = Experiment.locate(exp, "autoresearch-protocol.md")
    study = optuna.load_study(study_name=STUDY_NAME,
                              storage=f"sqlite:///{experiment.state_dir / 'optuna.db'}")
    trials = [t for t in study.trials if t.user_attrs.get("round", 0) > 0]
    assert sorted(t.user_attrs["round"] for t in trials) == list(range(1, 9))
    # Every trial of a batch was told its own value: none failed for running beside another.
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    for first in (1, 5):
        batch = [t.params["x"] for t in trials if first <= t.user_attrs["round"] < first + 4]
        assert len(set(batch)) == 4, batch
    rows = ledger(exp).rows
    assert [r.extra.get("Batch") for r in rows[1:]] == ["1"] * 4 + ["2"] * 4
    assert sum(r.verdict == "committed" for r in rows[1:]) <= 2


def test_an_iteration_batch_keeps_the_candidate_with_most_criteria_passing(
        tmp_path: Path) -> None:
    plan = {"1": {"acc": 0.85}, "2": {"acc": 0.95, "log_grad_norm": True},
            "3": {"acc": 0.95}, "4": {"nan": True}}
    exp = iteration_experiment(tmp_path, plan, max_rounds=4)
    fields = iteration_protocol_fields(tmp_path, max_rounds=4)
    del fields["review_criteria"]["performance"]
    # The researcher's plan and log outside the repository: the sandbox's writable folder.
    mine = outside(tmp_path)
    mine.mkdir()
    (mine / "plan.json").write_text(json.dumps(plan))
    fields["researcher"]["command"] = fields["researcher"]["command"].replace(
        str(tmp_path / "plan.json"), str(mine / "plan.json")).replace(
        str(tmp_path / "researcher-runs.txt"), str(mine / "researcher-runs.txt"))
    fields["sandbox"] = {"writable": [str(mine)]}
    write_iteration_protocol(exp, {**fields, "parallel": {"candidates": 4}})
    git(exp, "commit", "-qam", "four candidates at once")
    drive(exp, kind="ml-iteration")
    rows = read_ledger(Experiment.locate(exp, "iteration-protocol.md")).rows
    verdicts = {r.round: r.verdict for r in rows}
    assert verdicts == {0: "committed", 1: "rolled_back", 2: "committed", 3: "rolled_back",
                        4: "rolled_back"}
    assert "kept R2 of this batch instead (more criteria passing)" in rows[3].insight
    assert "regressed" in rows[4].insight
    branch = "spml/ml-iteration/exp"
    assert json.loads(git(exp, "show", f"{branch}:exp/config.json"))["log_grad_norm"] is True
    assert read_ledger(Experiment.locate(exp, "iteration-protocol.md")).status == \
        "target_reached"


def test_each_candidate_trains_on_its_own_gpu_slice(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU here: CUDA_VISIBLE_DEVICES stands for the GPUs the supervisor may hand out.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    log = outside(tmp_path) / "spans.txt"
    plan = {"1": f"set:x=1.0,spans={log}", "2": f"set:x=2.0,spans={log}"}
    [exp] = toy_repo(tmp_path, plan, "exp", max_rounds=2, plan_dir=outside(tmp_path),
                     parallel={"candidates": 2, "gpus_per_candidate": 2})
    drive(exp)
    seen = {int(r[0]): r[5] for r in (line.split() for line in log.read_text().splitlines())}
    assert seen == {1: "4,5", 2: "6,7"}


def test_too_few_gpus_for_the_batch_is_a_clear_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    [exp] = toy_repo(tmp_path, {}, "exp", max_rounds=2, plan_dir=outside(tmp_path),
                     parallel={"candidates": 2, "gpus_per_candidate": 2})
    with pytest.raises(ProtocolError, match=r"2 candidates x 2 GPU\(s\) need 4 GPUs but this "
                                            r"machine shows 3 \(0, 1, 2\)"):
        drive(exp)
    # Refused when the loop opens, before the baseline ran: nothing to clean up.
    experiment = Experiment.locate(exp, "autoresearch-protocol.md")
    assert read_ledger(experiment) is None
    assert read_batch(experiment) is None


def test_a_dask_worker_that_cannot_confine_refuses_the_candidate(tmp_path: Path) -> None:
    fields = toy_protocol(outside(tmp_path) / "plan.json", sandbox={"mode": "off"})
    protocol = AutoresearchProtocol.model_validate(fields).model_dump(mode="json")
    job = RemoteJob(git_remote=str(tmp_path / "nowhere"), ref="refs/spml/candidates/x/1",
                    commit="0" * 40, round_no=1, base="0" * 40, batch=(1, 2),
                    kind="autoresearch", name="exp", exp_rel="exp", protocol=protocol)
    with pytest.raises(ProtocolError, match=r"cannot confine the candidate's commands"):
        measure_remotely(job, scratch=tmp_path)
    assert not list(tmp_path.glob("spml-candidate-*"))  # refused before anything was fetched
