"""Candidates trained and evaluated on another machine (`parallel: {runner: dask}`).

Nothing is assumed of the worker's filesystem. The supervisor makes each candidate's files a
commit (parent: the batch's base) on `refs/spml/candidates/<experiment>/<round>` and pushes it to
`parallel.git_remote` (`ship_candidate`); the job names that ref and carries, as data, the
accepted protocol and the supervisor's evidence (the ledger and the measurements before the
batch: the sequential test decides how many seeds a candidate needs from them). The worker
(`measure_remotely`) fetches the ref into a scratch clone, lays it out as the supervisor's own
repository is (a checkout of the base, the loop worktree holding the candidate's files), runs the
same `measure`, and sends back the measurement and the round's logs (`receive_measurement` saves
them where a local candidate's would be). The scratch clone is removed afterwards.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git

from spml.errors import ProtocolError
from spml.toolkit.files import write_atomic
from spml.toolkit.git.setup import run_git
from spml.toolkit.git.workspace import Workspace, ensure_excluded
from spml.toolkit.loop.begin import RoundPlan
from spml.toolkit.loop.experiment import LEDGER_FILENAME, Experiment
from spml.toolkit.loop.kind import kind_named
from spml.toolkit.loop.ledger import ledger_copy_path
from spml.toolkit.loop.measure import measure
from spml.toolkit.loop.measurement import (
    INCUMBENT_FILENAME,
    MEASUREMENT_FILENAME,
    Measurement,
    save_measurement,
)
from spml.toolkit.loop.sandboxing import confines, sandbox_spec
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.process.sandbox import unavailable_reason

log = logging.getLogger(__name__)
CANDIDATE_REF_PREFIX = "refs/spml/candidates/"
LOG_TAIL_BYTES = 256 * 1024  # per log file sent back: the end of a long log is what matters


@dataclass(frozen=True)
class RemoteJob:
    """One candidate's train+eval, as data a worker on any machine can run."""

    git_remote: str
    ref: str
    commit: str
    round_no: int
    base: str
    batch: tuple[int, ...]
    kind: str
    name: str
    exp_rel: str
    protocol: dict[str, Any] = field(repr=False)
    evidence: dict[str, bytes] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RemoteResult:
    """What a worker sends back: the measurement and the round's log files (their ends)."""

    measurement: Measurement
    logs: dict[str, bytes] = field(default_factory=dict, repr=False)


def candidate_ref(session: LoopSession, round_no: int) -> str:
    """Where round ``round_no``'s candidate is pushed for the workers."""
    return f"{CANDIDATE_REF_PREFIX}{session.experiment.name}/{round_no}"


def ship_candidate(session: LoopSession, candidate: LoopSession, plan: RoundPlan,
                   git_remote: str | None) -> RemoteJob | None:
    """Commit the candidate's files (never on a branch) and push them to ``git_remote`` (None:
    the repository itself, which workers on this machine can read). None when the candidate
    changed nothing: there is nothing to train (`measure` says so at once)."""
    ref = candidate_ref(session, plan.round_no)
    commit = candidate.workspace.archive_attempt(ref, plan.base,
                                                 f"spml candidate: round {plan.round_no}")
    if commit is None:
        return None
    remote = git_remote or str(session.experiment.git_dir)
    if git_remote:  # the commit's parent, the base, travels with it
        run_git(session.workspace.repo, "push", "--quiet", "--force", git_remote,
             f"{commit}:{ref}")
    # No RoundPlan travels: its git snapshot holds copies of .git/config and the hooks.
    return RemoteJob(git_remote=remote, ref=ref, commit=commit, round_no=plan.round_no,
                     base=plan.base, batch=plan.batch, kind=session.kind.name,
                     name=session.experiment.name,
                     exp_rel=session.experiment.exp_rel,
                     protocol=candidate.protocol.model_dump(mode="json"),
                     evidence=_evidence(session, plan))


