"""Tasks of the `verification` flow, each one plain function of `spml.toolkit.verification`.

They run the project's code (the fresh runs) or touch git and files, so none is cached; the
runs never retry on their own (a retry would re-draw a failed seed until one passes), the
small file steps retry once.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spml.toolkit.loop.measurement import Measurement
from spml.toolkit.verification import experiment as verifying
from spml.toolkit.verification.checklist import Item
from spml.toolkit.verification.report import Report
from spml.toolkit.verification.subject import Subject, find_subject


@task(name="find what to verify", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def subject_task(experiment_dir: str) -> Subject:
    """The baseline and chosen commits, the metric and the minimum effect."""
    return find_subject(Path(experiment_dir))


@task(name="re-measure", task_run_name="re-measure the {side} on fresh seeds",
      cache_policy=NO_CACHE)
def measure_arm_task(subject: Subject, side: str, runs: int) -> Measurement:
    """``runs`` fresh-seed train+eval runs of one arm (saved run by run)."""
    return verifying.measure_arm(subject, side, runs)


@task(name="remove the scratch worktree", cache_policy=NO_CACHE)
def remove_bench_task(subject: Subject) -> None:
    """The fresh runs' worktree and branch, deleted."""
    verifying.remove_bench(subject)


@task(name="walk the checklist", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def checklist_task(subject: Subject, arms: dict[str, Measurement],
                   environment: dict[str, Any], tampered: list[str]) -> list[Item]:
    """SPML's checklist on the evidence."""
    return verifying.walk_checklist(subject, arms, environment, tampered)


@task(name="write verification.md", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def write_report_task(subject: Subject, report: Report) -> list[str]:
    """The report and its plot, beside the experiment's other documents."""
    return verifying.write_report(subject, report)


def report_artifact(subject: Subject, report: Report) -> str:
    """The report as a markdown artifact, its plot embedded (the UI has no file access)."""
    markdown = report.markdown()
    plot = subject.exp_dir / report.plot
    if plot.is_file():
        encoded = base64.b64encode(plot.read_bytes()).decode("ascii")
        markdown = markdown.replace(f"]({report.plot})", f"](data:image/png;base64,{encoded})")
    return markdown
