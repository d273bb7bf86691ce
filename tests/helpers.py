"""Plain helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

FIXTURES = Path(__file__).parent / "fixtures"
RESEARCHER = FIXTURES / "researchers" / "researcher.py"


def git(cwd: Path, *args: str, check: bool = True) -> str | int:
    """Run git in ``cwd``; return its stdout (or, with ``check=False``, its exit code)."""
    out = subprocess.run(["git", *args], cwd=cwd, check=check, capture_output=True, text=True)
    return out.stdout.strip() if check else out.returncode


def toy_protocol(plan_path: Path, **overrides: Any) -> dict[str, Any]:
    """Protocol fields for the toy experiment with a scripted command researcher."""
    fields: dict[str, Any] = {
        "research_question": "Can x be tuned to minimise the toy loss?",
        "max_rounds": 3,
        "target": None,
        "baseline": None,
        "train_command": f"{sys.executable} train.py",
        "fixed": {"files": ["train.py", "evaluate.py"], "time_limit": 5},
        "variable": {"files": ["params.yaml"], "range": "x"},
        "eval": {"command": f"{sys.executable} evaluate.py", "metric": "loss",
                 "direction": "minimize"},
        "researcher": {"kind": "command",
                       "command": f"{sys.executable} {RESEARCHER} {plan_path}",
                       "timeout": 20},
        # One run per round: these toys test the engine, not the statistics; the noise-aware
        # default (`significance`) has its own tests (tests/toolkit/loop/test_noise_aware.py).
        "acceptance": {"mode": "greedy"},
        # The scripted researcher logs beside its plan, outside the worktree: let that folder
        # through the sandbox, as a user does for a coding agent's own directories.
        "sandbox": {"writable": [str(plan_path.parent)]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(fields.get(key), dict):
            fields[key] = {**fields[key], **value}
        else:
            fields[key] = value
    return fields


def write_protocol(exp: Path, fields: dict[str, Any], body: str = "Toy background.") -> Path:
    """Write `autoresearch-protocol.md` with ``fields`` as front matter."""
    path = exp / "autoresearch-protocol.md"
    path.write_text(f"---\n{yaml.safe_dump(fields, sort_keys=False)}---\n{body}\n")
    return path


def iteration_protocol_fields(tmp_path: Path, *, max_rounds: int = 1, train_time_s: float = 20.0,
                              custom: bool = False, repeats: int = 1) -> dict[str, Any]:
    """The iteration protocol of the fake project (a dict for the YAML front matter)."""
    script = FIXTURES / "iteration" / "researcher.py"
    researcher = (f"{sys.executable} {script} {tmp_path / 'plan.json'} "
                  f"{tmp_path / 'researcher-runs.txt'}")
    criteria: dict[str, Any] = {
        "metrics": [{"name": "acc", "op": ">=", "threshold": 0.9}],
        "performance": [{"name": "train_time_s", "op": "<=", "threshold": train_time_s}],
        "observability": {"required_keys": ["loss", "grad_norm"]},
        "stability": {"no_nan": True},
    }
    if custom:
        criteria["custom"] = [{"name": "checkpoint", "command": f"{sys.executable} check.py"}]
    return {
        "goal": "Reach acc >= 0.9 with loss and grad_norm on every per-step line.",
        "max_rounds": max_rounds,
        "train_command": f"{sys.executable} train.py",
        "fixed": {"files": ["evaluate.py", "check.py"], "time_limit": 10},
        "focused_files": ["train.py", "config.json"],
        "eval": {"command": f"{sys.executable} evaluate.py"},
        "researcher": {"kind": "command", "command": researcher, "timeout": 60},
        "acceptance": {"repeats": repeats},
        "review_criteria": criteria,
        "sandbox": {"writable": [str(tmp_path)]},  # the scripted researcher's run log
    }


def write_iteration_protocol(exp: Path, fields: dict[str, Any]) -> Path:
    """Write `iteration-protocol.md` with ``fields`` as front matter."""
    path = exp / "iteration-protocol.md"
    path.write_text(f"---\n{yaml.safe_dump(fields, sort_keys=False)}---\n"
                    "Fake project: edit config.json.\n")
    return path


def iteration_experiment(tmp_path: Path, plan: dict[str, dict[str, Any]],
                         config: dict[str, Any] | None = None, name: str = "exp",
                         **protocol: Any) -> Path:
    """A git repo with the fake ml-iteration project (tests/fixtures/iteration) in ``name/``.

    ``plan`` maps rounds to config.json updates the scripted researcher applies; ``config``
    updates the committed baseline; the other keywords go to `iteration_protocol_fields`.
    """
    fixture = FIXTURES / "iteration"
    repo = tmp_path / "repo"
    exp = repo / name
    exp.mkdir(parents=True)
    for file in ("train.py", "evaluate.py", "check.py"):
        shutil.copy(fixture / file, exp / file)
    shutil.copy(fixture / "gitignore", exp / ".gitignore")
    base = json.loads((fixture / "config.json").read_text())
    (exp / "config.json").write_text(json.dumps({**base, **(config or {})}, sort_keys=True) + "\n")
    (repo / "README.md").write_text("user project\n")
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    write_iteration_protocol(exp, iteration_protocol_fields(tmp_path, **protocol))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test User")
    git(repo, "config", "user.email", "test@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "fake project")
    return exp


def toy_repo(tmp_path: Path, plan: dict[str, str], *dirs: str, plan_dir: Path | None = None,
             **protocol: Any) -> list[Path]:
    """A git repo (`tmp_path/repo`) holding the toy experiment once per name in ``dirs``, all
    driven by the scripted researcher's ``plan``; returns the experiment dirs. ``plan_dir``:
    where the plan and the researcher's log go (the sandbox's writable folder; default
    ``tmp_path``, which holds the repository)."""
    repo = tmp_path / "repo"
    plan_dir = plan_dir or tmp_path
    plan_dir.mkdir(parents=True, exist_ok=True)
    plan_path = plan_dir / "plan.json"
    plan_path.write_text(json.dumps(plan))
    exps = []
    for name in dirs:
        exp = repo / name
        exp.mkdir(parents=True)
        for file in ("train.py", "evaluate.py", "params.yaml"):
            shutil.copy(FIXTURES / "toy" / file, exp / file)
        shutil.copy(FIXTURES / "toy" / "gitignore", exp / ".gitignore")
        write_protocol(exp, toy_protocol(plan_path, **protocol))
        exps.append(exp)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test User")
    git(repo, "config", "user.email", "test@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "toy experiments")
    return exps


def attempt_ref(exp: Path, round_no: int, protocol: str = "autoresearch-protocol.md") -> str:
    """The ref holding round ``round_no``'s archived attempt, in the ledger's generation."""
    from spml.toolkit.loop.experiment import Experiment

    return Experiment.locate(exp, protocol).attempt_ref(round_no)


def drive(exp: Path, max_rounds: int | None = None,
          between_rounds: Callable[[int], None] | None = None, kind: str = "autoresearch") -> Any:
    """Run a whole loop with the toolkit alone: the flow's round sequence, without Prefect."""
    from spml.toolkit.loop.confirm import confirm_result
    from spml.toolkit.loop.experiment import hold_experiment
    from spml.toolkit.loop.holdout import measure_holdout
    from spml.toolkit.loop.kind import kind_named
    from spml.toolkit.loop.lifecycle import close_loop, next_step, open_loop
    from spml.toolkit.loop.round import PlainBatchSteps, PlainSteps, run_batch, run_round
    from spml.toolkit.loop.session import LoopSession

    loop_kind = kind_named(kind)
    steps, batch_steps = PlainSteps(loop_kind), PlainBatchSteps(loop_kind)
    with hold_experiment(exp, loop_kind.protocol_filename):
        open_loop(str(exp), max_rounds, loop_kind)
        while (step := next_step(LoopSession.load(exp, loop_kind))).kind == "round":
            if step.candidates == 1 or run_batch(batch_steps, str(exp), step.round_no) is None:
                run_round(steps, str(exp), step.round_no)
            if between_rounds is not None:
                between_rounds(step.round_no)
        confirm_result(LoopSession.load(exp, loop_kind), step.status)
        measure_holdout(LoopSession.load(exp, loop_kind), step.status)
        return close_loop(LoopSession.load(exp, loop_kind), step)



