"""Open the user's repository and create or reuse the supervisor's linked worktree."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import git

from spml.errors import GitStateError
from spml.toolkit.git.runner import HARDENING, config_args, describe_git_error

log = logging.getLogger(__name__)
# Held to prune, list or add worktrees: a `git worktree add` beside another thread's (a batch's
# candidates open their worktrees at once) can read its half-made admin folder and fail.
_WORKTREE_LIST = threading.Lock()


def find_repo(repo_dir: Path) -> git.Repo:
    """The repository containing ``repo_dir``.

    Raises:
        GitStateError: ``repo_dir`` is not inside a git repository.
    """
    try:
        repo = git.Repo(repo_dir, search_parent_directories=True)
        repo.git.update_environment(GIT_NO_REPLACE_OBJECTS="1")
        return repo
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise GitStateError(
            f"{repo_dir} is not inside a git repository; run `git init` and commit your "
            "experiment first."
        ) from None


def open_repo(repo_dir: Path) -> git.Repo:
    """The non-bare repository containing ``repo_dir``, which must have a commit.

    Raises:
        GitStateError: no repository, a bare one, or one without commits.
    """
    repo = find_repo(repo_dir)
    if repo.bare:
        raise GitStateError(f"{repo_dir} is a bare repository; run spml in a checkout.")
    if not repo.head.is_valid():
        raise GitStateError(
            f"the repository at {repo_dir} has no commit yet; run `git init` / commit your "
            "experiment first."
        )
    return repo


def common_dir(repo: git.Repo) -> Path:
    """The repository's common git dir, absolute."""
    return Path(repo.git.rev_parse("--path-format=absolute", "--git-common-dir")).resolve()


def run_git(repo: git.Repo, *args: str) -> str:
    """Run a state-changing git command in the main repository, hardened and wrapped."""
    try:
        return repo.git.execute([repo.git.GIT_PYTHON_GIT_EXECUTABLE or "git",
                                 *config_args(HARDENING), *args])
    except git.GitCommandError as exc:
        raise GitStateError(
            f"`git {' '.join(args[:2])}` failed in {repo.working_dir}: "
            f"{describe_git_error(exc)}."
        ) from exc


def _listed_worktrees(repo: git.Repo) -> list[dict[str, str]]:
    """``git worktree list --porcelain`` as dicts (keys: worktree, HEAD, branch, detached)."""
    entries: list[dict[str, str]] = []
    for line in repo.git.worktree("list", "--porcelain").splitlines():
        key, _, value = line.partition(" ")
        if key == "worktree":
            entries.append({})
        if entries:
            entries[-1][key] = value
    return entries


def _branch_exists(repo: git.Repo, branch: str) -> bool:
    try:
        repo.git.show_ref("--verify", "--quiet", f"refs/heads/{branch}")
    except git.GitCommandError:
        return False
    return True


def _ensure_branch(repo: git.Repo, branch: str, start_point: str) -> None:
    if _branch_exists(repo, branch):
        return
    try:
        start = repo.git.rev_parse("--verify", "--quiet", "--end-of-options",
                                   f"{start_point}^{{commit}}")
    except git.GitCommandError:
        raise GitStateError(f"start point {start_point!r} names no commit in "
                            f"{repo.working_dir}; pass an existing commit or branch.") from None
    run_git(repo, "branch", "--no-track", "--end-of-options", branch, start)
    log.info("created branch %s at %s", branch, start[:12])


def remove_stale_locks(admin_dir: Path, common: Path, branch: str) -> list[Path]:
    """Delete lock files a supervisor killed mid-commit leaves behind.

    Only the supervisor writes to its worktree and branch, so any such lock is stale.

    Returns:
        The lock files removed.
    """
    candidates = [admin_dir / "index.lock", admin_dir / "HEAD.lock",
                  common / "refs" / "heads" / f"{branch}.lock"]
    removed = []
    for lock in candidates:
        if lock.is_file():
            lock.unlink()
            removed.append(lock)
            log.warning("removed stale git lock %s", lock)
    return removed


def _admin_dir_of(worktree: Path) -> Path:
    gitfile = git.Git(str(worktree))
    return Path(gitfile.rev_parse("--absolute-git-dir")).resolve()


def _reuse(repo: git.Repo, entry: dict[str, str], worktree: Path, branch: str,
           start_point: str) -> Path:
    """Check a listed worktree belongs to ``repo``, put it on ``branch``; return its admin dir."""
    common = common_dir(repo)
    try:
        admin = _admin_dir_of(worktree)
    except git.GitCommandError as exc:
        raise GitStateError(f"{worktree} is registered as a worktree but git cannot use it "
                            f"({describe_git_error(exc)}); delete the directory and retry."
                            ) from exc
    if admin.parent != common / "worktrees":
        raise GitStateError(f"{worktree} is not a linked worktree of {repo.working_dir}; "
                            "delete it or choose another worktree directory.")
    remove_stale_locks(admin, common, branch)
    _ensure_branch(repo, branch, start_point)
    if entry.get("branch") != f"refs/heads/{branch}":
        state = entry.get("branch", "detached HEAD")
        log.warning("worktree %s was on %s; checking out %s again", worktree, state, branch)
        run_git(repo, "-C", str(worktree), "checkout", "--force", "--quiet", branch)
    return admin


def _create(repo: git.Repo, worktree: Path, branch: str, start_point: str) -> Path:
    if worktree.exists() and (not worktree.is_dir() or any(worktree.iterdir())):
        raise GitStateError(f"{worktree} exists and is not a worktree of {repo.working_dir}; "
                            "delete it or choose another worktree directory.")
    _ensure_branch(repo, branch, start_point)
    worktree.parent.mkdir(parents=True, exist_ok=True)
    run_git(repo, "worktree", "add", "--quiet", str(worktree), branch)
    log.info("created worktree %s on branch %s", worktree, branch)
    admin = _admin_dir_of(worktree)
    remove_stale_locks(admin, common_dir(repo), branch)
    return admin


def attach_worktree(repo: git.Repo, worktree: Path, branch: str, start_point: str) -> Path:
    """Create or reuse the linked worktree ``worktree`` on ``branch``.

    Args:
        repo: The user's repository.
        worktree: Absolute worktree directory.
        branch: Branch name (without ``refs/heads/``).
        start_point: Where a missing branch starts.

    Returns:
        The worktree's admin dir (``<common>/worktrees/<id>``).

    Raises:
        GitStateError: the directory is taken, or git refuses (e.g. the branch is checked out
            in another worktree).
    """
    with _WORKTREE_LIST:
        run_git(repo, "worktree", "prune")
        entries = _listed_worktrees(repo)
        resolved = [Path(entry["worktree"]).resolve() for entry in entries]
        if resolved and resolved[0] == worktree:
            raise GitStateError(f"{worktree} is the repository's main checkout; the "
                                "supervisor needs a separate worktree directory.")
        listed = [entry for entry, path in zip(entries, resolved, strict=True)
                  if path == worktree and os.path.isdir(worktree)]
        if not listed:
            return _create(repo, worktree, branch, start_point)
    return _reuse(repo, listed[0], worktree, branch, start_point)
