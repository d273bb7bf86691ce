"""S2 compliance: did the researcher touch only what the protocol lets it touch?

Compares two :class:`~spml.toolkit.git.workspace.GitSnapshot` (before / after the researcher)
and the file changes since the round's base. Every violation is reported, in a fixed order:
HEAD, refs (by name), git admin files (by name), then file changes (by path).
"""

from __future__ import annotations

import logging
import posixpath
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spml.toolkit.files import write_atomic
from spml.toolkit.git.workspace import FileChange, GitSnapshot
from spml.toolkit.globs import compile_globs
from spml.toolkit.loop.begin import RoundPlan
from spml.toolkit.loop.handedits import hold_protocol_edit, reconcile_ledger
from spml.toolkit.loop.overrides import hold_overrides_queued_since
from spml.toolkit.loop.session import LoopSession

log = logging.getLogger(__name__)

__all__ = ["Violation", "changed_path_violations", "check_compliance", "check_round",
           "restore_supervisor_files", "verify_fixed_files"]

_MODULE_SUFFIXES = (".py", ".pyc", ".pyw", ".pyd", ".so")
_CUSTOMIZE = frozenset({"sitecustomize", "usercustomize"})
_NEW_KINDS = frozenset({"added", "untracked", "renamed"})
_VERBS = {"modified": "modified", "added": "created", "untracked": "created",
          "deleted": "deleted", "typechange": "changed the type of", "renamed": "moved"}


@dataclass(frozen=True)
class Violation:
    """One forbidden change: ``path`` (a repo path, ref or admin file) and why, in a sentence."""

    path: str
    reason: str


def _short(sha: str) -> str:
    return sha[:7] if sha else "nothing"


def _head_violations(before: GitSnapshot, after: GitSnapshot) -> list[Violation]:
    if after.head_ref != before.head_ref:
        where = (f"detached HEAD at {_short(after.head)}" if after.head_ref is None
                 else f"switched HEAD to {after.head_ref} ({_short(after.head)})")
        return [Violation("HEAD", f"{where}; HEAD must stay on {before.head_ref}")]
    if after.head != before.head:
        return [Violation("HEAD", f"moved HEAD (new commit {_short(after.head)}); the "
                                  "researcher must not commit, reset or check out")]
    return []


def _ref_violations(before: GitSnapshot, after: GitSnapshot) -> list[Violation]:
    out = []
    head_moved = after.head != before.head and after.head_ref == before.head_ref
    for name in sorted(set(before.refs) | set(after.refs)):
        old, new = before.refs.get(name), after.refs.get(name)
        if old == new or (head_moved and name == before.head_ref):
            continue  # the branch moving with HEAD is reported once, as HEAD
        if old is None:
            out.append(Violation(name, f"created ref {name} at {_short(new or '')}"))
        elif new is None:
            out.append(Violation(name, f"deleted ref {name}"))
        else:
            out.append(Violation(name, f"moved ref {name} ({_short(old)} -> {_short(new)})"))
    return out


def _admin_violations(before: GitSnapshot, after: GitSnapshot) -> list[Violation]:
    out = []
    for key in sorted(set(before.admin_digest) | set(after.admin_digest)):
        old, new = before.admin_digest.get(key), after.admin_digest.get(key)
        if old != new:
            verb = "created" if old is None else "deleted" if new is None else "changed"
            out.append(Violation(key, f"{verb} git admin file {key}"))
    return out


def _relative(path: str, exp_rel: str) -> str | None:
    if exp_rel == ".":
        return path
    return path[len(exp_rel) + 1:] if path.startswith(exp_rel + "/") else None


class _Rules:
    """The protocol's globs, resolved once per check."""

    def __init__(self, exp_rel: str, variable: Sequence[str], fixed: Sequence[str],
                 fixed_module_names: frozenset[str]) -> None:
        self.exp_rel = posixpath.normpath(exp_rel.strip("/") or ".")
        self.is_variable: Callable[[str], bool] = compile_globs(list(variable))
        self.is_fixed: Callable[[str], bool] = compile_globs(list(fixed))
        self.protected = frozenset(sys.stdlib_module_names) | _CUSTOMIZE | fixed_module_names

    def path_violation(self, path: str, kind: str) -> Violation | None:
        """Whether changing ``path`` this way (a ``_VERBS`` key) is forbidden."""
        verb = _VERBS[kind]
        rel = _relative(path, self.exp_rel)
        if rel is not None and self.is_fixed(rel):
            return Violation(path, f"{verb} fixed file {rel}")
        verb = "changed" if kind == "modified" else verb
        if rel is None:
            return Violation(path, f"{verb} file {path} outside the experiment directory "
                                   f"{self.exp_rel}")
        if not self.is_variable(rel):
            return Violation(path, f"{verb} file {rel} outside variable files")
        return None

    def shadow_violation(self, path: str) -> Violation | None:
        """Whether a new file at ``path`` would shadow a module or hook into site."""
        rel = _relative(path, self.exp_rel)
        if rel is None:
            return None
        if rel.endswith(".pth"):
            return Violation(path, f"file {rel} is a .pth file, which can run code at "
                                   "interpreter start")
        if not rel.endswith(_MODULE_SUFFIXES):
            return None
        parts = rel.split("/")
        module = parts[0].split(".", 1)[0] if len(parts) == 1 else parts[0]
        if module in self.protected:
            return Violation(path, f"file {rel} would shadow module {module}")
        return None