def write_marked_plan(exp: Path, done: tuple[int, ...] = (), conclude: bool = False) -> Path:
    """`plans/2026-12-05-x.md` from the good plan fixture, subtasks ``done`` marked done (and
    concluded `effective` with ``conclude``); returns the plan's path."""
    from spml.protocols.plan import load_plan

    path = exp / "plans" / "2026-12-05-x.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "plan" / "good-plan.md", path)
    plan = load_plan(path)
    for number in done:
        plan = plan.mark(number, "done")
        if conclude:
            plan = plan.set_conclusion(number, {"Result": "effective"})
    path.write_text(plan.render())
    return path


def tiny_experiment(repo: Path, files: dict[str, str], protocol: dict[str, Any]) -> Path:
    """`repo/exp` holding ``files`` and an Auto Research protocol, committed on main."""
    exp = repo / "exp"
    exp.mkdir(parents=True)
    for name, text in files.items():
        (exp / name).write_text(text)
    write_protocol(exp, protocol)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "experiment")
    return exp


def model_protocol(tmp_path: Path, eval_command: str = "") -> dict[str, Any]:
    """One round of a `model.py` experiment: fixed train.py and evaluate.py, metric `loss`
    (minimized), the researcher `tmp_path/researcher.py` copying `tmp_path/candidate.py`."""
    return {
        "research_question": "Can the model be better?", "max_rounds": 1,
        "train_command": f"{sys.executable} train.py",
        "fixed": {"files": ["train.py", "evaluate.py"], "time_limit": 10},
        "variable": {"files": ["model.py"]},
        "eval": {"command": eval_command or f"{sys.executable} evaluate.py", "metric": "loss",
                 "direction": "minimize"},
        "researcher": {"kind": "command", "timeout": 20, "command":
                       f"{sys.executable} {tmp_path / 'researcher.py'} "
                       f"{tmp_path / 'candidate.py'}"},
        "acceptance": {"mode": "greedy"}}

if __name__ == "__main__":  # python helpers.py EXP [MAX_ROUNDS [KIND]]: Prefect-free supervisor
    drive(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else None,
          kind=sys.argv[3] if len(sys.argv) > 3 else "autoresearch")


def problem_rows(message: str) -> list[str]:
    """The `- field (line N): problem` rows of a protocol error (`error_report`): one problem
    is on the first line, after the title; several are listed below it."""
    lines = message.splitlines()
    if len(lines) == 1:
        return ["- " + lines[0].split(": ", 1)[1]]
    return [row.strip() for row in lines[1:]]
