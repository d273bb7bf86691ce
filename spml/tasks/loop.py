"""Prefect tasks of a loop (any kind): each wraps one toolkit call.

Every task takes the experiment directory and the loop kind's name, and rebuilds its session from
disk, so tasks hold no state between calls. All of them touch git, files or processes:
`cache_policy=NO_CACHE`. Retries are given only to steps that are safe to repeat (reading state,
re-planning a round). `TaskSteps` hands these tasks to the one round sequence
(`spml.toolkit.loop.round.run_round`).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from spml.protocols.experiences import format_value
from spml.tasks.artifacts import publish_ledger, publish_review, publish_round
from spml.tasks.ui_controls import pull_ui_controls
from spml.toolkit.loop import control
from spml.toolkit.loop.begin import RoundPlan, begin_round
from spml.toolkit.loop.compliance import Violation, check_round
from spml.toolkit.loop.confirm import confirm_result, read_confirmation, wants_confirmation
from spml.toolkit.loop.cost import loop_cost
from spml.toolkit.loop.holdout import measure_holdout, wants_holdout
from spml.toolkit.loop.kind import kind_named
from spml.toolkit.loop.ledger import read_ledger
from spml.toolkit.loop.lifecycle import NextStep, close_loop, next_step, open_loop
from spml.toolkit.loop.measure import Measurement, measure, top_up_incumbent
from spml.toolkit.loop.researchers import Proposal
from spml.toolkit.loop.researchers.dispatch import run_researcher
from spml.toolkit.loop.round import Checked
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.loop.settle import RoundOutcome, abort_round, decide, settle
from spml.toolkit.loop.summary import LoopSummary, summarize


def _session(experiment_dir: str, kind: str) -> LoopSession:
    return LoopSession.load(experiment_dir, kind_named(kind))


@task(name="open-loop", cache_policy=NO_CACHE, retries=0)
def open_experiment(experiment_dir: str, max_rounds: int | None, kind: str,
                    allow_dirty: bool = False) -> int:
    """Validate, prepare the worktree, recover an interrupted round; returns max rounds."""
    session = open_loop(experiment_dir, max_rounds, kind_named(kind), allow_dirty)
    get_run_logger().info("loop open on branch %s (worktree %s)", session.workspace.branch,
                          session.workspace.path)
    return session.max_rounds


def _after_round_name() -> str:
    after = task_run.parameters.get("after_round")
    return "run start: next step" if after is None else f"R{after} done: next step"


@task(name="next-step", task_run_name=_after_round_name, cache_policy=NO_CACHE, retries=1,
      retry_delay_seconds=1)
def between_rounds(experiment_dir: str, kind: str, progress_id: UUID | None,
                   after_round: int | None) -> NextStep:
    """Between rounds, in one orchestrator round-trip: publish the ledger (and ml-iteration's
    review of the round), take in notes / stop / overrides set in the Prefect UI, and decide
    whether another round runs (target, max rounds, stop request)."""
    session = _session(experiment_dir, kind)
    ledger = read_ledger(session.experiment)  # read once for both artifacts
    publish_ledger(session, ledger, progress_id)
    if after_round is not None and kind != "autoresearch":
        publish_review(session, ledger, after_round)
    pull_ui_controls(experiment_dir, kind)
    return next_step(session)


# persist_result=False: a RoundPlan carries copies of .git/config and hooks (which may hold
# credentials); they must never be written to Prefect's result storage.
@task(name="S0-begin-round", task_run_name="R{round_no} S0: begin", cache_policy=NO_CACHE,
      retries=1, retry_delay_seconds=1, persist_result=False)
def start_round(experiment_dir: str, round_no: int, kind: str) -> RoundPlan:
    """Clean tree, protocol edits, human notes and overrides, journal, brief."""
    _, plan = begin_round(_session(experiment_dir, kind), round_no)
    for note in plan.notes:
        get_run_logger().info("R%d brief carries a note from a person: %s", round_no, note)
    return plan


@task(name="S0-top-up-incumbent", task_run_name="R{plan.round_no} S0: more runs of the incumbent",
      cache_policy=NO_CACHE, retries=0, persist_result=False)
def top_up(experiment_dir: str, plan: RoundPlan, kind: str) -> RoundPlan:
    """Run HEAD's code on more seeds before the researcher starts: a candidate is compared with
    the incumbent's pooled runs, never with one draw."""
    plan = top_up_incumbent(_session(experiment_dir, kind), plan)
    get_run_logger().info("R%d ran the incumbent on seed(s) %s", plan.round_no,
                          ", ".join(map(str, plan.top_up)))
    return plan


@task(name="S1-researcher", task_run_name="R{plan.round_no} S1: researcher",
      cache_policy=NO_CACHE, retries=0)
def dispatch_researcher(experiment_dir: str, plan: RoundPlan, kind: str) -> Proposal:
    """S1: the researcher edits the files it may edit (time-limited)."""
    return run_researcher(_session(experiment_dir, kind), plan)


