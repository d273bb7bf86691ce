"""The supervisor's git layer: one linked worktree on a dedicated branch.

Only the supervisor writes to git. Each round a researcher edits files in the worktree; the
supervisor then inspects (:meth:`Workspace.snapshot`, :meth:`Workspace.changes_since`), and
either commits (:meth:`Workspace.commit_all`) or undoes everything the researcher did
(:meth:`Workspace.rollback`, which also restores refs and git admin files from a snapshot).
Hooks never run for the supervisor's commands (see :mod:`spml.toolkit.git.runner`).

Paths in results are repo-root-relative POSIX paths. Call :meth:`Workspace.snapshot` before
:meth:`Workspace.changes_since` after a round: the latter runs ``git add`` in a scratch index,
which honours the (possibly tampered) config's filter drivers; a changed config shows up in the
snapshot's ``admin_digest``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import git

from spml.errors import GitStateError
from spml.toolkit.git import trees as gittrees
from spml.toolkit.git.admin import AdminEntry, digest, restore_admin, scan_admin
from spml.toolkit.git.restore import attach_head, format_message, reset_worktree, restore_refs_to
from spml.toolkit.git.runner import (
    GIT_IDENTITY,
    HARDENING,
    REFS_FORMAT,
    GitRunner,
    config_args,
    describe_git_error,
    parse_refs,
)
from spml.toolkit.git.setup import (
    attach_worktree,
    common_dir,
    find_repo,
    open_repo,
    remove_stale_locks,
)

__all__ = ["GIT_IDENTITY", "FileChange", "GitSnapshot", "Workspace", "ensure_excluded",
           "uncommitted_files"]

log = logging.getLogger(__name__)

ChangeKind = Literal["modified", "added", "deleted", "renamed", "untracked", "typechange"]
PRIVATE_REF_PREFIX = "refs/spml/"
GITFILE_KEY = "<worktree>/.git"
_COMMON_ADMIN = ("hooks", "config", "info/exclude", "info/attributes", "info/grafts",
                 "objects/info/alternates")
_WORKTREE_ADMIN = ("config.worktree", "commondir", "gitdir")


@dataclass(frozen=True)
class FileChange:
    """One changed path of the working tree relative to a commit (repo-relative POSIX)."""

    path: str
    kind: ChangeKind
    old_path: str | None = None


@dataclass(frozen=True)
class GitSnapshot:
    """Where HEAD and every ref point, and digests of git's admin files, at one moment.

    ``refs`` excludes ``refs/spml/*`` (the supervisor's own). ``admin_digest`` keys are paths
    relative to the common git dir (``hooks/pre-commit``, ``config``, ``info/exclude``,
    ``worktrees/<id>/config.worktree``...) plus ``<worktree>/.git`` (the worktree's link file).
    ``head`` is "" when HEAD resolves to no commit.
    """

    head: str
    head_ref: str | None
    refs: dict[str, str]
    admin_digest: dict[str, str]
    _admin_bytes: dict[str, AdminEntry] = field(default_factory=dict, compare=False,
                                                repr=False)

    def to_json(self) -> str:
        """Serialize (admin file contents base64-encoded) so recovery can restore from disk."""
        admin = {k: [mode, base64.b64encode(data).decode()]
                 for k, (mode, data) in self._admin_bytes.items()}
        return json.dumps({"head": self.head, "head_ref": self.head_ref, "refs": self.refs,
                           "admin_digest": self.admin_digest, "admin": admin})

    @classmethod
    def from_json(cls, text: str) -> GitSnapshot:
        """The inverse of `to_json`."""
        raw = json.loads(text)
        admin = {k: (int(mode), base64.b64decode(data)) for k, (mode, data) in
                 raw["admin"].items()}
        return cls(raw["head"], raw["head_ref"], raw["refs"], raw["admin_digest"], admin)


class Workspace:
    """The supervisor's linked worktree of the user's repository, on one branch.

    Attributes:
        repo: The user's repository (GitPython), e.g. to read commits.
        path: The worktree root.
        branch: The branch the worktree stays on (without ``refs/heads/``).
    """

    def __init__(self, repo: git.Repo, runner: GitRunner, branch: str) -> None:
        """Wrap an attached worktree; use :meth:`open_or_create` instead."""
        self.repo = repo
        self.path = runner.worktree
        self.branch = branch
        self._runner = runner
        self._admin_key = runner.admin_dir.relative_to(runner.common_dir).as_posix()
        # Other branches a researcher here must not move (a batch candidate's worktree watches
        # the loop's branch too).
        self.also_watched: tuple[str, ...] = ()

    @classmethod
    def open_or_create(cls, repo_dir: Path, worktree_dir: Path, branch: str,
                       start_point: str = "HEAD") -> Workspace:
        """Reuse or create the worktree ``worktree_dir`` on ``branch``.

        A worktree left detached or on another branch gets ``branch`` checked out again
        (``--force``); a missing branch is created at ``start_point``; a worktree directory
        deleted by hand is pruned and recreated; stale lock files are removed.

        Args:
            repo_dir: Any directory inside the user's repository (which needs a commit).
            worktree_dir: The worktree's directory.
            branch: The branch name, e.g. ``spml/autoresearch/exp``.
            start_point: Where a missing branch starts.

        Raises:
            GitStateError: no usable repository, or the worktree cannot be set up.
        """
        repo = open_repo(Path(repo_dir))
        worktree = Path(worktree_dir).expanduser().absolute().resolve()
        admin = attach_worktree(repo, worktree, branch, start_point)
        common = common_dir(repo)
        if admin.parent != common / "worktrees":
            raise GitStateError(f"{worktree} is not a linked worktree of {repo.working_dir}; "
                                "delete it or choose another worktree directory.")
        return cls(repo, GitRunner(worktree, admin, common), branch)

    @property
    def _branch_ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def head_tree(self) -> str:
        """The tree id of the branch's commit."""
        return gittrees.tree_of(self._runner, self.head())

    def state_tree(self) -> str:
        """The tree id of the worktree as it is now (tracked and untracked, not ignored)."""
        return gittrees.state_tree(self._runner, self.head())

    def head(self) -> str:
        """The commit sha the worktree's HEAD resolves to."""
        return self._runner.resolve_commit("HEAD")

    def _admin_roots(self) -> dict[str, Path]:
        common = self._runner.common_dir
        roots = {name: common / name for name in _COMMON_ADMIN}
        for name in _WORKTREE_ADMIN:
            roots[f"{self._admin_key}/{name}"] = self._runner.admin_dir / name
        roots[GITFILE_KEY] = self.path / ".git"
        return roots

    def _admin_path(self, key: str) -> Path:
        return self.path / ".git" if key == GITFILE_KEY else self._runner.common_dir / key

    def snapshot(self) -> GitSnapshot:
        """Record HEAD, every ref and the admin files (with content copies for rollback).

        Works whatever the researcher did to the worktree's git state (a garbled HEAD gives
        ``head=""`` and ``head_ref=None``).
        """
        head = self._runner.probe("rev-parse", "--verify", "--quiet", "HEAD^{commit}") or ""
        head_ref = self._runner.probe("symbolic-ref", "--quiet", "HEAD") or None
        try:
            listed = self._runner.refs()
        except GitStateError as exc:  # e.g. HEAD garbled: git refuses the worktree
            log.warning("listing refs through the main checkout: %s", exc)
            listed = parse_refs(self.repo.git.for_each_ref(REFS_FORMAT))
        refs = {name: sha for name, (sha, _) in listed.items() if self._watched(name)}
        entries = scan_admin(self._admin_roots())
        return GitSnapshot(head=head, head_ref=head_ref, refs=refs,
                           admin_digest={key: digest(e) for key, e in entries.items()},
                           _admin_bytes=entries)

    def changes_since(self, base: str) -> list[FileChange]:
        """Working tree vs commit ``base``: tracked changes (renames detected) and untracked files.

        Every untracked non-ignored file is listed on its own (kind ``untracked``; ``added``
        means it is also in the worktree's index). Ignored files are not listed.
        """
        base_sha = self._runner.resolve_commit(base)
        tree = gittrees.state_tree(self._runner, base_sha)
        untracked = gittrees.untracked_files(self._runner)
        return [FileChange(path, cast(ChangeKind, "untracked" if kind == "added" and path in
                                      untracked else kind), old)
                for kind, path, old in gittrees.diff_trees(self._runner, base_sha, tree)]

    def ignored_files(self) -> list[str]:
        """Ignored untracked files now present (each file listed), sorted."""
        return gittrees.ignored_files(self._runner)

    def clean_ignored(self, keep: Callable[[str], bool] | None = None) -> list[str]:
        """Delete ignored untracked files, except those ``keep`` is True for.

        Directories left empty by the deletion go too (as with ``git clean -fdX``).

        Returns:
            The repo-relative files (or nested-repository dirs) removed.
        """
        victims = [p for p in self.ignored_files() if keep is None or not keep(p)]
        removed = gittrees.remove_files(self.path, victims)
        if removed:
            log.info("removed %d ignored file(s) from %s", len(removed), self.path)
        return removed

    def _require_on_branch(self) -> None:
        if self._runner.probe("symbolic-ref", "--quiet", "HEAD") != self._branch_ref:
            raise GitStateError(f"the worktree {self.path} is not on {self._branch_ref}; "
                                "roll it back (Workspace.rollback) before committing.")

    def commit_all(self, message: str, trailers: Mapping[str, str] | None = None) -> str:
        """Commit every tracked and untracked non-ignored file on the branch.

        The commit is made even when nothing changed (``--allow-empty``): a round can be
        accepted as an improvement with no diff at all (measurement noise), and it still
        gets its own commit so the history has one commit per accepted round. Hooks never run.

        Args:
            message: The commit message.
            trailers: ``Key: value`` lines appended after a blank line.

        Returns:
            The new HEAD sha.
        """
        self._require_on_branch()
        text = format_message(message, trailers or {})
        self._runner.run("read-tree", "HEAD")
        self._runner.run("add", "--all", "--", ".")
        self._runner.run("commit", "--quiet", "--no-verify", "--allow-empty",
                         "--allow-empty-message", "--no-gpg-sign", "--cleanup=whitespace",
                         "-m", text, config=self._runner.identity_config())
        return self.head()

    def rollback(self, to: str, restore_refs: GitSnapshot | None = None) -> None:
        """Make the worktree exactly commit ``to`` on the branch.

        HEAD is re-attached to the branch, the branch is forced to ``to``, tracked files are
        reset and untracked non-ignored files (and nested repositories) deleted; ignored files
        stay. With ``restore_refs``, git admin files (hooks, config, excludes...) are first put
        back from the snapshot's copies, and afterwards refs created, moved or deleted since the
        snapshot (except ``refs/spml/*`` and the branch itself) are undone.

        Args:
            to: A commit (pass a sha: names like ``HEAD`` resolve after re-attaching).
            restore_refs: The snapshot taken before the round.
        """
        if restore_refs is not None:
            changed = restore_admin(restore_refs._admin_bytes, scan_admin(self._admin_roots()),
                                    self._admin_path)
            for key in changed:
                log.warning("restored git admin file %s", key)
        remove_stale_locks(self._runner.admin_dir, self._runner.common_dir, self.branch)
        attach_head(self._runner, self._branch_ref)
        reset_worktree(self._runner, self._runner.resolve_commit(to))
        if restore_refs is not None:
            restore_refs_to(self._runner, restore_refs.refs, only=self._watched,
                            skip=(self._branch_ref,))

    def _watched(self, name: str) -> bool:
        # The loop's own branch and the stash (shared by all worktrees) are what a researcher
        # could use to smuggle state. Other branches and tags belong to the user, who may keep
        # working in their checkout during a loop: they are neither checked nor restored.
        # Replace refs are watched too: they would rewrite what every other git reader sees.
        return name in (self._branch_ref, "refs/stash") or name.startswith("refs/replace/") \
            or name in self.also_watched

    def archive_attempt(self, ref: str, base: str, message: str) -> str | None:
        """Keep the working-tree state as a commit on ``ref`` (under ``refs/spml/``).

        The commit (parent ``base``) holds tracked and untracked non-ignored files; the
        worktree's index, HEAD and branch are untouched.

        Returns:
            The commit sha, or None when the state equals ``base`` (then any old commit on
            ``ref`` is deleted).
        """
        base_sha = self._runner.resolve_commit(base)
        return self._archive(ref, base_sha, gittrees.state_tree(self._runner, base_sha),
                             message)

    def archive_tree(self, ref: str, base: str, tree: str, message: str) -> str | None:
        """Keep ``tree`` (a `state_tree`, of this worktree or another) as a commit on ``ref``
        (under ``refs/spml/``), parent ``base``; nothing in the worktree changes.

        Returns:
            The commit sha, or None when ``tree`` is ``base``'s (then any old commit on ``ref``
            is deleted).
        """
        return self._archive(ref, self._runner.resolve_commit(base), tree, message)

    def _archive(self, ref: str, base_sha: str, tree: str, message: str) -> str | None:
        if not ref.startswith(PRIVATE_REF_PREFIX):
            raise ValueError(f"an attempt ref must be under {PRIVATE_REF_PREFIX}, got {ref!r}")
        if tree == gittrees.tree_of(self._runner, base_sha):
            self._runner.probe("update-ref", "-d", ref)
            return None
        sha = self._runner.run("commit-tree", "--no-gpg-sign", "-p", base_sha, "-m", message,
                               tree, config=self._runner.identity_config())
        self._runner.run("update-ref", "-m", "spml: archive an attempt", ref, sha)
        return sha

    def load_tree(self, tree: str) -> None:
        """Make the worktree's files (and index) those of ``tree``, HEAD and branch unmoved:
        another worktree's state, carried over to be committed or archived here. The worktree
        must be clean (see `rollback`)."""
        self._runner.run("read-tree", "-u", "--reset", tree)

    def diff_stat(self, old: str, new: str) -> str:
        """`git diff --stat` from ``old`` to ``new`` ('' when git cannot tell): the size of a
        round's change, for people (never for a decision)."""
        return self._runner.probe("diff", "--stat=80", "--no-color", "--no-ext-diff",
                                  old, new) or ""

    def attempt(self, ref: str) -> str | None:
        """The commit ``ref`` points to (an archived attempt), or None."""
        return self._runner.probe("rev-parse", "--verify", "-q", f"{ref}^{{commit}}")

    def find_commit(self, *lines: str) -> str | None:
        """The newest commit on the branch whose message has every line in ``lines``."""
        # Whole lines: `Spml-Round: 1` must not find `Spml-Round: 10`.
        greps = [f"--grep=^{_escape_regex(line)}$" for line in lines]
        found = self._runner.probe("log", "-1", "--format=%H", "--extended-regexp",
                                   "--all-match", *greps, self._branch_ref)
        return found or None

    def round_trailers(self, key: str = "Spml-Round", having: Sequence[str] = ()) -> list[int]:
        """The round numbers named by ``key`` trailers of the branch's commits whose message
        has every line in ``having`` (e.g. the generation's trailer)."""
        greps = [f"--grep=^{_escape_regex(line)}$" for line in having]
        out = self._runner.probe("log", f"--format=%(trailers:key={key},valueonly)",
                                 "--extended-regexp", "--all-match", *greps,
                                 self._branch_ref) or ""
        return [int(v) for v in out.split() if v.isdigit()]

    def replay(self, commit: str, *, revert: bool) -> None:
        """Apply ``commit``'s change (or its reverse) to the worktree, uncommitted.

        Raises:
            GitStateError: it does not apply cleanly; the worktree is reset to HEAD.
        """
        self._require_on_branch()
        verb = "revert" if revert else "cherry-pick"
        try:
            self._runner.run(verb, "--no-commit", commit, config=self._runner.identity_config())
        except GitStateError:
            self._runner.probe(verb, "--abort")
            self.rollback(self.head())
            raise GitStateError(f"the change of {commit[:7]} does not apply cleanly on "
                                f"HEAD {self.head()[:7]}") from None

    def restore_paths(self, commit: str, paths: Sequence[str]) -> None:
        """Make these repo-relative paths as in ``commit``, in the worktree and the index.

        Paths absent from ``commit`` are deleted (and unstaged).
        """
        if not paths:
            return
        sha = self._runner.resolve_commit(commit)
        listed = self._runner.run("ls-tree", "-z", "--name-only", "--full-tree", sha, "--",
                                  *paths)
        present = set(listed.split("\0"))
        found = [p for p in paths if p in present]
        missing = [p for p in paths if p not in present]
        if found:
            self._runner.run("checkout", sha, "--", *found)
        if missing:
            self._runner.run("rm", "--cached", "-r", "-q", "--ignore-unmatch", "--", *missing)
            gittrees.remove_files(self.path, missing)

    def is_ignored(self, path: str) -> bool:
        """Whether git ignores the repo-relative ``path`` in this worktree (a file created
        there would never be seen, committed or archived)."""
        found = self._runner.probe("check-ignore", "--quiet", "--no-index", "--", path,
                                   literal=False)
        return found is not None

    def tree_blob_ids(self, commit: str, pred: Callable[[str], bool]) -> dict[str, str]:
        """Repo path -> blob sha of the files in ``commit`` for which ``pred(path)`` is True."""
        return gittrees.tree_blobs(self._runner, self._runner.resolve_commit(commit), pred)

    def worktree_blob_ids(self, paths: Sequence[str]) -> dict[str, str | None]:
        """Repo path -> blob sha of the working-tree file as git would store it (None: missing).

        Compare with :meth:`tree_blob_ids` to re-verify fixed files right before evaluation.
        """
        return gittrees.worktree_blobs(self._runner, paths)


def uncommitted_files(repo_dir: Path, under: str) -> dict[str, bool]:
    """Repo-relative files under ``under`` that differ from HEAD in the checkout of
    ``repo_dir`` (modified, staged, deleted or untracked; not ignored ones), each mapped to
    whether it is untracked."""
    checkout = git.Git(str(repo_dir))
    command = [checkout.GIT_PYTHON_GIT_EXECUTABLE or "git", *config_args(HARDENING), "status",
               "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--", under]
    try:
        out = checkout.execute(command, env={"GIT_LITERAL_PATHSPECS": "1"})
    except git.GitCommandError as exc:
        raise GitStateError(f"`git status` failed in {repo_dir}: {describe_git_error(exc)}."
                            ) from exc
    entries = sorted(entry for entry in out.split("\0") if len(entry) > 3)
    return {entry[3:]: entry.startswith("??") for entry in entries}


def _escape_regex(text: str) -> str:
    """``text`` as a literal in git's extended regular expressions."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text)


def ensure_excluded(repo_dir: Path, pattern: str) -> None:
    """Append ``pattern`` to the common ``.git/info/exclude`` unless a line already equals it.

    Call it before taking snapshots: the exclude file is one of the watched admin files.
    """
    exclude = common_dir(find_repo(Path(repo_dir))) / "info" / "exclude"
    text = exclude.read_text() if exclude.is_file() else ""
    if pattern in (line.strip() for line in text.splitlines()):
        return
    exclude.parent.mkdir(parents=True, exist_ok=True)
    prefix = "" if not text or text.endswith("\n") else "\n"
    exclude.write_text(f"{text}{prefix}{pattern}\n")
    log.info("added %r to %s", pattern, exclude)
