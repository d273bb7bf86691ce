"""Tasks of the pipeline stages (design, plan, develop, handoff).

Each wraps one plain function of `spml.toolkit.pipeline` or `spml.protocols`. Every task
touches files, git or processes, so none is cached (`NO_CACHE`); the ones that only read or
write small files retry once (a transient lock or full disk), the ones that run the project's
code never retry on their own: the fix loop decides what happens after a failure.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from spml.protocols.design import DesignDoc
from spml.protocols.plan import load_plan
from spml.toolkit.files import write_atomic
from spml.toolkit.git.checkout import commit_paths
from spml.toolkit.pipeline import handoff, levels, stages
from spml.toolkit.pipeline.brainstorm import DesignWritten, Merge, write_design
from spml.toolkit.pipeline.context import collect_context
from spml.toolkit.pipeline.develop import FixRequest, prompt_text, run_implementer
from spml.toolkit.pipeline.handoff_checks import HandoffReport, HandoffSettings, run_handoff_checks
from spml.toolkit.pipeline.levels import LevelResult
from spml.toolkit.pipeline.planner import find_plan, new_plan_text, plan_filename, revise_plan


@task(name="collect the ML context", cache_policy=NO_CACHE,
      retries=1, retry_delay_seconds=1)
def collect_context_task(exp_dir: str) -> dict[str, Any]:
    """Git state, versions, GPUs, datasets, baselines."""
    return collect_context(Path(exp_dir))


@task(name="write the design doc", cache_policy=NO_CACHE,
      retries=1, retry_delay_seconds=1)
def write_design_task(exp_dir: str, answers: dict[str, Any], context: dict[str, Any],
                      source: str, merge: Merge) -> DesignWritten:
    return write_design(Path(exp_dir), answers, context, date.today(), source, merge)


@task(name="commit", cache_policy=NO_CACHE,
      retries=1, retry_delay_seconds=1)
def commit_task(exp_dir: str, message: str, paths: list[str]) -> str | None:
    """``git commit`` of ``paths`` (relative to the experiment dir; None: nothing changed)."""
    return commit_paths(Path(exp_dir), message, paths)


@task(name="run the tests", task_run_name="Subtask {number}: tests",
      cache_policy=NO_CACHE)
def tests_task(exp_dir: str, number: int, targets: list[str]) -> LevelResult:
    return levels.run_tests(Path(exp_dir), targets)


@task(name="L0 static checks", task_run_name="Subtask {number}: L0",
      cache_policy=NO_CACHE)
def l0_task(exp_dir: str, number: int) -> LevelResult:
    result = levels.run_static(Path(exp_dir))
    publish("develop-l0", f"# L0 ({result.summary})\n\n```\n{result.report}\n```",
            f"L0 {'PASS' if result.passed else 'FAIL'}: {result.summary}")
    return result


@task(name="L1 runtime validation", task_run_name="Subtask {number}: L1",
      cache_policy=NO_CACHE)
def l1_task(exp_dir: str, number: int, overrides: dict[str, Any] | None) -> LevelResult:
    log_dir = Path(exp_dir) / ".spml" / "develop" / f"l1-subtask-{number}"
    result = levels.run_runtime(Path(exp_dir), overrides, log_dir)
    publish("develop-l1", f"# L1 {result.summary}\n\n```\n{result.report}\n```",
            f"L1 {result.summary}")
    return result


@task(name="implementer", task_run_name="Subtask {request.subtask.number}: implementer "
      "({request.level}, attempt {request.attempt})", cache_policy=NO_CACHE)
def implementer_task(command: str, exp_dir: str, request: FixRequest,
                     header: dict[str, str], timeout_s: float) -> str:
    """Run the implementer; "" when it exited 0, else what went wrong (not fatal: the levels
    run again and count the failure, and the stuck message names it)."""
    log_dir = Path(exp_dir) / ".spml" / "develop"
    result = run_implementer(command, Path(exp_dir), request, prompt_text(request, header),
                             log_dir, timeout_s)
    if result.ok:
        return ""
    tail = result.stderr_tail(3).strip().replace("\n", " | ")
    return f"the implementer {result.describe()}" + (f": {tail}" if tail else "")


@task(name="record the conclusion", cache_policy=NO_CACHE,
      retries=1, retry_delay_seconds=1)
def record_task(experiment_dir: str, plan_path: str, number: int, conclusion: dict[str, str],
                done: bool) -> None:
    """Write the subtask's Conclusion (and tick it when done) in the plan, in place."""
    plan = load_plan(Path(plan_path)).set_conclusion(number, conclusion)
    if done:
        plan = plan.mark(number, "done")
    write_atomic(Path(plan_path), plan.render())


