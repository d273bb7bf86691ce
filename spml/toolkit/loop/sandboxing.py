"""The sandbox of a loop's commands (the protocol's `sandbox:`; mechanism in
`spml.toolkit.process.sandbox`).

Every command the loop runs on the researcher's behalf — the researcher, each training, each
evaluation and custom check — runs `confined`: it writes only to the worktree (whose ``.git``
pointer file stays read-only), a private temporary directory, the paths the command needs from
the supervisor (the researcher's strategy file, the evaluation's metric file) and the protocol's
``sandbox.writable``. The main repository, the user's home and site-packages are read-only;
the state directory of the loop (`.spml/`: journals, measurements, the ledger's copy) too.

`sandbox_status` says in words what was enforced: the ledger header and the summary carry it, so
a loop that ran unconfined (``sandbox: auto`` on a kernel without user namespaces) says so.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from git import GitCommandError

from spml.errors import ProtocolError
from spml.protocols.sandbox import SandboxSpec
from spml.toolkit.process.sandbox import Confinement, unavailable_reason

if TYPE_CHECKING:
    from spml.toolkit.loop.session import LoopSession

log = logging.getLogger(__name__)


def sandbox_spec(protocol: object) -> SandboxSpec:
    """The protocol's sandbox section (older accepted protocols have none: the default)."""
    spec = getattr(protocol, "sandbox", None)
    return spec if isinstance(spec, SandboxSpec) else SandboxSpec()


def confines(spec: SandboxSpec) -> bool:
    """Whether commands under ``spec`` really run in a sandbox here."""
    return spec.mode != "off" and not unavailable_reason()


def sandbox_status(session: LoopSession) -> str:
    """One line for the ledger header and the summary."""
    spec = sandbox_spec(session.protocol)
    if spec.mode == "off":
        return "off (sandbox: off in the protocol): commands run unconfined"
    if reason := unavailable_reason():
        return f"UNCONFINED: {reason}"
    extra = f", {', '.join(spec.writable)}" if spec.writable else ""
    network = "" if spec.network else "; no network"
    holdout = getattr(session.protocol, "holdout", None)
    sealed = f"; sealed holdout: {', '.join(holdout.paths)}" if holdout else ""
    return (f"on (bwrap): commands write only to the worktree and a private tmp{extra}"
            f"{network}{sealed}")


def check_sandbox(session: LoopSession) -> None:
    """Refuse ``sandbox: on`` where no sandbox can be built; warn for ``auto`` (preflight)."""
    spec = sandbox_spec(session.protocol)
    reason = unavailable_reason() if spec.mode != "off" else ""
    if reason and spec.mode == "on":
        raise ProtocolError(f"sandbox: on, but {reason}. Allow unprivileged user namespaces "
                            "(sysctl kernel.unprivileged_userns_clone=1) or set sandbox: auto")
    if reason:
        log.warning("the researcher, training and evaluation run UNCONFINED: %s "
                    "(sandbox: auto; compliance checks still apply)", reason)
    elif spec.mode == "off":
        log.warning("sandbox: off — the researcher, training and evaluation run unconfined")


def sealed_paths(session: LoopSession) -> tuple[Path, ...]:
    """What no round may read: the protocol's holdout paths in the person's checkout (where the
    untracked data lies), where they and the links inside them really point, and the state
    folders whose logs hold results measured on the holdout; for a batch's candidate, its
    siblings' worktrees and round folders."""
    holdout = getattr(session.protocol, "holdout", None)
    if holdout is None:
        return session.sealed_extra
    state = session.experiment.state_dir
    return (*_resolved(session.experiment.exp_dir, tuple(holdout.paths)),
            state / "holdout", state / "verify", *session.sealed_extra)


@functools.cache
def _resolved(exp_dir: Path, paths: tuple[str, ...]) -> tuple[Path, ...]:
    """Each path and, through symbolic links (the path itself, or links inside a folder), the
    place it really is: a seal at the link alone would leave the real place readable."""
    found: dict[Path, None] = {}
    for path in paths:
        where = exp_dir / path
        found[where.resolve()] = None
        if where.is_dir():
            for inner in where.rglob("*"):
                if inner.is_symlink():
                    found[inner.resolve()] = None
    return tuple(found)


def command_box(session: LoopSession, worktree: Path, *writable: Path,
                evaluation: bool = False) -> AbstractContextManager[Confinement | None]:
    """`confined` with the session's sandbox section and its sealed holdout (which only the
    holdout's own evaluation at the loop's end may read)."""
    unsealed = evaluation and session.reads_holdout
    return confined(sandbox_spec(session.protocol), worktree, *writable,
                    sealed=() if unsealed else sealed_paths(session))


def check_holdout(session: LoopSession) -> None:
    """A holdout must exist and never have been committed: git history would hand it to the
    researcher."""
    holdout = getattr(session.protocol, "holdout", None)
    for path in holdout.paths if holdout else []:
        where = session.experiment.exp_dir / path
        if not where.exists():
            raise ProtocolError(f"holdout.paths: {path!r} does not exist in "
                                f"{session.experiment.exp_dir}; put the held-out data there "
                                "(untracked) or fix the path")
        git = session.workspace.repo.git
        try:
            tracked = git.ls_files("--", str(where)) or \
                git.log("--all", "--format=%h", "-1", "--", str(where))
        except GitCommandError as exc:
            raise ProtocolError(f"holdout.paths: git cannot look up {path!r}: "
                                f"{exc.stderr.strip()}") from None
        if tracked:
            raise ProtocolError(
                f"holdout.paths: {path!r} is or was tracked by git ({tracked.splitlines()[0]}), "
                "so the repository hands it to the researcher. Take a new held-out split, "
                "keep it untracked (.gitignore) and out of every commit")
    for sealed in sealed_paths(session):
        if session.experiment.exp_dir.resolve().is_relative_to(sealed):
            raise ProtocolError(f"holdout.paths lead to {sealed}, which holds the experiment "
                                "itself: point them (and the links inside) at the data only")
    if holdout and not confines(sandbox_spec(session.protocol)):
        log.warning("holdout %s is NOT sealed: the commands run unconfined",
                    ", ".join(holdout.paths))


@contextmanager
def confined(spec: SandboxSpec, worktree: Path, *writable: Path,
             sealed: tuple[Path, ...] = ()) -> Iterator[Confinement | None]:
    """The confinement of one command run in ``worktree`` (None: run unconfined), with a
    private temporary directory that is removed afterwards; ``sealed`` paths read as empty."""
    if not confines(spec):
        yield None
        return
    granted = [Path(p).expanduser() for p in spec.writable]
    for path in granted:  # a coding agent's config dir may not exist yet
        path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spml-sandbox-") as tmp:
        yield Confinement(writable=(worktree, *writable, *granted), tmpdir=Path(tmp),
                          read_only=(worktree / ".git",), network=spec.network,
                          sealed=sealed)
