"""Commits in the person's own checkout: the pipeline stages' ``experiment: ...`` commits.

The loops commit in their own worktree (`workspace`); the pipeline stages (design, plan,
develop, handoff) commit the experiment directory where the person works, as SPML does. Only
paths under the experiment directory are staged, never anything else the person has pending;
ignored files stay out. Git runs hardened (no hooks) and with a fallback identity when the
repository has none (a fresh CI machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import git

from spml.errors import GitStateError
from spml.toolkit.git.runner import GIT_IDENTITY, HARDENING, config_args, describe_git_error
from spml.toolkit.git.setup import find_repo


def commit_experiment(exp_dir: Path, message: str, leave_out: Sequence[str] = ()) -> str | None:
    """Stage every change under ``exp_dir`` (but ``leave_out``, paths relative to it) and
    commit it; the new sha, or None when nothing under ``exp_dir`` changed.

    Raises:
        GitStateError: ``exp_dir`` is not in a repository, or git refused.
    """
    repo = find_repo(exp_dir)
    under = str(Path(exp_dir).resolve())
    excluded = [f":(exclude,literal){Path(under) / name}" for name in leave_out]
    _git(repo, "add", "-A", "--", under, *excluded)
    if not _git(repo, "diff", "--cached", "--name-only", "--", under).strip():
        return None
    identity = [f"user.name={GIT_IDENTITY[0]}", f"user.email={GIT_IDENTITY[1]}"]
    missing = [pair for pair in identity
               if not repo.git.config("--get", pair.split("=")[0], with_exceptions=False)]
    # `commit -- <paths>` commits only those paths: what the person staged elsewhere stays
    # staged and out of this commit.
    _git(repo, *config_args(missing), "commit", "-q", "-m", message, "--", under, *excluded)
    return repo.head.commit.hexsha


def head_message(exp_dir: Path) -> str:
    """The subject line of HEAD in the repository holding ``exp_dir``."""
    return find_repo(exp_dir).head.commit.summary.__str__()


def _git(repo: git.Repo, *args: str) -> str:
    try:
        return repo.git.execute([repo.git.GIT_PYTHON_GIT_EXECUTABLE or "git",
                                 *config_args(HARDENING), *args])
    except git.GitCommandError as exc:
        raise GitStateError(f"`git {' '.join(a for a in args[:2] if '=' not in a)}` failed in "
                            f"{repo.working_dir}: {describe_git_error(exc)}.") from exc
