"""Commits in the person's own checkout: the pipeline stages' ``experiment: ...`` commits.

The loops commit in their own worktree (`workspace`); the pipeline stages (design, plan,
develop, handoff) commit in the checkout where the person works, as SPML does. A stage commits
only the paths it wrote (its document; for `develop`, the files that changed while a subtask
was developed), never the person's other pending work: what they staged elsewhere stays
staged, a half-written file or a secret beside it stays out. Git runs hardened (no hooks) and
with a fallback identity when the repository has none (a fresh CI machine).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import git

from spml.errors import GitStateError
from spml.toolkit.git.runner import GIT_IDENTITY, HARDENING, config_args, describe_git_error
from spml.toolkit.git.setup import find_repo
from spml.toolkit.git.workspace import uncommitted_files


def commit_paths(exp_dir: Path, message: str, paths: Iterable[str]) -> str | None:
    """Commit ``paths`` (relative to ``exp_dir``; new, changed or deleted); the new sha, or
    None when none of them differs from HEAD.

    Raises:
        GitStateError: ``exp_dir`` is not in a repository, or git refused.
    """
    repo = find_repo(exp_dir)
    root = Path(repo.working_dir).resolve()
    wanted = sorted({(Path(exp_dir).resolve() / p).relative_to(root).as_posix() for p in paths})
    pending = uncommitted_files(root, (Path(exp_dir).resolve()).relative_to(root).as_posix()
                                or ".")
    wanted = [p for p in wanted if p in pending]
    if not wanted:
        return None
    literal = [f":(literal){p}" for p in wanted]
    _git(repo, "add", "-A", "--", *literal)
    identity = [f"user.name={GIT_IDENTITY[0]}", f"user.email={GIT_IDENTITY[1]}"]
    missing = [pair for pair in identity
               if not repo.git.config("--get", pair.split("=")[0], with_exceptions=False)]
    # `commit -- <paths>` commits only those paths: what the person staged elsewhere stays
    # staged and out of this commit.
    _git(repo, *config_args(missing), "commit", "-q", "-m", message, "--", *literal)
    return repo.head.commit.hexsha


def dirty_paths(exp_dir: Path) -> set[str]:
    """Paths under ``exp_dir`` (relative to it) that differ from HEAD, ignored files aside."""
    repo = find_repo(exp_dir)
    root = Path(repo.working_dir).resolve()
    under = Path(exp_dir).resolve().relative_to(root).as_posix() or "."
    prefix = "" if under == "." else f"{under}/"
    return {path.removeprefix(prefix) for path in uncommitted_files(root, under)}


def dirty_snapshot(exp_dir: Path) -> dict[str, str | None]:
    """`dirty_paths` with each file's content digest (None: deleted), to tell later which of
    them changed."""
    import hashlib

    exp = Path(exp_dir)
    return {path: (hashlib.sha256((exp / path).read_bytes()).hexdigest()
                   if (exp / path).is_file() else None) for path in dirty_paths(exp)}


def current_branch(exp_dir: Path) -> str:
    """The checked-out branch (``HEAD`` when detached) of the repository holding ``exp_dir``."""
    return _git(find_repo(exp_dir), "rev-parse", "--abbrev-ref", "HEAD").strip()


def _git(repo: git.Repo, *args: str) -> str:
    try:
        return repo.git.execute([repo.git.GIT_PYTHON_GIT_EXECUTABLE or "git",
                                 *config_args(HARDENING), *args])
    except git.GitCommandError as exc:
        raise GitStateError(f"`git {' '.join(a for a in args[:2] if '=' not in a)}` failed in "
                            f"{repo.working_dir}: {describe_git_error(exc)}.") from exc


def text_when_last_committed(exp_dir: Path, anchor: str, wanted: str) -> str | None:
    """The text ``wanted`` had in the last commit that touched ``anchor`` (both relative to
    ``exp_dir``): e.g. the design a plan was last committed with. None when ``anchor`` was never
    committed or ``wanted`` did not exist then."""
    repo = find_repo(exp_dir)
    root = Path(repo.working_dir).resolve()
    exp = Path(exp_dir).resolve()
    anchor_path = (exp / anchor).relative_to(root).as_posix()
    wanted_path = (exp / wanted).relative_to(root).as_posix()
    try:
        sha = _git(repo, "log", "-1", "--format=%H", "--", f":(literal){anchor_path}").strip()
        return _git(repo, "show", f"{sha}:{wanted_path}") + "\n" if sha else None
    except GitStateError:
        return None


def changed_after(exp_dir: Path, later: str, earlier: str) -> bool:
    """Whether ``later`` (relative to ``exp_dir``) changed after ``earlier`` was last committed:
    it has uncommitted changes, or its last commit is not part of ``earlier``'s history."""
    if later in dirty_paths(exp_dir):
        return True
    repo = find_repo(exp_dir)
    root = Path(repo.working_dir).resolve()
    exp = Path(exp_dir).resolve()

    def last(rel: str) -> str:
        path = (exp / rel).relative_to(root).as_posix()
        return _git(repo, "log", "-1", "--format=%H", "--", f":(literal){path}").strip()

    later_sha, earlier_sha = last(later), last(earlier)
    if not later_sha or not earlier_sha:
        return False
    return repo.git.merge_base("--is-ancestor", later_sha, earlier_sha,
                               with_extended_output=True, with_exceptions=False)[0] != 0
