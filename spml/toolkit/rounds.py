"""The round engine: S1 researcher, S2 compliance, S3 train, S4 eval, S5 decide + git.

Each step is a plain function of the session (rebuilt from disk) and the round's plan, so the
Prefect tasks in `spml.tasks` stay one-line wrappers and the engine is tested without Prefect.
ml-iteration reuses it with another acceptance policy and brief.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from spml.protocols.autoresearch import PROTOCOL_FILENAME
from spml.toolkit import control
from spml.toolkit.brief import BriefInputs, render_brief
from spml.toolkit.compliance import Violation, check_compliance
from spml.toolkit.experiment import write_atomic
from spml.toolkit.gitops import GitSnapshot
from spml.toolkit.ledger import Journal, read_ledger, write_journal
from spml.toolkit.process import supervisor_path
from spml.toolkit.researchers import Proposal, ResearchContext
from spml.toolkit.session import LoopSession, reload_protocol

log = logging.getLogger(__name__)
SNAPSHOT_FILENAME = "git-snapshot.json"


@dataclass(frozen=True)
class RoundPlan:
    """A round that has begun: its number, base commit, git snapshot, notes."""

    round_no: int
    base: str
    snapshot: GitSnapshot = field(repr=False)
    notes: tuple[str, ...] = ()
    # Contents of the supervisor's own files outside the worktree (ledger, journal, session),
    # which a researcher running with the user's rights could otherwise rewrite.
    supervisor_files: dict[str, bytes | None] = field(default_factory=dict, repr=False)

    @property
    def note_text(self) -> str:
        """The ledger's Note cell."""
        return "; ".join(self.notes)


def begin_round(session: LoopSession, round_no: int) -> tuple[LoopSession, RoundPlan]:
    """Apply protocol edits, take notes, start from a clean tree, journal the round."""
    notes: list[str] = []
    if round_no > 0:
        session, protocol_note = reload_protocol(session)
        notes = control.take_notes(session.experiment, round_no)
        if protocol_note:
            notes.append(protocol_note)
    workspace = session.workspace
    base = workspace.head()
    workspace.rollback(base)
    write_journal(session.experiment, Journal(round=round_no, base=base))
    round_dir = session.experiment.round_dir(round_no)
    round_dir.mkdir(parents=True, exist_ok=True)
    snapshot = workspace.snapshot()
    # On disk too: after a crash, recovery restores hooks, config and watched refs from it.
    write_atomic(round_dir / SNAPSHOT_FILENAME, snapshot.to_json())
    plan = RoundPlan(round_no, base, snapshot, tuple(notes),
                     _read_all(supervisor_files(session, plan_round=round_no)))
    if round_no > 0:
        write_atomic(round_dir / "brief.md", _brief(session, plan))
    return session, plan


def _brief(session: LoopSession, plan: RoundPlan) -> str:
    ledger = read_ledger(session.experiment)
    assert ledger is not None
    human = [n for n in plan.notes if not n.startswith("protocol edit")]
    return render_brief(BriefInputs(session.protocol, session.prose(), ledger, plan.round_no,
                                    session.max_rounds, human))


def research_context(session: LoopSession, plan: RoundPlan) -> ResearchContext:
    """What the researcher is handed for this round."""
    round_dir = session.experiment.round_dir(plan.round_no)
    return ResearchContext(
        round_no=plan.round_no, workdir=session.workdir, brief_path=round_dir / "brief.md",
        strategy_path=round_dir / "strategy.txt", log_dir=round_dir,
        timeout_s=session.protocol.researcher_timeout_s, env=supervisor_path(),
    )


def run_researcher(session: LoopSession, plan: RoundPlan) -> Proposal:
    """S1: let the researcher change the variable files."""
    proposal = session.researcher().propose(research_context(session, plan))
    log.info("round %d researcher: %s%s", plan.round_no, proposal.strategy,
             f" — FAILED: {proposal.cause}" if not proposal.ok else "")
    return proposal


def check_round(session: LoopSession, plan: RoundPlan,
                after_researcher: bool = True) -> list[Violation]:
    """S2: every change since the base must be an allowed change of a variable file.

    The protocol file is guarded only across the researcher step: an edit made then could
    come from the researcher widening its own rights, so it is undone (the person on the loop
    edits it between rounds); an edit during training is the person's and applies next round.
    """
    workspace = session.workspace
    fixed = session.fixed_paths(plan.base)
    violations = check_compliance(
        plan.snapshot, workspace.snapshot(), workspace.changes_since(plan.base),
        exp_rel=session.experiment.exp_rel, variable=session.protocol.variable.files,
        fixed=session.protocol.fixed.files, fixed_module_names=_module_names(fixed),
    )
    skip = () if after_researcher else (str(session.experiment.protocol_path),)
    violations += restore_supervisor_files(plan, skip)
    for violation in violations:
        log.warning("round %d compliance: %s", plan.round_no, violation.reason)
    return violations


def supervisor_files(session: LoopSession, plan_round: int) -> list[Path]:
    """Files only the supervisor writes during a round (the protocol: see `check_round`)."""
    experiment = session.experiment
    state = experiment.state_dir
    return [experiment.ledger_path, state / "round.json", state / "session.json",
            experiment.round_dir(plan_round) / SNAPSHOT_FILENAME, experiment.protocol_path]


def _read_all(paths: list[Path]) -> dict[str, bytes | None]:
    return {str(p): p.read_bytes() if p.is_file() else None for p in paths}


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
        reason = (f"{path.name} changed while the researcher ran (restored: edit the protocol "
                  "between rounds)" if path.name == PROTOCOL_FILENAME else
                  f"modified supervisor file {path.name} (restored)")
        violations.append(Violation(path.name, reason))
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

