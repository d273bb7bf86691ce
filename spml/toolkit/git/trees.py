"""Read-only views of a worktree: its state as a tree object, changes, blob ids, ignored files.

The working-tree state is computed in a throw-away index (``GIT_INDEX_FILE``), so the
worktree's own index, HEAD and branch are never touched. That index is built from the base tree
(``read-tree``), never copied from the worktree's index: a researcher could mark entries
assume-unchanged/skip-worktree or forge their stat data to hide an edit. ``git add -A`` then
hashes every tracked and untracked non-ignored file (cost: one read of the tracked files).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from spml.toolkit.git.runner import GitRunner, split_z

_KINDS = {"M": "modified", "A": "added", "D": "deleted", "R": "renamed", "T": "typechange"}

RawChange = tuple[str, str, str | None]
"""(kind, path, old_path) with repo-relative POSIX paths."""


def state_tree(runner: GitRunner, base: str) -> str:
    """Tree id of the working tree's tracked and untracked non-ignored files.

    Args:
        runner: The worktree's runner.
        base: Commit whose tree seeds the temporary index (files it tracks stay tracked even
            when an ignore rule matches them, as in the worktree's own index).
    """
    with tempfile.TemporaryDirectory(prefix="spml-index-") as tmp:
        index = Path(tmp) / "index"
        runner.run("read-tree", base, index_file=index)
        runner.run("add", "--all", "--", ".", index_file=index)
        return runner.run("write-tree", index_file=index)


def tree_of(runner: GitRunner, commit: str) -> str:
    """The tree id of ``commit``."""
    return runner.run("rev-parse", "--verify", "--end-of-options", f"{commit}^{{tree}}")


def untracked_files(runner: GitRunner) -> set[str]:
    """Untracked non-ignored files relative to the worktree's own index."""
    out = runner.probe("ls-files", "-z", "--others", "--exclude-standard")
    return {path.rstrip("/") for path in split_z(out or "")}


def diff_trees(runner: GitRunner, old: str, new: str) -> list[RawChange]:
    """Changes from tree-ish ``old`` to ``new`` with rename detection."""
    fields = split_z(runner.run("diff-tree", "-r", "-z", "--name-status", "-M",
                                "--no-ext-diff", "--no-textconv", old, new))
    changes: list[RawChange] = []
    i = 0
    while i < len(fields):
        status = fields[i][0]
        if status in "RC":
            changes.append(("renamed" if status == "R" else "added", fields[i + 2],
                            fields[i + 1] if status == "R" else None))
            i += 3
        else:
            changes.append((_KINDS.get(status, "modified"), fields[i + 1], None))
            i += 2
    return changes


def tree_blobs(runner: GitRunner, commit: str, pred: Callable[[str], bool]) -> dict[str, str]:
    """Repo path -> blob id of the files in ``commit`` whose path satisfies ``pred``."""
    out = runner.run("ls-tree", "-r", "-z", "--full-tree", commit)
    blobs: dict[str, str] = {}
    for item in split_z(out):
        meta, _, path = item.partition("\t")
        _mode, kind, sha = meta.split(" ")
        if kind == "blob" and pred(path):
            blobs[path] = sha
    return blobs


def _hash_link(runner: GitRunner, path: Path) -> str:
    with tempfile.TemporaryFile() as handle:
        handle.write(path.readlink().as_posix().encode("utf-8", "surrogateescape"))
        handle.seek(0)
        return runner.run("hash-object", "--no-filters", "--stdin", stdin=handle)


def worktree_blobs(runner: GitRunner, paths: Sequence[str]) -> dict[str, str | None]:
    """Blob id each working-tree file would get when added (None: missing or not a file)."""
    result: dict[str, str | None] = {}
    regular: list[str] = []
    for rel in paths:
        path = runner.worktree / rel
        if path.is_symlink():
            result[rel] = _hash_link(runner, path)
        elif path.is_file():
            regular.append(rel)
        else:
            result[rel] = None
    if regular:
        shas = runner.run("hash-object", "--", *regular).splitlines()
        result.update(zip(regular, shas, strict=True))
    return {rel: result[rel] for rel in paths}


def ignored_files(runner: GitRunner) -> list[str]:
    """Untracked files that ignore rules hide (what ``git clean -X`` would delete), sorted."""
    out = runner.run("ls-files", "-z", "--others", "--ignored", "--exclude-standard")
    return sorted(path.rstrip("/") for path in split_z(out))


def remove_files(root: Path, paths: Sequence[str]) -> list[str]:
    """Delete files under ``root`` and then every directory left empty by that, up to root."""
    removed, parents = [], set()
    for rel in paths:
        path = root / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        removed.append(rel)
        parents.update(path.parents)
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        if parent != root and root in parent.parents and parent.is_dir() \
                and not parent.is_symlink() and not any(parent.iterdir()):
            parent.rmdir()
    return removed
