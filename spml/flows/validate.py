"""The `validate` flow: the Validation Pyramid's L0 static checks (deployment `validate/default`).

L0 findings that are critical stop the flow as Failed, so L1 (a separate stage) never spends GPU
time on code with a known implementation mistake.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from spml.tasks.validate import run_static_checks


@flow(name="validate")
def validate_flow(paths: list[str] | None = None, select: list[str] | None = None,
                  ignore: list[str] | None = None) -> State[Any]:
    """Run the L0 static checks on ``paths`` (files or folders; default: the working dir).

    Args:
        paths: what to analyse; relative paths resolve against the flow run's directory.
        select: check ids to run (default: every check, or [tool.spml.validate] select).
        ignore: check ids to skip.
    """
    report = run_static_checks(paths or ["."], select, ignore)
    headline = (f"L0 {report['verdict']}: {report['critical']} critical, "
                f"{report['warnings']} warnings in {len(report['files'])} files")
    get_run_logger().info(headline)
    if report["critical"] or report["verdict"] == "REQUEST_CHANGES":
        return Failed(message=headline, data=report)
    return Completed(message=headline, data=report)