@task(name="S2-compliance", task_run_name="R{plan.round_no} S2: compliance, stop request",
      cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def check_compliance(experiment_dir: str, plan: RoundPlan, kind: str) -> Checked:
    """S2: only allowed files changed, git state untouched; and a stop request from the person
    on the loop (CLI or Prefect UI), which aborts the round."""
    session = _session(experiment_dir, kind)
    violations = check_round(session, plan)
    pull_ui_controls(experiment_dir, kind)
    return Checked(violations, control.stop_requested(session.experiment))


@task(name="S3-S4-train-eval", task_run_name="R{plan.round_no} S3+S4: train and evaluate",
      cache_policy=NO_CACHE, retries=0)
def train_and_evaluate(experiment_dir: str, plan: RoundPlan, kind: str) -> Measurement:
    """S3+S4: the fixed training and evaluation commands, with hard limits."""
    result = measure(_session(experiment_dir, kind), plan)
    log_measured(plan.round_no, result)
    return result


def log_measured(round_no: int, result: Measurement) -> None:
    """One line in the run's log: what a round's candidate measured, and in how long."""
    shown = ", ".join(format_value(v) for v in result.values) or "no value"
    get_run_logger().info("R%d measured %s in %.1fs train + %.1fs eval%s", round_no,
                          shown, result.train_s, result.eval_s,
                          f" — {result.cause}" if result.cause else "")


@task(name="S5-decide-and-git", task_run_name="R{plan.round_no} S5: decide, commit or roll back",
      cache_policy=NO_CACHE, retries=0)
def settle_round(experiment_dir: str, plan: RoundPlan, proposal: Proposal | None,
                 violations: list[Violation], measurement: Measurement | None,
                 kind: str) -> RoundOutcome:
    """S5: commit or archive and roll back; record the ledger row."""
    session = _session(experiment_dir, kind)
    row = decide(session, plan, proposal, violations, measurement)
    outcome = settle(session, plan, row)
    metric = session.protocol.metric or "criteria"
    get_run_logger().info("R%d %s: %s = %s; strategy: %s; insight: %s", row.round, row.verdict,
                          metric, row.result_text or _shown(row.result), row.strategy or "—",
                          row.insight or "—")
    publish_round(session, plan, outcome)  # the round's own artifact, on its run's page
    return outcome


def _shown(value: float | None) -> str:
    return "no value" if value is None else format_value(value)


@task(name="abort-round", task_run_name="R{plan.round_no} abort", cache_policy=NO_CACHE,
      retries=0)
def abort(experiment_dir: str, plan: RoundPlan, reason: str, kind: str) -> None:
    """Undo a round that a stop request interrupted; it will be redone on the next run."""
    session = _session(experiment_dir, kind)
    abort_round(session, plan, reason)
    publish_round(session, plan, None)  # its page says so


def needs_confirmation(experiment_dir: str, kind: str, step: NextStep) -> bool:
    """Whether `confirm_best` has work (checked here: no task run for nothing)."""
    return step.kind == "end" and wants_confirmation(_session(experiment_dir, kind), step.status)


@task(name="confirm-best", task_run_name="confirm the best on fresh seeds", cache_policy=NO_CACHE,
      retries=0)
def confirm_best(experiment_dir: str, step: NextStep, kind: str) -> str:
    """Auto Research's default: the final best and the baseline, re-measured on fresh seeds."""
    text = confirm_result(_session(experiment_dir, kind), step.status)
    if text:
        get_run_logger().info("confirmed on fresh seeds: %s", text)
    return text


def needs_holdout(experiment_dir: str, kind: str, step: NextStep) -> bool:
    """Whether `holdout_best` has work."""
    return step.kind == "end" and wants_holdout(_session(experiment_dir, kind), step.status)


@task(name="holdout", task_run_name="measure best and baseline on the sealed holdout",
      cache_policy=NO_CACHE, retries=0)
def holdout_best(experiment_dir: str, step: NextStep, kind: str) -> str:
    """The final best and the baseline on the holdout no round could read."""
    text = measure_holdout(_session(experiment_dir, kind), step.status)
    if text:
        get_run_logger().info("holdout: %s", text)
    return text


@task(name="close-loop", cache_policy=NO_CACHE, retries=1)
def close_experiment(experiment_dir: str, step: NextStep, kind: str) -> LoopSummary:
    """Write the final status and summarize the loop."""
    session = _session(experiment_dir, kind)
    ledger = close_loop(session, step)
    cost = loop_cost(session.experiment.state_dir / "rounds").render()
    return summarize(ledger, step.reason, confirmed=read_confirmation(session), cost=cost)


@dataclass(frozen=True)
class TaskSteps:
    """The round's steps as Prefect tasks, for `run_round`."""

    kind: str

    def begin(self, experiment_dir: str, round_no: int) -> RoundPlan:
        """S0."""
        return start_round(experiment_dir, round_no, self.kind)

    def top_up(self, experiment_dir: str, plan: RoundPlan) -> RoundPlan:
        """S0: more runs of the incumbent."""
        return top_up(experiment_dir, plan, self.kind)

    def research(self, experiment_dir: str, plan: RoundPlan) -> Proposal:
        """S1."""
        return dispatch_researcher(experiment_dir, plan, self.kind)

    def comply(self, experiment_dir: str, plan: RoundPlan) -> Checked:
        """S2, and a stop request (CLI file or Prefect Variable)."""
        return check_compliance(experiment_dir, plan, self.kind)

    def abort(self, experiment_dir: str, plan: RoundPlan, reason: str) -> None:
        """Undo a round a stop request interrupted."""
        abort(experiment_dir, plan, reason, self.kind)

    def measure(self, experiment_dir: str, plan: RoundPlan) -> Measurement:
        """S3+S4."""
        return train_and_evaluate(experiment_dir, plan, self.kind)

    def settle(self, experiment_dir: str, plan: RoundPlan, proposal: Proposal | None,
               violations: list[Violation], measurement: Measurement | None) -> RoundOutcome:
        """S5."""
        return settle_round(experiment_dir, plan, proposal, violations, measurement, self.kind)
