"""The `handoff` flow: a validated pipeline -> the document a loop runs from, and the loop.

Refuses to start until `develop` ticked the ``[INTEGRATION]`` subtask (the Validation Pyramid
passed). Runs SPML's pre-checks (`spml.toolkit.pipeline.handoff_checks`), recommends the watchdog
or ml-iteration by SPML's rule, writes the chosen loop's document (`spml.toolkit.pipeline.
handoff`), commits it (`experiment: handoff — <loop>`) and, with ``start``, runs the loop: as a
subflow here, or as a run of its deployment (``autoresearch/default`` ...) for a worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.states import Completed, Failed, State

from spml.errors import ProtocolError
from spml.protocols.design import DesignDoc
from spml.tasks.pipeline import FILE_TASK, RUN_TASK, commit_task, publish
from spml.toolkit.pipeline import handoff, stages
from spml.toolkit.pipeline.handoff_checks import HandoffReport, HandoffSettings, run_handoff_checks

DEPLOYMENTS = {"autoresearch": "autoresearch/default", "iteration": "ml-iteration/default",
               "watchdog": "watchdog/default"}


@task(name="handoff pre-checks", **RUN_TASK)
def checks_task(experiment_dir: str, settings: HandoffSettings) -> HandoffReport:
    report = run_handoff_checks(Path(experiment_dir), settings,
                                log_dir=Path(experiment_dir) / ".spml" / "handoff")
    publish("handoff-checks", f"# Handoff pre-checks\n\n```\n{report.text()}```\n",
            f"handoff checks {'PASS' if report.passed else 'FAIL'}")
    return report


@task(name="write the loop's documents", **FILE_TASK)
def write_task(experiment_dir: str, route: str, design: DesignDoc, settings: HandoffSettings,
               summary: list[str], researcher_command: str | None) -> list[str]:
    exp = Path(experiment_dir)
    if route == "autoresearch":
        paths = handoff.write_autoresearch(exp, design, settings.train_command)
    elif route == "iteration":
        paths = handoff.write_iteration(
            exp, design, settings.train_command, _plain_eval(settings),
            {"files": settings.fixed_files, "time_limit": settings.time_limit_s},
            _researcher(researcher_command))
    else:
        paths = handoff.write_watchdog(exp, design, {
            "train_command": settings.train_command, "checkpoint_glob": settings.checkpoint_glob,
            "log_file": _log_file(exp, settings)}, summary)
    return [str(p) for p in paths]


@flow(name="handoff")
def handoff_flow(experiment_dir: str,
                 to: Literal["watchdog", "iteration", "autoresearch"] | None = None,
                 start: bool = False, via_deployment: bool = False,
                 researcher_command: str | None = None) -> State[Any]:
    """Check, write and commit the handoff of ``experiment_dir``; with ``start``, run the loop.

    Args:
        to: the loop; default: Auto Research when the design has an ``autoresearch`` section,
            else SPML's recommendation (ml-iteration when a criterion is unmet in L1's numbers,
            the watchdog when all are met).
        start: run the loop after the handoff.
        via_deployment: start it as a run of its deployment (a worker picks it up) instead of
            a subflow here.
        researcher_command: ml-iteration's researcher (a coding agent command).
    """
    logger = get_run_logger()
    exp = Path(experiment_dir).resolve()
    stages.keep_logs_out_of_git(exp)
    design = stages.require_design(exp)[1]
    plan_path, plan = stages.require_plan(exp)
    integration = plan.integration
    if integration is None or integration.status != "done":
        raise ProtocolError(f"{plan_path.name}: the [INTEGRATION] subtask is not ticked, so the "
                            "Validation Pyramid has not passed; run `spml develop "
                            f"{experiment_dir}` first.")
    settings = handoff_settings(exp, design)
    report = checks_task(str(exp), settings)
    recommendation = handoff.recommend_route(design, report.l1.as_dict() if report.l1 else {})
    route = to or ("autoresearch" if design.autoresearch else recommendation.route)
    logger.info("recommended: %s (%s); handing off to %s", recommendation.route,
                "; ".join(recommendation.reasons), route)
    result: dict[str, Any] = {"route": route, "recommended": recommendation.route,
                              "reasons": recommendation.reasons, "checks": report.text()}
    if not report.passed:
        return Failed(message=f"handoff refused: {len(report.failures)} pre-check(s) failed",
                      data=result)
    summary = [f"design: {stages.find_design_name(exp)}", f"plan: {plan_path.name}",
               *report.text().splitlines()]
    result["written"] = write_task(str(exp), route, design, settings, summary,
                                   researcher_command)
    # The ledger is the loop's to write from now on: it stays out of git, as every loop's does.
    result["commit"] = commit_task(str(exp), f"experiment: handoff — {route}",
                                   (handoff.LEDGER_FILENAME,))
    if start:
        result["loop"] = _start(route, str(exp), via_deployment)
    return Completed(message=f"handed off to {route}", data=result)


def handoff_settings(exp: Path, design: DesignDoc) -> HandoffSettings:
    """The pre-checks' settings: L1's commands, the loop's fixed files and budget."""
    runtime = stages.runtime_table(exp) or {}
    train = runtime.get("train-command") or runtime.get("train_command")
    if not train:
        raise ProtocolError(f"{exp / 'pyproject.toml'}: [tool.spml.validate.runtime] needs "
                            "train-command (the handoff reuses L1's command mode).")
    auto = design.autoresearch or {}
    fixed = auto.get("fixed", {})
    scripts = [s for s in (handoff.script_of(str(train)),
                           handoff.script_of(str(runtime.get("eval-command") or ""))) if s]
    return HandoffSettings(
        train_command=str(train), eval_command=runtime.get("eval-command"),
        metric=runtime.get("metric"), fixed_files=list(fixed.get("files") or scripts),
        time_limit_s=float(fixed.get("time_limit") or design.validation_scope.training_volume),
        epoch_limit=fixed.get("epoch_limit"), max_steps=int(runtime.get("max-steps", 50)))


def _start(route: str, exp: str, via_deployment: bool) -> str:
    if via_deployment:
        from prefect.deployments import run_deployment

        run = run_deployment(DEPLOYMENTS[route], parameters={"experiment_dir": exp}, timeout=0)
        return f"flow run {run.id} of {DEPLOYMENTS[route]}"
    if route == "autoresearch":
        from spml.flows.autoresearch import autoresearch_flow as loop
    elif route == "iteration":
        from spml.flows.iteration import iteration_flow as loop
    else:
        from spml.flows.watchdog import watchdog_flow as loop
    state = loop(exp, return_state=True)
    return f"{state.name}: {state.message}"


def _plain_eval(settings: HandoffSettings) -> str:
    return (settings.eval_command or "").replace("{checkpoint}", "").strip()


def _researcher(command: str | None) -> dict[str, Any]:
    if not command:
        raise ProtocolError("ml-iteration needs a researcher: pass --researcher-command "
                            "'my-agent --prompt {prompt_file}'.")
    return {"kind": "command", "command": command}


def _log_file(exp: Path, settings: HandoffSettings) -> str:
    logs = sorted(exp.glob(settings.log_glob), key=lambda p: p.stat().st_mtime)
    logs = [p for p in logs if ".spml" not in p.relative_to(exp).parts]
    return logs[-1].relative_to(exp).as_posix() if logs else "outputs/train.log"
