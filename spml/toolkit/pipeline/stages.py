"""What the pipeline stages share: finding and checking their input documents.

A stage refuses to start when its input is missing or fails its check, and says which command
produces or fixes it (SPML's routing, §1.5, made a hard precondition).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from spml.errors import ProtocolError
from spml.protocols.design import DesignDoc, check_design, find_design, load_design
from spml.protocols.frontmatter import error_report
from spml.protocols.plan import PlanDoc, Subtask, load_plan
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
    """``[tool.spml.validate.runtime]`` as L1 reads it (the nearest pyproject.toml; keys by
    their alias, ``train-command``, ``max-steps``), if there is one."""
    from spml.toolkit.checks.config import find_pyproject, load_config
    from spml.toolkit.runtime.run import by_alias

    config, _ = load_config(find_pyproject(exp_dir))
    return by_alias(config.runtime) if config.runtime else None


def experiment_label(exp_dir: Path) -> str:
    """The experiment directory relative to its repository's root (``.`` at the root)."""
    from spml.toolkit.git.setup import find_repo

    root = Path(find_repo(exp_dir).working_dir).resolve()
    relative = exp_dir.resolve().relative_to(root).as_posix()
    return relative or "."


def check_drafter_command(command: str) -> str:
    """The command, if its placeholders are known (else a ProtocolError naming them)."""
    try:
        command.format(plan_file="", design_file="", workdir="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ProtocolError("drafter command may only use {plan_file}, {design_file} and "
                            f"{{workdir}} (write {{{{ and }}}} for literal braces); problem: "
                            f"{exc}") from None
    return command


def run_drafter(command: str, exp_dir: Path, plan: Path) -> str:
    """Run a plan drafter command in ``exp_dir``; its outcome in words."""
    design = find_design(exp_dir)
    values = {"plan_file": str(plan), "design_file": str(design or ""), "workdir": str(exp_dir)}
    filled = check_drafter_command(command).format(
        **{k: shlex.quote(v) for k, v in values.items()})
    result = run_command(filled, cwd=exp_dir, log_dir=exp_dir / ".spml" / "plan",
                         name="drafter", env=supervisor_path(), time_limit_s=DRAFTER_TIMEOUT_S)
    return result.describe()


def keep_logs_out_of_git(exp_dir: Path) -> None:
    """The stages' logs and prompts live in ``.spml/``: never part of a commit."""
    from spml.toolkit.git import ensure_excluded

    ensure_excluded(exp_dir, ".spml/")


def put_back(exp_dir: Path, path: Path, previous: str | None) -> Path:
    """Restore ``path`` to ``previous`` (remove it when it is new); the rejected text is kept
    in ``.spml/plan/`` and its path returned."""
    from spml.toolkit.files import write_atomic

    kept = exp_dir / ".spml" / "plan" / f"rejected-{path.name}"
    kept.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(kept, path.read_text(encoding="utf-8") if path.is_file() else "")
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, previous)
    return kept


def design_when_plan_was_committed(exp_dir: Path, plan: Path, design: Path) -> DesignDoc | None:
    """The design as it was when ``plan`` was last committed (what the plan was derived from);
    None without that history."""
    import tempfile

    from spml.toolkit.git.checkout import text_when_last_committed

    text = text_when_last_committed(exp_dir, plan.relative_to(exp_dir).as_posix(),
                                    design.relative_to(exp_dir).as_posix())
    if text is None:
        return None
    with tempfile.TemporaryDirectory(prefix="spml-design-") as scratch:
        copy = Path(scratch) / design.name
        copy.write_text(text, encoding="utf-8")
        try:
            return load_design(copy)
        except ProtocolError:
            return None


def require_runtime(exp_dir: Path, overrides: dict[str, Any] | None) -> None:
    """L1's settings load (else the ProtocolError that says how to configure them)."""
    from spml.toolkit.runtime.run import load_runtime_settings

    load_runtime_settings(exp_dir, overrides)


def require_branch(exp_dir: Path, branch: str) -> None:
    """Refuse to commit when the checkout is no longer on ``branch`` (an implementer switched
    it: the stage's commits would land where nobody looks)."""
    from spml.errors import GitStateError
    from spml.toolkit.git.checkout import current_branch

    now = current_branch(exp_dir)
    if now != branch:
        raise GitStateError(f"the checkout moved from branch {branch!r} to {now!r} while the "
                            f"stage ran (the implementer?); check out {branch!r} again and "
                            "re-run `spml develop`.")


def require_plan_current(exp_dir: Path, plan: Path, design: Path) -> None:
    """Refuse to develop a plan that `spml plan new` would revise: the design moved on in a
    way the plan derives from (SPML: changes flow design -> plan -> code). A design change the
    plan does not depend on (prose, the autoresearch section) is no reason to stop."""
    from spml.toolkit.pipeline.planner import revise_plan

    old = design_when_plan_was_committed(exp_dir, plan, design)
    if old is None:
        return
    _, changes = revise_plan(load_plan(plan), experiment_label(exp_dir), old,
                             load_design(design), runtime_table(exp_dir))
    if changes:
        raise ProtocolError(f"{design.name} changed after {plan.name} was written "
                            f"({'; '.join(changes)}); revise the plan first with `spml plan "
                            f"new {exp_dir}` (changes flow design -> plan -> code).")


def subtask_files(exp_dir: Path, subtask: Subtask, before: dict[str, str | None],
                  after: dict[str, str | None]) -> list[str]:
    """What a subtask's commit holds: the uncommitted files it names (its code and tests) and
    every file whose content changed while it was developed; other pending files stay out."""
    named = set(re.findall(r"`([^`\s]+)`", " ".join(subtask.fields.values())))
    named |= {target.split("::")[0] for target in subtask.tests}
    return sorted(path for path, digest in after.items()
                  if path in named or before.get(path, "absent") != digest)
