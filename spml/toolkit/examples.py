"""The example experiments that ship with spml (used by `spml demo`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import git

from spml.errors import SpmlError

DEMO_EXAMPLE = "regression"


def examples_root() -> Path:
    """Where the bundled examples are: inside the wheel, or ./examples of a source checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_examples", package.parent / "examples"):
        if candidate.is_dir():
            return candidate
    raise SpmlError("the bundled examples are missing from this installation; reinstall spml.")


def copy_example(name: str, target: Path) -> Path:
    """Copy example ``name`` into a new git repository at ``target`` with one commit.

    Raises:
        SpmlError: ``target`` exists and is not empty, or the example is unknown.
    """
    source = examples_root() / name
    if not source.is_dir():
        known = sorted(p.name for p in examples_root().iterdir())
        raise SpmlError(f"example must be one of {known}, got {name!r}.")
    if target.exists() and any(target.iterdir()):
        raise SpmlError(f"demo directory must be new or empty, got {str(target)!r}. Pick "
                        "another directory or remove it.")
    shutil.copytree(source, target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "outputs", ".spml",
                                                  "experiences.md"))
    repo = git.Repo.init(target)
    with repo.config_writer() as config:  # a fresh machine may have no git identity
        if not config.has_option("user", "name"):
            config.set_value("user", "name", "spml demo")
            config.set_value("user", "email", "demo@spml.invalid")
    repo.git.add("-A")
    repo.git.commit("-qm", f"spml demo: the {name} example")
    return target