@task(name="write the plan", cache_policy=NO_CACHE,
      retries=1, retry_delay_seconds=1)
def write_plan_task(experiment_dir: str) -> dict[str, Any]:
    """Write a new plan or revise the existing one; what changed, and the text it replaced."""
    exp = Path(experiment_dir)
    design_path, design = stages.require_design(exp)
    runtime = stages.runtime_table(exp)
    label = stages.experiment_label(exp)
    existing = find_plan(exp)
    if existing is None:
        path = exp / "plans" / plan_filename(design_path)
        write_atomic(path, new_plan_text(exp, label, design, runtime))
        return {"plan": str(path), "revised": False, "changes": [], "topic": design.topic,
                "design": str(design_path), "previous": None}
    previous = existing.read_text(encoding="utf-8")
    old = stages.design_when_plan_was_committed(exp, existing, design_path) or design
    revised, changes = revise_plan(load_plan(existing), label, old, design, runtime)
    if changes:
        write_atomic(existing, revised.render())
    return {"plan": str(existing), "revised": True, "changes": changes, "topic": design.topic,
            "design": str(design_path), "previous": previous}


@task(name="drafter", cache_policy=NO_CACHE)
def drafter_task(command: str, experiment_dir: str, plan: str) -> str:
    """Let a coding agent rewrite the plan's prose (`{plan_file}`, `{design_file}`,
    `{workdir}`); the gate judges what it leaves."""
    return stages.run_drafter(command, Path(experiment_dir), Path(plan))


@task(name="handoff pre-checks", cache_policy=NO_CACHE)
def checks_task(experiment_dir: str, settings: HandoffSettings) -> HandoffReport:
    report = run_handoff_checks(Path(experiment_dir), settings,
                                log_dir=Path(experiment_dir) / ".spml" / "handoff")
    publish("handoff-checks", f"# Handoff pre-checks\n\n```\n{report.text()}```\n",
            f"handoff checks {'PASS' if report.passed else 'FAIL'}")
    return report


@task(name="write the loop's documents", cache_policy=NO_CACHE,
      retries=1, retry_delay_seconds=1)
def write_task(experiment_dir: str, route: str, design: DesignDoc, settings: HandoffSettings,
               summary: list[str], researcher_command: str | None) -> list[str]:
    exp = Path(experiment_dir)
    if route == "autoresearch":
        paths = handoff.write_autoresearch(exp, design, settings.train_command)
    elif route == "iteration":
        paths = handoff.write_iteration(
            exp, design, settings.train_command, handoff.plain_eval_command(settings),
            {"files": settings.fixed_files, "time_limit": settings.time_limit_s},
            handoff.researcher_spec(researcher_command))
    else:
        paths = handoff.write_watchdog(exp, design, {
            "train_command": settings.train_command, "checkpoint_glob": settings.checkpoint_glob,
            "log_file": handoff.newest_log(exp, settings)}, summary)
    return [str(p) for p in paths]


def publish(key: str, markdown: str, description: str) -> None:
    """A markdown artifact; a server hiccup costs the artifact, never the stage."""
    try:
        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except Exception:  # noqa: BLE001 - publishing is best effort by design
        return
