"""Shared fixtures: real git repositories holding a small experiment (no mocks)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from helpers import FIXTURES, drive, git, toy_protocol, write_protocol  # noqa: E402


@pytest.fixture
def toy_experiment(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a git repo with the toy experiment in `exp/`; returns the experiment dir.

    Call with ``plan={"default": "good", "2": "crash"}`` and protocol overrides.
    """

    def make(plan: dict[str, str] | None = None, plan_dir: Path | None = None,
             **overrides: Any) -> Path:
        repo = tmp_path / "repo"
        exp = repo / "exp"
        exp.mkdir(parents=True)
        for name in ("train.py", "evaluate.py", "params.yaml"):
            shutil.copy(FIXTURES / "toy" / name, exp / name)
        shutil.copy(FIXTURES / "toy" / "gitignore", exp / ".gitignore")
        (repo / "README.md").write_text("user project\n")
        plan_dir = plan_dir or tmp_path  # the sandbox's writable folder (plan, its log)
        plan_dir.mkdir(parents=True, exist_ok=True)
        plan_path = plan_dir / "plan.json"
        plan_path.write_text(json.dumps(plan or {"default": "good"}))
        write_protocol(exp, toy_protocol(plan_path, **overrides))
        git(repo, "init", "-q", "-b", "main")
        git(repo, "config", "user.name", "Test User")
        git(repo, "config", "user.email", "test@example.invalid")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "toy experiment")
        return exp

    return make



@pytest.fixture
def drive_loop() -> Callable[..., Any]:
    """Run a whole loop with the toolkit alone (the flow's steps, in order, no Prefect)."""
    return drive
