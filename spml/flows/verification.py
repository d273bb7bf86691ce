"""The `verification` flow: is the loop's result real? (SPML §6, with statistics.)

Re-measures the loop's baseline commit and its chosen commit on fresh seeds (the loop's own
measurement machinery, in a scratch worktree, under the experiment's lock so no loop runs
meanwhile), judges the difference against the protocol's minimum effect, walks SPML's
checklist, writes `verification.md` + `verification.png`, commits them
(`experiment: verification — <verdict>`) and publishes the report as an artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from spml.tasks.pipeline import collect_context_task, commit_task, publish
from spml.tasks.verification import (
    checklist_task,
    measure_arm_task,
    remove_bench_task,
    report_artifact,
    subject_task,
    write_report_task,
)
from spml.toolkit.loop.experiment import hold_experiment
from spml.toolkit.verification import experiment as verifying
from spml.toolkit.verification.statistics import Method

ARTIFACT_KEY = "verification"


@flow(name="verification")
def verification_flow(experiment_dir: str, runs: int = verifying.DEFAULT_RUNS,
                      confidence: float = 0.95, method: Method = "welch") -> dict[str, Any]:
    """Verify the finished loop of ``experiment_dir``.

    Args:
        runs: fresh-seed runs of each arm (at least 2: one run has no noise estimate).
        confidence: two-sided confidence of the improvement's interval.
        method: ``welch`` (Welch's t interval) or ``bootstrap`` (BCa).
    """
    verifying.check_settings(runs, confidence, method)  # before minutes of runs
    logger = get_run_logger()
    exp = Path(experiment_dir).resolve()
    subject = subject_task(str(exp))
    with hold_experiment(exp, subject.session.kind.protocol_filename):
        verifying.start_afresh(subject)
        sides = verifying.SIDES if subject.changed else ("baseline",)
        arms = {side: measure_arm_task(subject, side, runs) for side in sides}
        tampered = verifying.guard_saved(subject, arms)
        remove_bench_task(subject)
    arms.setdefault("chosen", arms["baseline"])  # the loop kept nothing: one arm is both
    stats = verifying.judge(subject, arms, confidence, method)
    environment = collect_context_task(str(exp))
    items = checklist_task(subject, arms, environment, tampered)
    report = verifying.build_report(subject, arms, stats, items, environment)
    paths = write_report_task(subject, report)
    sha = commit_task(str(exp), f"experiment: verification — {report.verdict}", paths)
    publish(ARTIFACT_KEY, report_artifact(subject, report),
            f"verification: {report.verdict}")
    logger.info("verification: %s — %s", report.verdict, report.reason)
    return {"verdict": report.verdict, "reason": report.reason,
            "report": str(exp / paths[0]), "plot": str(exp / paths[1]), "commit": sha,
            "statistics": report.stats.lines(),
            "checklist": {item.name: item.status for item in items}}
