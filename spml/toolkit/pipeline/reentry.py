"""Re-entry: which stage comes next for an experiment directory (SPML §1.5, extended).

SPML's table looks at three things (a design doc, a plan, code); spml also reads how far the
plan, the handoff, the loop and verification got:

| state | next |
|---|---|
| `verification.md` written, committed, and judging the loop's best of now | `done` |
| a loop document, and its loop finished (ledger or watchdog status) | `verify` |
| a loop document, its loop not finished | `run` |
| the `[INTEGRATION]` subtask concluded, no loop document | `handoff` |
| no design | `brainstorm` |
| a design, no plan | `plan` |
| a design and a plan, a subtask ticked or no code yet | `develop` |
| a design, a plan, code, nothing ticked (code that predates the plan) | `revise` |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import git

from spml.errors import ProtocolError
from spml.protocols.design import find_design
from spml.protocols.plan import load_plan
from spml.toolkit.pipeline.planner import find_plan

Stage = Literal["brainstorm", "plan", "develop", "revise", "handoff", "run", "verify", "done"]
VERIFICATION_FILENAME = "verification.md"
LOOP_DOCUMENTS = ("autoresearch-protocol.md", "iteration-protocol.md", "experiment-context.md")
FINISHED_LEDGER = ("completed", "target_reached", "stopped")
FINISHED_WATCHDOG = ("completed",)


@dataclass(frozen=True)
class NextStage:
    """The next stage and why."""

    stage: Stage
    why: str


def next_stage(exp_dir: Path) -> NextStage:
    """What to run next in ``exp_dir`` (module doc)."""
    stale = ""
    if (exp_dir / VERIFICATION_FILENAME).is_file():
        stale = _stale_verification(exp_dir)
        if not stale:
            return NextStage("done", f"{VERIFICATION_FILENAME} is written and committed")
    loop = next((name for name in LOOP_DOCUMENTS if (exp_dir / name).is_file()), None)
    if loop is not None and stale:
        found = _loop_next(exp_dir, loop)
        return NextStage(found.stage, f"{stale}; {found.why}")
    if loop is not None:
        return _loop_next(exp_dir, loop)
    return _pipeline_next(exp_dir)


def _loop_next(exp_dir: Path, loop: str) -> NextStage:
    finished, state = _loop_state(exp_dir, loop)
    if finished and loop == "experiment-context.md":
        return NextStage("verify", f"{loop}: the watchdog's training finished ({state}); "
                                   "judge its runs against a baseline's runs with `spml "
                                   "verify --baseline A.csv --treatment B.csv ...`")
    if finished:
        return NextStage("verify", f"{loop}: the loop finished ({state}); verify its result "
                                   "(`spml experiment verify`)")
    return NextStage("run", f"{loop} is written and its loop is {state}")


def _pipeline_next(exp_dir: Path) -> NextStage:
    design = find_design(exp_dir)
    if design is None:
        return NextStage("brainstorm", "no design doc in plans/")
    plan_path = find_plan(exp_dir)
    if plan_path is None:
        return NextStage("plan", f"{design.name} has no plan yet")
    plan = load_plan(plan_path)
    integration = plan.integration
    if integration is not None and integration.status == "done" and integration.conclusion:
        return NextStage("handoff", "the [INTEGRATION] subtask is concluded and no loop "
                                    "document is written")
    ticked = [s for s in plan.subtasks if s.status == "done"]
    if ticked or not _has_code(exp_dir):
        left = len(plan.subtasks) - len(ticked)
        return NextStage("develop", f"{plan_path.name}: {left} subtask(s) not done")
    return NextStage("revise", "code exists but no subtask of the plan is done: revise the "
                               "design so it accounts for that code")


def _loop_state(exp_dir: Path, loop: str) -> tuple[bool, str]:
    if loop == "experiment-context.md":
        from spml.toolkit.watchdog.context import ContextFile

        state = ContextFile(exp_dir / loop).read_status().get("state", "not started")
        return state in FINISHED_WATCHDOG, state
    ledger = exp_dir / "experiences.md"
    if not ledger.is_file():
        return False, "not started"
    from spml.protocols.experiences import parse_experiences

    try:
        status = parse_experiences(ledger.read_text(encoding="utf-8")).status
    except ValueError:
        return False, "unreadable (experiences.md does not parse)"
    return status in FINISHED_LEDGER, status


def _has_code(exp_dir: Path) -> bool:
    return any(exp_dir.glob("*.py"))


def _stale_verification(exp_dir: Path) -> str:
    """Why the written `verification.md` does not settle the experiment ("" when it does): it
    was never committed (a verification interrupted before its commit), or it judged another
    commit than the loop's best now (the loop ran on afterwards)."""
    try:
        repo = git.Repo(exp_dir, search_parent_directories=True)
        # never committed (a person's later edits to a committed report are theirs to keep)
        report = (exp_dir / VERIFICATION_FILENAME).resolve()
        if not repo.git.ls_tree("HEAD", "--", str(report.relative_to(
                Path(repo.working_dir).resolve()))):
            return f"{VERIFICATION_FILENAME} is not committed (its verification was interrupted)"
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError):
        return ""
    judged = _judged_commit(exp_dir)
    best = _loop_best(exp_dir)
    if judged and best and judged != best:
        return (f"{VERIFICATION_FILENAME} judged {judged[:12]}, but the loop's best is now "
                f"{best[:12]}")
    return ""


def _judged_commit(exp_dir: Path) -> str:
    from spml.protocols.frontmatter import read_front_matter

    try:
        return str(read_front_matter(exp_dir / VERIFICATION_FILENAME).data.get(
            "chosen_commit") or "")
    except (ProtocolError, OSError):
        return ""


def _loop_best(exp_dir: Path) -> str:
    """The loop branch's HEAD ("" when there is no loop or it cannot be read)."""
    from spml.toolkit.loop.experiment import Experiment
    from spml.toolkit.verification.subject import loop_kind_in

    kind = loop_kind_in(exp_dir)
    if kind is None:
        return ""
    try:
        experiment = Experiment.locate(exp_dir, kind.protocol_filename)
        return git.Repo(experiment.repo_root).commit(experiment.branch(kind.name)).hexsha
    except Exception:  # noqa: BLE001 - no branch (never opened): nothing to compare with
        return ""
