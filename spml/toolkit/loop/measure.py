"""S3 train and S4 evaluate: the fixed commands, run with hard limits, metric from stdout only.

With `acceptance.repeats > 1` train+eval run that many times with seeds 0..n-1 (`SPML_SEED`); the
mean decides. Every training run starts from the tracked files alone: ignored files (outputs,
`__pycache__`) left by the researcher or an earlier run are removed first, so a stale checkpoint
can never be evaluated in place of a fresh one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from spml.errors import MetricNotFound
from spml.toolkit.loop.begin import RoundPlan
from spml.toolkit.loop.compliance import Violation, check_round, verify_fixed_files
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.metrics.output import parse_metric
from spml.toolkit.process.runner import CommandResult, ExitKind, run_command, supervisor_path


@dataclass(frozen=True)
class Measurement:
    """The outcome of S3+S4 over all repeats."""

    values: tuple[float, ...] = ()
    cause: str = ""                       # why measuring failed ("" = it did not)
    violations: tuple[Violation, ...] = ()
    train_s: float = 0.0
    eval_s: float = 0.0
    logs: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """All repeats produced a finite metric value."""
        return not self.cause and not self.violations and bool(self.values)

    @property
    def mean(self) -> float | None:
        """Mean over repeats, or None when nothing was measured."""
        return sum(self.values) / len(self.values) if self.values else None


def command_env(session: LoopSession, round_no: int, seed: int) -> dict[str, str]:
    """Environment for the fixed train and eval commands."""
    fixed = session.protocol.fixed
    env = {
        **supervisor_path(),
        "SPML_SEED": str(seed),
        "SPML_ROUND": str(round_no),
        "SPML_TIME_LIMIT": f"{fixed.time_limit:g}",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if fixed.epoch_limit is not None:
        env["SPML_EPOCH_LIMIT"] = str(fixed.epoch_limit)
    return env


def measure(session: LoopSession, plan: RoundPlan) -> Measurement:
    """Run train then eval ``acceptance.repeats`` times and parse the metric."""
    values: list[float] = []
    train_s = eval_s = 0.0
    for seed in range(session.protocol.acceptance.repeats):
        train = _train(session, plan, seed)
        train_s += train.duration_s
        if not train.ok:
            return Measurement(tuple(values), _train_cause(train, session), (), train_s, eval_s)
        violations = verify_fixed_files(session, plan) + check_round(session, plan,
                                                                     after_researcher=False)
        if violations:
            return Measurement(tuple(values), "", tuple(violations), train_s, eval_s)
        value, cause, duration = _evaluate(session, plan, seed)
        eval_s += duration
        if cause:
            return Measurement(tuple(values), cause, (), train_s, eval_s)
        values.append(value)
    return Measurement(tuple(values), "", (), train_s, eval_s)


def _train(session: LoopSession, plan: RoundPlan, seed: int) -> CommandResult:
    session.workspace.clean_ignored()
    return run_command(
        session.protocol.train_command, cwd=session.workdir,
        log_dir=session.experiment.round_dir(plan.round_no), name=f"train-{seed}",
        env=command_env(session, plan.round_no, seed),
        time_limit_s=session.protocol.train_timeout_s,
        pid_file=session.experiment.state_dir / "train.pid",
    )


def _train_cause(result: CommandResult, session: LoopSession) -> str:
    if result.kind is ExitKind.TIMEOUT:
        return (f"train killed: exceeded time_limit {session.protocol.fixed.time_limit:g}s "
                "+ 30s grace (process group terminated)")
    return f"train crashed: {result.describe()}"


def _evaluate(session: LoopSession, plan: RoundPlan, seed: int) -> tuple[float, str, float]:
    # Bytecode written during training must not stand in for the fixed eval sources.
    session.workspace.clean_ignored(keep=lambda path: "__pycache__" not in path.split("/"))
    result = run_command(
        session.protocol.eval.command, cwd=session.workdir,
        log_dir=session.experiment.round_dir(plan.round_no), name=f"eval-{seed}",
        env=command_env(session, plan.round_no, seed),
        time_limit_s=session.protocol.eval_timeout_s,
        pid_file=session.experiment.state_dir / "eval.pid",
    )
    if result.kind is ExitKind.TIMEOUT:
        return math.nan, f"eval killed: exceeded {session.protocol.eval_timeout_s:g}s", \
            result.duration_s
    if not result.ok:
        return math.nan, f"eval failed: {result.describe()}", result.duration_s
    metric = session.protocol.eval.metric
    try:
        value = parse_metric(result.stdout_text(), metric, where=str(result.stdout_path))
    except MetricNotFound:
        return math.nan, f"eval printed no {metric} value on stdout", result.duration_s
    if not math.isfinite(value):
        return math.nan, f"eval reported {metric}={value} (not a finite number)", \
            result.duration_s
    return value, "", result.duration_s
