"""What the pipeline stages share: finding and checking their input documents.

A stage refuses to start when its input is missing or fails its check, and says which command
produces or fixes it (SPML's routing, §1.5, made a hard precondition).
"""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

from spml.errors import ProtocolError
from spml.protocols.design import DesignDoc, check_design, find_design, load_design
from spml.protocols.frontmatter import error_report
from spml.protocols.plan import PlanDoc, load_plan
from spml.protocols.plan_gate import check_plan
from spml.toolkit.pipeline.planner import find_plan
from spml.toolkit.process.runner import run_command, supervisor_path

DRAFTER_TIMEOUT_S = 1800.0


def require_design(exp_dir: Path) -> tuple[Path, DesignDoc]:
    """The experiment's design, checked.

    Raises:
        ProtocolError: there is none (run `spml design new`), or it fails `design check`.
    """
    path = find_design(exp_dir)
    if path is None:
        raise ProtocolError(f"{exp_dir} has no design doc (plans/*-design.md); write one first "
                            f"with `spml design new {exp_dir} --from brief.yaml`.")
    rows = check_design(path)
    if rows:
        raise ProtocolError(error_report(f"{path.name} fails `spml design check {path}`; fix "
                                         "it first", rows))
    return path, load_design(path)


def require_plan(exp_dir: Path) -> tuple[Path, PlanDoc]:
    """The experiment's plan, through the plan gate.

    Raises:
        ProtocolError: there is none (run `spml plan`), or it fails `plan check`.
    """
    path = find_plan(exp_dir)
    if path is None:
        raise ProtocolError(f"{exp_dir} has no plan (plans/*.md); write one first with "
                            f"`spml plan new {exp_dir}`.")
    plan = load_plan(path)
    rows = check_plan(plan)
    if rows:
        raise ProtocolError(gate_report(path, rows))
    return path, plan


def gate_report(path: Path, rows: list[str]) -> str:
    return error_report(f"{path.name} fails the plan gate (`spml plan check {path}`)", rows)


def runtime_table(exp_dir: Path) -> dict[str, Any] | None:
    """``[tool.spml.validate.runtime]`` of the experiment's pyproject.toml, if any."""
    pyproject = exp_dir / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{pyproject}: not valid TOML: {exc}") from None
    table = data.get("tool", {}).get("spml", {}).get("validate", {}).get("runtime")
    return table if isinstance(table, dict) else None


def experiment_label(exp_dir: Path) -> str:
    """The experiment directory relative to its repository's root (``.`` at the root)."""
    from spml.toolkit.git.setup import find_repo

    root = Path(find_repo(exp_dir).working_dir).resolve()
    relative = exp_dir.resolve().relative_to(root).as_posix()
    return relative or "."


def run_drafter(command: str, exp_dir: Path, plan: Path) -> str:
    """Run a plan drafter command in ``exp_dir``; its outcome in words."""
    design = find_design(exp_dir)
    values = {"plan_file": str(plan), "design_file": str(design or ""), "workdir": str(exp_dir)}
    try:
        filled = command.format(**{k: shlex.quote(v) for k, v in values.items()})
    except (KeyError, IndexError, ValueError) as exc:
        raise ProtocolError("drafter command may only use {plan_file}, {design_file} and "
                            f"{{workdir}}; problem: {exc}") from None
    result = run_command(filled, cwd=exp_dir, log_dir=exp_dir / ".spml" / "plan",
                         name="drafter", env=supervisor_path(), time_limit_s=DRAFTER_TIMEOUT_S)
    return result.describe()


def keep_logs_out_of_git(exp_dir: Path) -> None:
    """The stages' logs and prompts live in ``.spml/``: never part of a commit."""
    from spml.toolkit.git import ensure_excluded

    ensure_excluded(exp_dir, ".spml/")


def find_design_name(exp_dir: Path) -> str:
    """The design doc's file name (for summaries)."""
    path = find_design(exp_dir)
    return path.name if path else "(none)"
