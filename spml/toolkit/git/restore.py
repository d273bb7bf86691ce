"""Undo a round: re-attach HEAD, reset the working tree exactly, put refs back.

Also formats the supervisor's commit messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from spml.errors import GitStateError
from spml.toolkit.git.runner import GitRunner
from spml.toolkit.git.trees import state_tree, tree_of

log = logging.getLogger(__name__)


def attach_head(runner: GitRunner, branch_ref: str) -> None:
    """Point HEAD at ``branch_ref`` again (symbolically), even if HEAD was garbled."""
    if runner.probe("symbolic-ref", "--quiet", "HEAD") == branch_ref:
        return
    log.warning("re-attaching HEAD of %s to %s", runner.worktree, branch_ref)
    if runner.probe("symbolic-ref", "HEAD", branch_ref) is None:
        (runner.admin_dir / "HEAD").write_text(f"ref: {branch_ref}\n")


def reset_worktree(runner: GitRunner, target: str) -> None:
    """``reset --hard target`` + ``clean -ffd``, verified by hashing the result.

    The index is trusted first (fast); if the result does not match ``target``'s tree (the
    index was corrupt, or had entries marked assume-unchanged/skip-worktree or forged stat
    data), the index is deleted and the reset repeated, which rewrites every tracked file.

    Raises:
        GitStateError: the worktree still differs from ``target``.
    """
    for attempt in range(2):
        if attempt:
            log.warning("worktree %s did not match %s after reset; rebuilding the index",
                        runner.worktree, target[:12])
            runner.index_file.unlink(missing_ok=True)
        try:
            runner.run("reset", "--hard", "--quiet", target)
            runner.run("clean", "-f", "-f", "-d", "--quiet")
        except GitStateError:
            if attempt:
                raise
            continue
        if state_tree(runner, target) == tree_of(runner, target):
            return
    raise GitStateError(f"could not restore {runner.worktree} to {target}; delete the worktree "
                        "directory, run `git worktree prune`, and restart.")


def restore_refs_to(runner: GitRunner, saved: Mapping[str, str], skip: Sequence[str],
                    only: Callable[[str], bool] = lambda name: True) -> None:
    """Delete, reset or recreate refs so they equal ``saved`` again.

    Args:
        runner: The worktree's runner.
        saved: Ref -> sha as recorded before the round.
        skip: Ref names or prefixes left alone (the supervisor's branch, ``refs/spml/``).
        only: The refs this restore is about; every other ref is left alone.
    """
    def kept(name: str) -> bool:
        skipped = any(name == s or (s.endswith("/") and name.startswith(s)) for s in skip)
        return only(name) and not skipped

    wanted = {n: sha for n, sha in saved.items() if kept(n)}
    current = {n: v for n, v in runner.refs().items() if kept(n)}
    for name in sorted(set(current) - set(wanted)):
        log.warning("deleting ref %s created during the round", name)
        runner.run("update-ref", "--no-deref", "-d", name)
    for name, sha in sorted(wanted.items()):
        now = current.get(name)
        # A symbolic ref follows its target, which this loop restores on its own.
        if now is None or (now[0] != sha and not now[1]):
            log.warning("restoring ref %s to %s", name, sha[:12])
            runner.run("update-ref", "--no-deref", name, sha)


def format_message(message: str, trailers: Mapping[str, str]) -> str:
    """``message``, a blank line, then one ``Key: value`` line per trailer.

    Raises:
        ValueError: a trailer key is not a single word or a value spans lines.
    """
    text = message.strip()
    lines = []
    for key, value in trailers.items():
        if not key or not all(c.isalnum() or c == "-" for c in key):
            raise ValueError(f"trailer key must be letters, digits and '-', got {key!r}")
        if "\n" in str(value):
            raise ValueError(f"trailer {key} must be one line, got {value!r}")
        lines.append(f"{key}: {value}")
    return f"{text}\n\n" + "\n".join(lines) if lines else text


