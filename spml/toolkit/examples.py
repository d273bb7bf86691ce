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


def copy_example(name: str, target: Path, skip: tuple[str, ...] = ()) -> Path:
    """Copy example ``name`` into a new git repository at ``target`` with one commit.

    Raises:
        SpmlError: ``target`` is a file or a non-empty directory, or the example is unknown.
    """
    source = examples_root() / name
    if not source.is_dir():
        known = sorted(p.name for p in examples_root().iterdir())
        raise SpmlError(f"example must be one of {known}, got {name!r}.")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        what = "a non-empty directory" if target.is_dir() else "a file"
        raise SpmlError(f"demo directory must be new or empty, got {what}: {str(target)!r}. "
                        "Pick another directory or remove it.")
    shutil.copytree(source, target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "outputs", ".spml",
                                                  "experiences.md", *skip))
    repo = git.Repo.init(target)
    with repo.config_writer() as config:  # a fresh machine may have no git identity
        if not config.has_option("user", "name"):
            config.set_value("user", "name", "spml demo")
            config.set_value("user", "email", "demo@spml.invalid")
    repo.git.add("-A")
    repo.git.commit("-qm", _first_commit_message(name))
    return target


def is_example_copy(target: Path, name: str) -> bool:
    """Whether ``target`` is a repository that :func:`copy_example` made of example ``name``
    (so a demo that failed or was interrupted can be run again there, and resumes)."""
    try:
        repo = git.Repo(target)
        first = repo.git.rev_list("--max-parents=0", "HEAD").split()
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError):
        return False
    return (Path(repo.working_dir).resolve() == target.resolve() and len(first) == 1
            and repo.commit(first[0]).message.strip() == _first_commit_message(name))


def _first_commit_message(name: str) -> str:
    return f"spml demo: the {name} example"
