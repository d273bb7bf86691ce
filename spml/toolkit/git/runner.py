"""Run git (through GitPython) against one linked worktree, with hardened options.

Every command names the worktree's admin dir, the common git dir and the working tree
explicitly (``GIT_DIR``/``GIT_COMMON_DIR``/``GIT_WORK_TREE``), so a researcher who rewrites the
worktree's ``.git`` link file cannot redirect the supervisor to another repository. Hooks, the
fsmonitor daemon hook, the untracked cache, commit signing and auto-gc are switched off for
every command.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import git

from spml.errors import GitStateError

log = logging.getLogger(__name__)

GIT_IDENTITY = ("spml", "spml@localhost")
"""Author/committer used only when the repository has no ``user.name``/``user.email``."""

HARDENING = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "gc.auto=0",
    "maintenance.auto=false",
)


def config_args(pairs: Iterable[str]) -> list[str]:
    """``-c key=value`` arguments for each pair."""
    args: list[str] = []
    for pair in pairs:
        args += ["-c", pair]
    return args


def describe_git_error(exc: git.GitCommandError) -> str:
    """The useful part of a failed git command's stderr."""
    stderr = exc.stderr.strip() if isinstance(exc.stderr, str) else str(exc.stderr)
    return stderr.removeprefix("stderr:").strip().strip("'").strip() or f"exit {exc.status}"


class GitRunner:
    """Runs git commands in one linked worktree with explicit repository paths."""

    def __init__(self, worktree: Path, admin_dir: Path, common_dir: Path) -> None:
        """Bind to a worktree.

        Args:
            worktree: The worktree root.
            admin_dir: The worktree's admin dir (``<common>/worktrees/<id>``).
            common_dir: The repository's common git dir.
        """
        self.worktree = worktree
        self.admin_dir = admin_dir
        self.common_dir = common_dir
        self.index_file = admin_dir / "index"
        self._git = git.Git(str(worktree))

    def _env(self, index_file: Path | None, literal: bool = True) -> dict[str, str]:
        return {
            "GIT_DIR": str(self.admin_dir),
            "GIT_COMMON_DIR": str(self.common_dir),
            "GIT_WORK_TREE": str(self.worktree),
            "GIT_INDEX_FILE": str(index_file or self.index_file),
            # `check-ignore` refuses literal pathspecs; it takes plain paths anyway.
            "GIT_LITERAL_PATHSPECS": "1" if literal else "0",
            "GIT_TERMINAL_PROMPT": "0",
            # `git replace` would let a researcher swap the fixed files' blobs in every read.
            "GIT_NO_REPLACE_OBJECTS": "1",
        }

    def run(self, *args: str, index_file: Path | None = None, config: Iterable[str] = (),
            stdin: object | None = None, literal: bool = True) -> str:
        """Run ``git <args>`` and return its stdout (one trailing newline stripped).

        Args:
            *args: The git subcommand and its arguments.
            index_file: Use this index instead of the worktree's own.
            config: Extra ``key=value`` settings passed as ``-c``.
            stdin: A file object to feed to the command's standard input.
            literal: Read pathspecs literally (every command but `check-ignore`).

        Raises:
            GitStateError: git failed; the message carries git's own explanation.
        """
        command = [self._git.GIT_PYTHON_GIT_EXECUTABLE or "git",
                   *config_args([*HARDENING, *config]), *args]
        try:
            return self._git.execute(command, env=self._env(index_file, literal), istream=stdin)
        except git.GitCommandError as exc:
            raise GitStateError(
                f"`git {' '.join(args[:3])}` failed in worktree {self.worktree}: "
                f"{describe_git_error(exc)}. Fix the repository state (or delete the worktree "
                "and its branch to start over)."
            ) from exc

    def probe(self, *args: str, index_file: Path | None = None,
              literal: bool = True) -> str | None:
        """Like :meth:`run`, but return None instead of raising when git fails."""
        try:
            return self.run(*args, index_file=index_file, literal=literal)
        except GitStateError as exc:
            log.debug("git probe failed: %s", exc)
            return None

    def identity_config(self) -> list[str]:
        """``key=value`` settings for the fallback identity, for keys the repo lacks."""
        pairs = []
        for key, value in zip(("user.name", "user.email"), GIT_IDENTITY, strict=True):
            if not self.probe("config", "--get", key):
                pairs.append(f"{key}={value}")
        return pairs

    def resolve_commit(self, rev: str) -> str:
        """The commit sha ``rev`` names.

        Raises:
            GitStateError: ``rev`` names no commit.
        """
        sha = self.probe("rev-parse", "--verify", "--quiet", "--end-of-options",
                         f"{rev}^{{commit}}")
        if not sha:
            raise GitStateError(f"{rev!r} names no commit in the repository of {self.worktree}; "
                                "pass a commit sha that exists.")
        return sha

    def refs(self) -> dict[str, tuple[str, str]]:
        """Every ref -> (sha, symref target or "") as ``for-each-ref`` lists them."""
        return parse_refs(self.run("for-each-ref", REFS_FORMAT))


REFS_FORMAT = "--format=%(refname)%00%(objectname)%00%(symref)"


def parse_refs(out: str) -> dict[str, tuple[str, str]]:
    """Parse ``for-each-ref`` output in :data:`REFS_FORMAT`."""
    refs: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        name, sha, symref = (line.split("\0") + ["", ""])[:3]
        refs[name] = (sha, symref)
    return refs


def split_z(output: str) -> list[str]:
    """Split NUL-terminated git output into its fields."""
    return [item for item in output.split("\0") if item]


def drop_prefixed(refs: Mapping[str, str], prefix: str) -> dict[str, str]:
    """``refs`` without the names starting with ``prefix``."""
    return {name: sha for name, sha in refs.items() if not name.startswith(prefix)}
