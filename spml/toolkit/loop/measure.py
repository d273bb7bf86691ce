"""S3 train and S4 evaluate: the fixed commands, run with hard limits, metrics from stdout only.

With `acceptance.repeats > 1` train+eval run that many times with seeds 0..n-1 (`SPML_SEED`).
Every training run starts from the tracked files alone: ignored files (outputs, `__pycache__`)
left by the researcher or an earlier run are removed first, so a stale checkpoint can never be
evaluated in place of a fresh one. Each seed's record (every metric the eval printed, train wall
time, time to the first step line, the training-output scan, custom checks) is written to
`rounds/NNNN/measurement.json` with the git tree that was measured.
"""

from __future__ import annotations

import math
from typing import Any

from spml.errors import MetricNotFound
from spml.toolkit.loop.begin import RoundPlan
from spml.toolkit.loop.compliance import check_round, verify_fixed_files
from spml.toolkit.loop.faults import crash_point
from spml.toolkit.loop.measurement import (
    CheckResult,
    Measurement,
    SeedRecord,
    ViolationRecord,
    save_measurement,
)
from spml.toolkit.loop.observe import FirstStepClock, read_lines, scan_training_output
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.metrics.output import find_pairs, mentions, parse_metric
from spml.toolkit.process.runner import CommandResult, ExitKind, run_command, supervisor_path

__all__ = ["Measurement", "command_env", "measure"]


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
    """Run train then eval ``acceptance.repeats`` times; record and return what was measured."""
    result = Measurement(round=plan.round_no, tree=session.workspace.state_tree(),
                         primary=session.protocol.metric if _strict(session) else None)
    seeds: list[SeedRecord] = []
    for seed in range(session.protocol.acceptance.repeats):
        record, cause, violations = _measure_seed(session, plan, seed)
        if record is not None:
            seeds.append(record)
        if cause or violations:
            result = result.model_copy(update={"cause": cause, "violations": tuple(
                ViolationRecord(path=v.path, reason=v.reason) for v in violations)})
            break
    result = result.model_copy(update={"seeds": tuple(seeds)})
    save_measurement(session.experiment.round_dir(plan.round_no), result)
    crash_point("after-measure", plan.round_no)  # measured, not decided
    return result


def _strict(session: LoopSession) -> bool:
    """Auto Research lives on one metric: an eval without it fails the round."""
    return session.kind.name == "autoresearch"


def _measure_seed(session: LoopSession, plan: RoundPlan,
                  seed: int) -> tuple[SeedRecord | None, str, list[Any]]:
    train, first_step_s = _train(session, plan, seed)
    facts = _scan(session, train)
    if not train.ok:
        return None, _train_cause(train, session), []
    violations = verify_fixed_files(session, plan) + check_round(session, plan,
                                                                 after_researcher=False)
    if violations:
        return None, "", violations
    metrics, problems, cause, eval_s = _evaluate(session, plan, seed)
    if cause:
        return None, cause, []
    record = SeedRecord(seed=seed, metrics=metrics, metric_problems=problems,
                        train_time_s=train.duration_s,
                        first_step_time_s=first_step_s, eval_time_s=eval_s,
                        custom=_custom_checks(session, plan, seed), **facts)
    return record, "", []


def _train(session: LoopSession, plan: RoundPlan, seed: int) -> tuple[CommandResult, float | None]:
    session.workspace.clean_ignored()
    round_dir = session.experiment.round_dir(plan.round_no)
    with FirstStepClock(round_dir / f"train-{seed}.stdout.log",
                        round_dir / f"train-{seed}.stderr.log") as clock:
        result = run_command(
            session.protocol.train_command, cwd=session.workdir, log_dir=round_dir,
            name=f"train-{seed}", env=command_env(session, plan.round_no, seed),
            time_limit_s=session.protocol.train_timeout_s,
            pid_file=session.experiment.state_dir / "train.pid",
        )
    return result, clock.first_step_s


def _scan(session: LoopSession, train: CommandResult) -> dict[str, Any]:
    criteria = getattr(session.protocol, "review_criteria", None)
    stability = criteria.stability if criteria is not None else None
    patterns = stability.forbid_patterns if stability is not None else []
    scan = scan_training_output(read_lines(train.stdout_path, train.stderr_path), patterns)
    return {"step_lines": scan.step_lines, "step_keys": sorted(scan.step_keys),
            "key_lines": dict(sorted(scan.key_lines.items())),
            "nonfinite_keys": sorted(scan.nonfinite_keys), "pattern_hits": scan.pattern_hits,
            "reported": scan.reported()}


def _train_cause(result: CommandResult, session: LoopSession) -> str:
    if result.kind is ExitKind.TIMEOUT:
        return (f"train killed: exceeded time_limit {session.protocol.fixed.time_limit:g}s "
                "+ 30s grace (process group terminated)")
    return f"train crashed: {result.describe()}"


def _evaluate(session: LoopSession, plan: RoundPlan,
              seed: int) -> tuple[dict[str, float], dict[str, str], str, float]:
    """The eval's metrics, the parser's reason for each named metric it could not read, the
    cause that fails the run (empty: none) and the eval's seconds."""
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
        return {}, {}, f"eval killed: exceeded {session.protocol.eval_timeout_s:g}s", \
            result.duration_s
    if not result.ok:
        return {}, {}, f"eval failed: {result.describe()}", result.duration_s
    text = result.stdout_text()
    metrics = {k: v for k, v in find_pairs(text).items() if math.isfinite(v)}
    problems: dict[str, str] = {}
    for name in _named_metrics(session):
        metrics.pop(name, None)
        try:  # the strict reading (last occurrence, JSON last line) decides named metrics
            metrics[name] = parse_metric(text, name, where=str(result.stdout_path))
        except MetricNotFound as exc:
            if mentions(text, name):  # "'0x10' is not a number" says more than "no value"
                problems[name] = exc.reason
    cause = _primary_cause(session, metrics, problems)
    return metrics, problems, cause, result.duration_s


def _named_metrics(session: LoopSession) -> list[str]:
    criteria = getattr(session.protocol, "review_criteria", None)
    names = [session.protocol.metric] if session.protocol.metric else []
    return names + [c.name for c in criteria.metrics] if criteria is not None else names


def _primary_cause(session: LoopSession, metrics: dict[str, float],
                   problems: dict[str, str]) -> str:
    metric = session.protocol.metric
    if not _strict(session):
        return ""  # ml-iteration: a missing metric fails its criterion, not the round
    if metric not in metrics:
        detail = f": {problems[metric]}" if problems.get(metric) else ""
        return f"eval printed no {metric} value on stdout{detail}"
    value = metrics[metric]
    return "" if math.isfinite(value) else f"eval reported {metric}={value} (not a finite number)"


def _custom_checks(session: LoopSession, plan: RoundPlan, seed: int) -> dict[str, CheckResult]:
    criteria = getattr(session.protocol, "review_criteria", None)
    out = {}
    for check in criteria.custom if criteria is not None else []:
        result = run_command(
            check.command, cwd=session.workdir,
            log_dir=session.experiment.round_dir(plan.round_no),
            name=f"check-{check.name}-{seed}", env=command_env(session, plan.round_no, seed),
            time_limit_s=check.timeout or session.protocol.eval_timeout_s,
            pid_file=session.experiment.state_dir / "eval.pid",
        )
        cause = "" if result.ok else result.describe()
        out[check.name] = CheckResult(exit_code=result.exit_code if result.kind is not
                                      ExitKind.TIMEOUT else None, cause=cause)
    return out
