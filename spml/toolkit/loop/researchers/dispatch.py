"""S1: hand the researcher its brief and let it change the variable files (time-limited)."""

from __future__ import annotations

import logging
import time

from spml.toolkit.loop.begin import RoundPlan
from spml.toolkit.loop.cost import COST_FILENAME, record_researcher
from spml.toolkit.loop.researchers.base import Proposal, ResearchContext
from spml.toolkit.loop.sandboxing import sandbox_spec, sealed_paths
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.process.runner import supervisor_path
from spml.toolkit.profiling.gpuinfo import gpus_held

log = logging.getLogger(__name__)


def research_context(session: LoopSession, plan: RoundPlan) -> ResearchContext:
    """What the researcher is handed for this round."""
    round_dir = session.experiment.round_dir(plan.round_no)
    return ResearchContext(
        round_no=plan.round_no, workdir=session.workdir, brief_path=round_dir / "brief.md",
        strategy_path=round_dir / "strategy.txt", log_dir=round_dir,
        timeout_s=session.protocol.researcher_timeout_s, env={**supervisor_path(),
                                                               **_batch_env(plan)},
        worktree=session.workspace.path, sandbox=sandbox_spec(session.protocol),
        sealed=sealed_paths(session), cost_path=round_dir / COST_FILENAME, batch=plan.batch,
    )


def _batch_env(plan: RoundPlan) -> dict[str, str]:
    """A candidate of a batch learns its place in it (a researcher may try a different idea
    per candidate)."""
    if not plan.batch:
        return {}
    return {"SPML_CANDIDATE": str(plan.round_no - plan.batch[0]),
            "SPML_CANDIDATES": str(len(plan.batch))}


def run_researcher(session: LoopSession, plan: RoundPlan) -> Proposal:
    """S1: let the researcher change the variable files."""
    context = research_context(session, plan)
    started = time.monotonic()
    proposal = session.researcher().propose(context)
    # A batch candidate's commands hold its own GPU slice, not all the supervisor sees.
    gpus = len(session.gpus) if session.gpus is not None else gpus_held()
    record_researcher(context.log_dir, time.monotonic() - started, gpus)
    log.info("round %d researcher: %s%s", plan.round_no, proposal.strategy,
             f" — FAILED: {proposal.cause}" if not proposal.ok else "")
    return proposal
