"""S3 train and S4 evaluate: the fixed commands, run with hard limits, metrics from stdout only.

Each run gets a seed (`SPML_SEED`). Every training run starts from the tracked files alone:
ignored files (outputs, `__pycache__`) left by the researcher or an earlier run are removed
first, so a stale checkpoint can never be evaluated in place of a fresh one. Each run's record
(every metric the eval printed, train wall time, time to the first step line, the
training-output scan, custom checks) is written to `rounds/NNNN/measurement.json` with the git
tree that was measured, after every run (a killed supervisor loses only the run in flight).

How many runs: ml-iteration and Auto Research's `acceptance.mode: greedy` run ``repeats`` seeds
(0..n-1). Auto Research's default (`significance`) measures a candidate run by run and stops as
soon as the evidence decides (`spml.toolkit.loop.evidence.compare` against the incumbent, the
pooled runs of HEAD's code): better, clearly not better, or the most runs reached.
`top_up_incumbent` runs HEAD's code at the start of a round until it has
``acceptance.incumbent_runs`` runs (`rounds/NNNN/incumbent.json`), so a candidate is never
compared with a single draw of the best. Runs on a version's other trees (the final
confirmation) go through `run_seeds` in a scratch worktree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spml.errors import MetricNotFound
from spml.toolkit.git.workspace import Workspace
from spml.toolkit.loop.acceptance import judge_runs
from spml.toolkit.loop.begin import RoundPlan, protect_supervisor_files
from spml.toolkit.loop.compliance import check_round, verify_fixed_files
from spml.toolkit.loop.evaluation import (
    METRIC_FILE_VAR,
    clean_for_evaluation,
    evaluation_env,
    importable_leftovers,
    metric_file,
    read_metric_file,
)
from spml.toolkit.loop.faults import crash_point
from spml.toolkit.loop.incumbent import NO_CHANGE, find_incumbent, measured_runs, pool_tree
from spml.toolkit.loop.measurement import (
    INCUMBENT_FILENAME,
    MEASUREMENT_FILENAME,
    CheckResult,
    Measurement,
    SeedRecord,
    ViolationRecord,
    load_measurement,
    save_measurement,
)
from spml.toolkit.loop.observe import FirstStepClock, read_lines, scan_training_output
from spml.toolkit.loop.sandboxing import command_box
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.metrics.output import find_pairs, mentions, parse_metric
from spml.toolkit.process.runner import CommandResult, ExitKind, run_command, supervisor_path

__all__ = ["Measurement", "Site", "command_env", "measure", "run_seeds", "top_up_incumbent"]


@dataclass(frozen=True)
class Site:
    """Where a version's runs happen: its worktree, the round directory that keeps their logs
    and files, and the prefix of the log names (``incumbent-train-3.stdout.log``)."""

    workspace: Workspace
    exp_rel: str
    round_no: int
    log_dir: Path
    prefix: str = ""
    filename: str = MEASUREMENT_FILENAME   # where the runs are saved in ``log_dir``

    @property
    def workdir(self) -> Path:
        """The experiment directory inside the worktree (where commands run)."""
        return self.workspace.path / self.exp_rel


def loop_site(session: LoopSession, round_no: int, incumbent: bool = False) -> Site:
    """The loop's own worktree, logging into round ``round_no``'s directory (the candidate's
    runs, or with ``incumbent`` the top-up runs of HEAD's code)."""
    extra = {"prefix": "incumbent-", "filename": INCUMBENT_FILENAME} if incumbent else {}
    return Site(session.workspace, session.experiment.exp_rel, round_no,
                session.experiment.round_dir(round_no), **extra)


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
    if session.gpus is not None:  # a candidate's own slice of the machine's GPUs
        env["CUDA_VISIBLE_DEVICES"] = ",".join(session.gpus)
    return env


def measure(session: LoopSession, plan: RoundPlan) -> Measurement:
    """Train and evaluate the round's code; record and return what was measured."""
    site = loop_site(session, plan.round_no)
    result = Measurement(round=plan.round_no, tree=session.workspace.state_tree(),
                         primary=session.protocol.metric if _strict(session) else None)
    if not plan.measures_head and result.tree == session.workspace.head_tree():
        # Nothing changed: committing it would call a re-draw of the same code progress (and
        # nothing is saved: these are no runs of anything).
        return result.model_copy(update={"cause": NO_CHANGE})

    def checked() -> list[Any]:  # what training did to the files the researcher may not touch
        return verify_fixed_files(session, plan) + check_round(
            session, plan, after_researcher=False) + importable_leftovers(
            session.workspace, session.experiment.exp_rel)

    if plan.measures_head or not _sequential(session):
        acceptance = session.protocol.acceptance
        count = acceptance.incumbent_runs if plan.measures_head else acceptance.runs
        result = run_seeds(session, site, result, range(count), checked=checked)
    else:
        result = _measure_until_decided(session, site, result, checked, plan.first_round)
    crash_point("after-measure", plan.round_no)  # measured, not decided
    return result


def _sequential(session: LoopSession) -> bool:
    """Auto Research's default: a candidate is measured until the evidence decides."""
    return _strict(session) and not session.protocol.acceptance.greedy


def _measure_until_decided(session: LoopSession, site: Site, result: Measurement,
                           checked: Callable[[], list[Any]], first_round: int) -> Measurement:
    """Run by run until the test decides. Code measured in an earlier round (a researcher that
    proposes it again) continues from those runs and within the same budget: proposing the
    same change until one draw is lucky gains nothing."""
    runs = measured_runs(session.experiment, first_round)  # a batch's siblings are no evidence
    incumbent = find_incumbent(session, runs)
    prior = pool_tree(runs, result.tree)
    done = {seed.seed for seed in prior.seeds} if prior else set()
    budget = session.protocol.acceptance.runs - len(done)
    if budget <= 0:
        return result.model_copy(update={"cause": f"already measured: this code ran "
                                          f"{len(done)} times in earlier rounds (up to round "
                                          f"{prior.round if prior else 0}), and was not kept"})
    for seed in [s for s in range(len(done) + budget) if s not in done][:budget]:
        result = run_seeds(session, site, result, [seed], checked=checked)
        if not result.ok or incumbent is None:
            break  # a failed run fails the round; with no incumbent nothing is compared
        judged = pool_tree([*runs, result], result.tree) or result
        if judge_runs(session, judged, incumbent, runs).outcome != "undecided":
            break
    return result


def top_up_incumbent(session: LoopSession, plan: RoundPlan) -> RoundPlan:
    """Run HEAD's code on the plan's top-up seeds (a round's start, before the researcher): the
    runs join the incumbent's pool. The worktree is HEAD again afterwards; the returned plan
    protects the new file from the researcher."""
    site = loop_site(session, plan.round_no, incumbent=True)
    saved = load_measurement(site.log_dir, site.filename)
    tree = session.workspace.head_tree()
    start = saved if saved is not None and saved.tree == tree else Measurement(
        round=plan.round_no, tree=tree, primary=session.protocol.metric)
    todo = [s for s in plan.top_up if s not in {r.seed for r in start.seeds}]
    run_seeds(session, site, start, todo, checked=lambda: [])
    session.workspace.rollback(plan.base)
    session.workspace.clean_ignored()
    return protect_supervisor_files(session, plan)


def run_seeds(session: LoopSession, site: Site, result: Measurement, seeds: Any, *,
              checked: Callable[[], list[Any]]) -> Measurement:
    """Add a run per seed to ``result`` (saved after each); stop at the first failed run."""
    for seed in seeds:
        crash_point(f"{site.prefix}before-seed-{seed}", site.round_no)
        record, cause, violations = _measure_seed(session, site, seed, checked)
        update: dict[str, Any] = {"seeds": (*result.seeds, record)} if record else {}
        if cause or violations:
            update |= {"cause": cause, "violations": tuple(
                ViolationRecord(path=v.path, reason=v.reason) for v in violations)}
        result = result.model_copy(update=update)
        save_measurement(site.log_dir, result, site.filename)
        if cause or violations:
            break
    if not result.seeds and not result.cause and not result.violations:
        save_measurement(site.log_dir, result, site.filename)
    return result


def _strict(session: LoopSession) -> bool:
    """Auto Research lives on one metric: an eval without it fails the round."""
    return session.kind.name == "autoresearch"


def _measure_seed(session: LoopSession, site: Site, seed: int,
                  checked: Callable[[], list[Any]]) -> tuple[SeedRecord | None, str, list[Any]]:
    train, first_step_s = _train(session, site, seed)
    facts = _scan(session, train)
    if not train.ok:
        return None, _train_cause(train, session), []
    violations = checked()
    if violations:
        return None, "", violations
    metrics, problems, cause, eval_s = _evaluate(session, site, seed)
    if cause:
        return None, cause, []
    record = SeedRecord(seed=seed, metrics=metrics, metric_problems=problems,
                        train_time_s=train.duration_s,
                        first_step_time_s=first_step_s, eval_time_s=eval_s,
                        custom=_custom_checks(session, site, seed), **facts)
    return record, "", []


def _train(session: LoopSession, site: Site, seed: int) -> tuple[CommandResult, float | None]:
    site.workspace.clean_ignored()
    name = f"{site.prefix}train-{seed}"
    with FirstStepClock(site.log_dir / f"{name}.stdout.log",
                        site.log_dir / f"{name}.stderr.log") as clock:
        with command_box(session, site.workspace.path) as box:
            result = run_command(
                session.protocol.train_command, cwd=site.workdir, log_dir=site.log_dir,
                name=name, env=command_env(session, site.round_no, seed),
                time_limit_s=session.protocol.train_timeout_s,
                pid_file=session.pid_file("train"), confine=box,
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


def _evaluate(session: LoopSession, site: Site,
              seed: int) -> tuple[dict[str, float], dict[str, str], str, float]:
    """The eval's metrics, the parser's reason for each named metric it could not read, the
    cause that fails the run (empty: none) and the eval's seconds."""
    # What training left that Python could import must not stand in for the fixed eval's
    # modules (bytecode, a sourceless .pyc, .so, .pth): see `evaluation`.
    clean_for_evaluation(site.workspace, site.exp_rel,
                         getattr(session.protocol.fixed, "outputs", []))
    with metric_file() as reported, \
            command_box(session, site.workspace.path, reported.parent, evaluation=True) as box:
        result = run_command(
            session.protocol.eval.command, cwd=site.workdir,
            log_dir=site.log_dir, name=f"{site.prefix}eval-{seed}",
            env={**command_env(session, site.round_no, seed), **evaluation_env(),
                 METRIC_FILE_VAR: str(reported)},
            time_limit_s=session.protocol.eval_timeout_s,
            pid_file=session.pid_file("eval"), confine=box,
        )
        try:
            from_file = read_metric_file(reported)
        except ValueError as exc:
            return {}, {}, f"eval wrote an unreadable {METRIC_FILE_VAR}: {exc}", \
                result.duration_s
    if result.kind is ExitKind.TIMEOUT:
        return {}, {}, f"eval killed: exceeded {session.protocol.eval_timeout_s:g}s", \
            result.duration_s
    if not result.ok:
        return {}, {}, f"eval failed: {result.describe()}", result.duration_s
    if from_file is not None:
        metrics, problems = from_file, {name: f"not in {METRIC_FILE_VAR}" for name in
                                        _named_metrics(session) if name not in from_file}
    else:
        metrics, problems = _stdout_metrics(session, result)
    cause = _primary_cause(session, metrics, problems)
    return metrics, problems, cause, result.duration_s


def _stdout_metrics(session: LoopSession,
                    result: CommandResult) -> tuple[dict[str, float], dict[str, str]]:
    """The metrics printed on stdout (an evaluation that wrote no SPML_METRIC_FILE)."""
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
    return metrics, problems


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


def _custom_checks(session: LoopSession, site: Site, seed: int) -> dict[str, CheckResult]:
    criteria = getattr(session.protocol, "review_criteria", None)
    out = {}
    for check in criteria.custom if criteria is not None else []:
        with command_box(session, site.workspace.path) as box:
            result = run_command(
                check.command, cwd=site.workdir, log_dir=site.log_dir,
                name=f"{site.prefix}check-{check.name}-{seed}",
                env=command_env(session, site.round_no, seed),
                time_limit_s=check.timeout or session.protocol.eval_timeout_s,
                pid_file=session.pid_file("eval"), confine=box,
            )
        cause = "" if result.ok else result.describe()
        out[check.name] = CheckResult(exit_code=result.exit_code if result.kind is not
                                      ExitKind.TIMEOUT else None, cause=cause)
    return out
