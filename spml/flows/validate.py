"""The `validate` flow: the Validation Pyramid, L0 then L1 (deployment `validate/default`).

L0's static checks run first; a critical finding fails the flow run and L1 is refused, so no
GPU time goes to code with a known implementation mistake. L1 then runs the pipeline for a
limited time when the project configures it ([tool.spml.validate.runtime]).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from spml.tasks.validate import run_runtime_checks, run_static_checks


@flow(name="validate")
def validate_flow(paths: list[str] | None = None, select: list[str] | None = None,
                  ignore: list[str] | None = None, runtime: dict[str, Any] | None = None,
                  run_l1: bool = True) -> State[Any]:
    """L0 on ``paths`` (files or folders; default: the working dir), then L1 on the first.

    Args:
        paths: what to analyse; relative paths resolve against the flow run's directory.
        select: check ids to run (default: every check, or [tool.spml.validate] select).
        ignore: check ids to skip.
        runtime: L1 settings that override [tool.spml.validate.runtime] (e.g. max_steps).
        run_l1: False runs L0 only.
    """
    paths = paths or ["."]
    logger = get_run_logger()
    static = run_static_checks(paths, select, ignore)
    headline = (f"L0 {static['verdict']}: {static['critical']} critical, "
                f"{static['warnings']} warnings in {len(static['files'])} files")
    logger.info(headline)
    if static["critical"] or static["verdict"] == "REQUEST_CHANGES":
        return Failed(message=f"{headline}; L1 refused", data={"static": static})
    dynamic = run_runtime_checks(paths[0], runtime) if run_l1 else None
    result = {"static": static, "runtime": dynamic}
    if dynamic is None:
        return Completed(message=f"{headline}; L1 not run", data=result)
    failed = next((s for s in dynamic["stages"] if s["status"] == "FAIL"), None)
    if not dynamic["passed"]:
        where = f" at {failed['name']}: {failed['summary']}" if failed else ""
        return Failed(message=f"{headline}; L1 FAIL{where}", data=result)
    return Completed(message=f"{headline}; L1 PASS", data=result)
