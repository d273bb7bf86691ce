"""The round's sequence, in one place: S0 begin (and, when the incumbent has too few runs, top
it up), S1 researcher, S2 compliance (and a stop
request, which aborts the round here), S3+S4 measure, S5 settle. The Prefect flow runs it with
task-wrapped steps (`spml.tasks.loop.TaskSteps`); tests and Prefect-free supervisors with
`PlainSteps`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from spml.toolkit.loop import control
from spml.toolkit.loop.begin import RoundPlan, begin_round
from spml.toolkit.loop.compliance import Violation, check_round
from spml.toolkit.loop.kind import LoopKind
from spml.toolkit.loop.measure import Measurement, measure, top_up_incumbent
from spml.toolkit.loop.researchers import Proposal
from spml.toolkit.loop.researchers.dispatch import run_researcher
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.loop.settle import RoundOutcome, abort_round, decide, settle


class Checked(NamedTuple):
    """S2's findings: what the researcher broke, and a stop request that came in meanwhile
    (checked in the same step: one orchestrator round-trip fewer per round)."""

    violations: list[Violation]
    stop_reason: str | None


class RoundSteps(Protocol):
    """The steps of a round, each a function of the experiment directory (state is on disk)."""

    def begin(self, experiment_dir: str, round_no: int) -> RoundPlan: ...  # noqa: D102
    def top_up(self, experiment_dir: str, plan: RoundPlan) -> RoundPlan: ...  # noqa: D102
    def research(self, experiment_dir: str, plan: RoundPlan) -> Proposal: ...  # noqa: D102
    def comply(self, experiment_dir: str, plan: RoundPlan) -> Checked: ...  # noqa: D102
    def abort(self, experiment_dir: str, plan: RoundPlan, reason: str) -> None: ...  # noqa: D102
    def measure(self, experiment_dir: str, plan: RoundPlan) -> Measurement: ...  # noqa: D102
    def settle(self, experiment_dir: str, plan: RoundPlan, proposal: Proposal | None,  # noqa: D102
               violations: list[Violation], measurement: Measurement | None) -> RoundOutcome: ...


def run_round(steps: RoundSteps, experiment_dir: str, round_no: int) -> str:
    """One round (round 0 measures the baseline). Returns the verdict, or 'aborted'."""
    plan = steps.begin(experiment_dir, round_no)
    if plan.top_up:
        plan = steps.top_up(experiment_dir, plan)
    proposal = None
    violations: list[Violation] = []
    if not plan.measures_head:
        proposal = steps.research(experiment_dir, plan)
        # Checked even after a failed researcher: what it touched must be reported and undone.
        violations, stop_reason = steps.comply(experiment_dir, plan)
        if stop_reason:
            steps.abort(experiment_dir, plan, stop_reason)
            return "aborted"
    measurement = None
    if (proposal is None or proposal.ok) and not violations:
        measurement = steps.measure(experiment_dir, plan)
    outcome = steps.settle(experiment_dir, plan, proposal, violations, measurement)
    return outcome.row.verdict


@dataclass(frozen=True)
class PlainSteps:
    """The steps as plain toolkit calls (no Prefect)."""

    kind: LoopKind

    def _session(self, experiment_dir: str) -> LoopSession:
        return LoopSession.load(experiment_dir, self.kind)

    def begin(self, experiment_dir: str, round_no: int) -> RoundPlan:
        """S0."""
        return begin_round(self._session(experiment_dir), round_no)[1]

    def top_up(self, experiment_dir: str, plan: RoundPlan) -> RoundPlan:
        """S0: more runs of the incumbent."""
        return top_up_incumbent(self._session(experiment_dir), plan)

    def research(self, experiment_dir: str, plan: RoundPlan) -> Proposal:
        """S1."""
        return run_researcher(self._session(experiment_dir), plan)

    def comply(self, experiment_dir: str, plan: RoundPlan) -> Checked:
        """S2, and a stop request if any."""
        session = self._session(experiment_dir)
        return Checked(check_round(session, plan), control.stop_requested(session.experiment))

    def abort(self, experiment_dir: str, plan: RoundPlan, reason: str) -> None:
        """Undo a round a stop request interrupted."""
        abort_round(self._session(experiment_dir), plan, reason)

    def measure(self, experiment_dir: str, plan: RoundPlan) -> Measurement:
        """S3+S4."""
        return measure(self._session(experiment_dir), plan)

    def settle(self, experiment_dir: str, plan: RoundPlan, proposal: Proposal | None,
               violations: list[Violation], measurement: Measurement | None) -> RoundOutcome:
        """S5."""
        session = self._session(experiment_dir)
        return settle(session, plan, decide(session, plan, proposal, violations, measurement))