def _evidence(session: LoopSession, plan: RoundPlan) -> dict[str, bytes]:
    """The supervisor's files a candidate's measurement reads: the ledger (which rounds are
    kept), and every measurement before the batch (the incumbent, the noise)."""
    experiment = session.experiment
    found = {LEDGER_FILENAME: experiment.ledger_path,
             f".copy/{LEDGER_FILENAME}": ledger_copy_path(experiment)}
    for round_no in range(plan.first_round + 1):
        for name in (MEASUREMENT_FILENAME, INCUMBENT_FILENAME):
            found[f"rounds/{round_no:04d}/{name}"] = experiment.round_dir(round_no) / name
    return {key: path.read_bytes() for key, path in found.items() if path.is_file()}


def measure_remotely(job: RemoteJob, scratch: Path | None = None) -> RemoteResult:
    """On a worker: fetch the candidate, measure it as the supervisor would, send it back."""
    spec = sandbox_spec(kind_named(job.kind).protocol_model.model_validate(job.protocol))
    if not confines(spec):  # candidates sharing this worker must be kept apart here too
        raise ProtocolError(f"worker {socket.gethostname()} cannot confine the candidate's "
                            f"commands ({unavailable_reason() or 'sandbox: off'}): install "
                            "bubblewrap there (spml-flows ships bwrap), or set "
                            "parallel.runner to local")
    home = Path(tempfile.mkdtemp(prefix="spml-candidate-", dir=scratch))
    try:
        session = _clone(job, home)
        # The clone's own snapshot: compliance during training is judged against it.
        plan = RoundPlan(job.round_no, job.base, session.workspace.snapshot(), batch=job.batch)
        measurement = measure(session, plan)
        round_dir = session.experiment.round_dir(job.round_no)
        logs = {p.name: _tail(p) for p in sorted(round_dir.glob("*.log")) if p.is_file()}
        return RemoteResult(measurement, logs)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _clone(job: RemoteJob, home: Path) -> LoopSession:
    """A repository in ``home`` laid out as the supervisor's: the base checked out, the
    evidence in the state folder, the loop worktree holding the candidate's files."""
    repo = home / "repo"
    repo.mkdir()
    clone = git.Repo.init(repo)
    run_git(clone, "fetch", "--quiet", "--no-tags", job.git_remote, f"+{job.ref}:{job.ref}")
    run_git(clone, "checkout", "--quiet", "-B", "spml-base", job.base)
    clone.close()
    ensure_excluded(repo, ".spml/")
    kind = kind_named(job.kind)
    experiment = Experiment(exp_dir=repo / job.exp_rel, repo_root=repo, git_dir=repo / ".git",
                            protocol_filename=kind.protocol_filename, name=job.name)
    for key, content in job.evidence.items():
        target = experiment.state_dir / key
        if key == LEDGER_FILENAME:
            target = experiment.ledger_path
        elif key.startswith(".copy/"):
            target = ledger_copy_path(experiment)
        write_atomic(target, content)
    workspace = Workspace.open_or_create(repo, experiment.worktree_dir(kind.name),
                                         experiment.branch(kind.name), job.base)
    workspace.load_tree(job.commit)
    protocol = kind.protocol_model.model_validate(job.protocol)
    # Other candidates' scratch clones on this worker, sealed from this one's commands (those
    # that start later are not known yet: the sandbox keeps them read-only, not unreadable).
    others = tuple(p for p in home.parent.glob("spml-candidate-*") if p != home)
    return LoopSession(experiment, protocol, workspace, kind=kind, sealed_extra=others)


def receive_measurement(session: LoopSession, plan: RoundPlan, result: RemoteResult) -> None:
    """Save what a worker sent back where a local candidate's measurement and logs would be."""
    round_dir = session.experiment.round_dir(plan.round_no)
    round_dir.mkdir(parents=True, exist_ok=True)
    for name, content in result.logs.items():
        if "/" not in name and name.endswith(".log"):  # a worker names files, never paths
            write_atomic(round_dir / name, content)
    save_measurement(round_dir, result.measurement)


def _tail(path: Path) -> bytes:
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - LOG_TAIL_BYTES))
        return fh.read()
