"""Validation Pyramid tasks: L0 static checks and L1 runtime validation, with artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from spml.toolkit.checks.engine import validate_static
from spml.toolkit.checks.report import render_json, render_markdown

L0_ARTIFACT_KEY = "validate-l0"
L1_ARTIFACT_KEY = "validate-l1"


@task(name="L0 static checks", cache_policy=NO_CACHE)
def run_static_checks(paths: list[str], select: list[str] | None = None,
                      ignore: list[str] | None = None) -> dict[str, Any]:
    """Analyse ``paths``; publish the markdown report; return the JSON report."""
    report = validate_static([Path(p) for p in paths], select, ignore)
    create_markdown_artifact(key=L0_ARTIFACT_KEY, markdown=render_markdown(report),
                             description=f"L0 {report.verdict}: {report.critical} critical, "
                                         f"{report.warnings} warnings")
    return json.loads(render_json(report))


@task(name="L1 runtime validation", cache_policy=NO_CACHE)
def run_runtime_checks(project_dir: str, overrides: dict[str, Any] | None = None
                       ) -> dict[str, Any] | None:
    """Run L1 on ``project_dir``; publish the report; None when L1 is not configured."""
    from spml.toolkit.runtime.run import L1NotConfigured, load_runtime_settings, run_l1

    try:
        settings = load_runtime_settings(Path(project_dir), overrides)
    except L1NotConfigured as exc:
        get_run_logger().warning("L1 skipped: %s", exc)
        return None
    report = run_l1(Path(project_dir), settings)
    verdict = "PASS" if report.passed else "FAIL"
    create_markdown_artifact(key=L1_ARTIFACT_KEY, markdown=report.markdown(),
                             description=f"L1 {verdict}: {report.target}")
    return report.as_dict()
