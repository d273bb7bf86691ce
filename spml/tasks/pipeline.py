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

from spml.toolkit.git.checkout import commit_experiment
from spml.toolkit.pipeline import levels
from spml.toolkit.pipeline.brainstorm import DesignWritten, write_design
from spml.toolkit.pipeline.context import collect_context
from spml.toolkit.pipeline.develop import FixRequest, prompt_text, run_implementer
from spml.toolkit.pipeline.levels import LevelResult

FILE_TASK = {"cache_policy": NO_CACHE, "retries": 1, "retry_delay_seconds": 1}
RUN_TASK = {"cache_policy": NO_CACHE}


@task(name="collect the ML context", **FILE_TASK)
def collect_context_task(exp_dir: str) -> dict[str, Any]:
    """Git state, versions, GPUs, datasets, baselines."""
    return collect_context(Path(exp_dir))


@task(name="write the design doc", **FILE_TASK)
def write_design_task(exp_dir: str, answers: dict[str, Any], context: dict[str, Any],
                      source: str) -> DesignWritten:
    return write_design(Path(exp_dir), answers, context, date.today(), source)


@task(name="commit", **FILE_TASK)
def commit_task(exp_dir: str, message: str, leave_out: tuple[str, ...] = ()) -> str | None:
    """``git commit`` of the experiment directory (None: nothing changed)."""
    return commit_experiment(Path(exp_dir), message, leave_out)


@task(name="run the tests", task_run_name="Subtask {number}: tests", **RUN_TASK)
def tests_task(exp_dir: str, number: int, targets: list[str]) -> LevelResult:
    return levels.run_tests(Path(exp_dir), targets)


@task(name="L0 static checks", task_run_name="Subtask {number}: L0", **RUN_TASK)
def l0_task(exp_dir: str, number: int) -> LevelResult:
    result = levels.run_static(Path(exp_dir))
    publish("develop-l0", f"# L0 ({result.summary})\n\n```\n{result.report}\n```",
            f"L0 {'PASS' if result.passed else 'FAIL'}: {result.summary}")
    return result


@task(name="L1 runtime validation", task_run_name="Subtask {number}: L1", **RUN_TASK)
def l1_task(exp_dir: str, number: int, overrides: dict[str, Any] | None) -> LevelResult:
    log_dir = Path(exp_dir) / ".spml" / "develop" / f"l1-subtask-{number}"
    result = levels.run_runtime(Path(exp_dir), overrides, log_dir)
    publish("develop-l1", f"# L1 {result.summary}\n\n```\n{result.report}\n```",
            f"L1 {result.summary}")
    return result


@task(name="implementer", task_run_name="Subtask {request.subtask.number}: implementer "
      "({request.level}, attempt {request.attempt})", **RUN_TASK)
def implementer_task(command: str, exp_dir: str, request: FixRequest,
                     header: dict[str, str]) -> str:
    """Run the implementer; its outcome in words (a failed implementer is not fatal: the
    levels run again and count the failure)."""
    log_dir = Path(exp_dir) / ".spml" / "develop"
    result = run_implementer(command, Path(exp_dir), request, prompt_text(request, header),
                             log_dir)
    return result.describe()


def publish(key: str, markdown: str, description: str) -> None:
    """A markdown artifact; a server hiccup costs the artifact, never the stage."""
    try:
        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except Exception:  # noqa: BLE001 - publishing is best effort by design
        return
