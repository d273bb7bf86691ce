"""The round's sequence, in one place: S0 begin (and, when the incumbent has too few runs, top
it up), S1 researcher, S2 compliance (and a stop
request, which aborts the round here), S3+S4 measure, S5 settle. The Prefect flow runs it with
task-wrapped steps (`spml.tasks.loop.TaskSteps`); tests and Prefect-free supervisors with
`PlainSteps`. `run_batch` is the same sequence for a batch of candidates (`batch`), each step
taking every candidate at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from spml.toolkit.loop import batch, control
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


class BatchSteps(Protocol):
    """The steps of a batch of candidates; ``*_all`` steps take every candidate at once."""

    def begin(self, experiment_dir: str, first: int) -> tuple[RoundPlan, ...] | None: ...  # noqa: D102
    def top_up(self, experiment_dir: str,  # noqa: D102
               plans: tuple[RoundPlan, ...]) -> tuple[RoundPlan, ...]: ...
    def research_all(self, experiment_dir: str,  # noqa: D102
                     plans: tuple[RoundPlan, ...]) -> list[Proposal]: ...
    def comply_all(self, experiment_dir: str,  # noqa: D102
                   plans: tuple[RoundPlan, ...]) -> tuple[list[list[Violation]], str | None]: ...
    def discard(self, experiment_dir: str, reason: str) -> None: ...  # noqa: D102
    def measure_all(self, experiment_dir: str,  # noqa: D102
                    plans: tuple[RoundPlan, ...]) -> list[Measurement]: ...
    def settle(self, experiment_dir: str, plans: tuple[RoundPlan, ...],  # noqa: D102
               proposals: list[Proposal], violations: list[list[Violation]],
               measurements: list[Measurement | None]) -> list[RoundOutcome]: ...


def run_batch(steps: BatchSteps, experiment_dir: str, first: int) -> list[str] | None:
    """A batch of candidates from round ``first``. Returns their verdicts (['aborted'] after a
    stop request), or None when it could not begin as a batch (run a round alone instead)."""
    plans = steps.begin(experiment_dir, first)
    if plans is None:
        return None
    plans = steps.top_up(experiment_dir, plans)
    proposals = steps.research_all(experiment_dir, plans)
    # Checked even after a failed researcher: what it touched must be reported and undone.
    violations, stop_reason = steps.comply_all(experiment_dir, plans)
    if stop_reason:
        steps.discard(experiment_dir, stop_reason)
        return ["aborted"]
    runnable = tuple(plan for plan, proposal, broke in zip(plans, proposals, violations,
                                                           strict=True)
                     if proposal.ok and not broke)
    measured = dict(zip((p.round_no for p in runnable), steps.measure_all(experiment_dir,
                                                                          runnable), strict=True))
    outcomes = steps.settle(experiment_dir, plans, proposals, violations,
                            [measured.get(plan.round_no) for plan in plans])
    return [outcome.row.verdict for outcome in outcomes]


@dataclass(frozen=True)
class PlainBatchSteps:
    """A batch's steps as plain toolkit calls, the candidates in threads (each one waits on
    its own subprocesses)."""

    kind: LoopKind

    def _session(self, experiment_dir: str) -> LoopSession:
        return LoopSession.load(experiment_dir, self.kind)

    def begin(self, experiment_dir: str, first: int) -> tuple[RoundPlan, ...] | None:
        """Begin the batch (None: run a round alone)."""
        return batch.begin_batch(self._session(experiment_dir), first)

    def top_up(self, experiment_dir: str,
               plans: tuple[RoundPlan, ...]) -> tuple[RoundPlan, ...]:
        """The incumbent's extra runs, once."""
        return batch.top_up_batch(self._session(experiment_dir), plans)

    def research_all(self, experiment_dir: str,
                     plans: tuple[RoundPlan, ...]) -> list[Proposal]:
        """S1 for every candidate (concurrently where the researcher allows)."""
        session = self._session(experiment_dir)
        workers = len(plans) if batch.proposes_concurrently(session) else 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda p: batch.research_candidate(session, p), plans))

    def comply_all(self, experiment_dir: str,
                   plans: tuple[RoundPlan, ...]) -> tuple[list[list[Violation]], str | None]:
        """S2 for every candidate, and a stop request if any."""
        session = self._session(experiment_dir)
        return batch.comply_batch(session, plans), control.stop_requested(session.experiment)

    def discard(self, experiment_dir: str, reason: str) -> None:
        """Undo a batch a stop request interrupted."""
        batch.discard_current(self._session(experiment_dir), reason)

    def measure_all(self, experiment_dir: str,
                    plans: tuple[RoundPlan, ...]) -> list[Measurement]:
        """S3+S4 for every candidate, concurrently."""
        session = self._session(experiment_dir)
        with ThreadPoolExecutor(max_workers=max(len(plans), 1)) as pool:
            return list(pool.map(lambda p: batch.measure_candidate(session, p), plans))

    def settle(self, experiment_dir: str, plans: tuple[RoundPlan, ...],
               proposals: list[Proposal], violations: list[list[Violation]],
               measurements: list[Measurement | None]) -> list[RoundOutcome]:
        """S5 for the batch."""
        return batch.settle_batch(self._session(experiment_dir), plans, list(proposals),
                                  violations, measurements)