def _change_violations(change: FileChange, rules: _Rules) -> list[Violation]:
    if change.kind == "renamed" and change.old_path is not None:
        moves = [(change.old_path, "deleted"), (change.path, "added")]
    else:
        moves = [(change.path, change.kind)]
    found = [rules.path_violation(path, kind) for path, kind in moves]
    if change.kind in _NEW_KINDS:
        found.append(rules.shadow_violation(change.path))
    return [v for v in found if v is not None]


def check_compliance(  # noqa: PLR0913 -- the interface the round engine calls
    before: GitSnapshot, after: GitSnapshot, changes: Sequence[FileChange], *, exp_rel: str,
    variable: Sequence[str], fixed: Sequence[str],
    fixed_module_names: frozenset[str] = frozenset(),
) -> list[Violation]:
    """List every forbidden thing the researcher did during a round.

    Args:
        before: Snapshot taken before the researcher ran.
        after: Snapshot taken after it.
        changes: Working-tree changes since the round's base (repo-relative paths).
        exp_rel: The experiment directory relative to the repo root ("." for the root).
        variable: Globs (relative to the experiment dir) the researcher may change or create.
        fixed: Globs it must never touch (these win over ``variable``).
        fixed_module_names: Module names of fixed Python files, which new files must not
            shadow.

    Returns:
        The violations, HEAD first, then refs, admin files and file changes, each by name.
        Empty when the round complies.
    """
    rules = _Rules(exp_rel, variable, fixed, fixed_module_names)
    found = _head_violations(before, after) + _ref_violations(before, after)
    found += _admin_violations(before, after)
    for change in sorted(changes, key=lambda c: (c.path, c.old_path or "")):
        found += _change_violations(change, rules)
    return found


def changed_path_violations(changes: Sequence[tuple[str, str]], *, exp_rel: str,
                            variable: Sequence[str], fixed: Sequence[str]) -> list[Violation]:
    """The forbidden ones among ``(path, kind)`` changes (a ``git diff --name-status`` between
    two commits: kinds ``modified``, ``added``, ``deleted``, ``typechange``), by path."""
    rules = _Rules(exp_rel, variable, fixed, frozenset())
    found = [rules.path_violation(path, kind) for path, kind in sorted(changes)]
    return [v for v in found if v is not None]


# --- the round's S2 step, on a session and its plan -------------------------------------------

def check_round(session: LoopSession, plan: RoundPlan,
                after_researcher: bool = True) -> list[Violation]:
    """S2: every change since the base must be an allowed change of a variable file.

    The ledger and the protocol are people's files too, and never fail a round (see
    `handedits`): the ledger keeps text edits and loses edits of facts; a protocol edit made
    while the researcher ran is held (it could be the researcher widening its own rights), one
    made during training is the person's and applies next round.
    """
    return check_shared_state(session, plan, check_changes(session, plan), after_researcher)


def check_changes(session: LoopSession, plan: RoundPlan) -> list[Violation]:
    """The git side of S2, in the session's own worktree alone (candidates of a batch are
    checked at once): the changes since the base, and the git state since the snapshot."""
    workspace, experiment = session.workspace, session.experiment
    fixed = session.fixed_paths(plan.base)
    return check_compliance(
        plan.snapshot, workspace.snapshot(), workspace.changes_since(plan.base),
        exp_rel=experiment.exp_rel, variable=session.protocol.editable_files,
        fixed=session.fixed_globs, fixed_module_names=_module_names(fixed),
    )


def check_shared_state(session: LoopSession, plan: RoundPlan, violations: list[Violation],
                    after_researcher: bool = True) -> list[Violation]:
    """The rest of S2, on the files the supervisor and people share (one round at a time):
    supervisor files restored, the ledger reconciled, protocol edits and overrides held."""
    experiment = session.experiment
    violations = list(violations)
    protocol = str(experiment.protocol_path)
    # The supervisor's files first: the ledger is then judged against an untouched copy.
    violations += restore_supervisor_files(plan, skip=(protocol,))
    reconcile_ledger(experiment)
    if after_researcher:
        round_dir = experiment.round_dir(plan.round_no)
        hold_protocol_edit(experiment, plan.supervisor_files.get(protocol), round_dir)
        for note in hold_overrides_queued_since(experiment, plan.queued_overrides, round_dir):
            log.warning("round %d: %s", plan.round_no, note)
    for violation in violations:
        log.warning("round %d compliance: %s", plan.round_no, violation.reason)
    return violations


def restore_supervisor_files(plan: RoundPlan, skip: tuple[str, ...] = ()) -> list[Violation]:
    """Put back any supervisor file changed since the round began; one violation each."""
    violations = []
    for name, content in plan.supervisor_files.items():
        if name in skip:
            continue
        path = Path(name)
        current = path.read_bytes() if path.is_file() else None
        if current == content:
            continue
        if content is None:
            path.unlink()
        else:
            write_atomic(path, content)
        violations.append(Violation(path.name, f"modified supervisor file {path.name} "
                                               "(restored)"))
    return violations


def _module_names(fixed_paths: dict[str, str]) -> frozenset[str]:
    names = set()
    for path in fixed_paths:
        name = path.rsplit("/", 1)[-1]
        if name.endswith(".py"):
            names.add(name[:-3])
    return frozenset(names)


def verify_fixed_files(session: LoopSession, plan: RoundPlan) -> list[Violation]:
    """Fixed files must be byte-identical to the base commit (checked right before eval)."""
    expected = session.fixed_paths(plan.base)
    actual = session.workspace.worktree_blob_ids(list(expected))
    return [Violation(path, f"fixed file {path} was "
                      f"{'deleted' if actual[path] is None else 'modified'} during the round")
            for path in expected if actual[path] != expected[path]]

