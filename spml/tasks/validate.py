"""Validation Pyramid tasks: L0 static checks (and their Prefect artifact)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from spml.toolkit.checks.engine import validate_static
from spml.toolkit.checks.report import render_json, render_markdown

L0_ARTIFACT_KEY = "validate-l0"


@task(name="L0 static checks", cache_policy=NO_CACHE)
def run_static_checks(paths: list[str], select: list[str] | None = None,
                      ignore: list[str] | None = None) -> dict[str, Any]:
    """Analyse ``paths``; publish the markdown report; return the JSON report."""
    report = validate_static([Path(p) for p in paths], select, ignore)
    create_markdown_artifact(key=L0_ARTIFACT_KEY, markdown=render_markdown(report),
                             description=f"L0 {report.verdict}: {report.critical} critical, "
                                         f"{report.warnings} warnings")
    return json.loads(render_json(report))
