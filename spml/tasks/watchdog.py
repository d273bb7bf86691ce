"""The watchdog's training task: its retries ARE the restart policy.

`retry_condition_fn` re-raises the attempt's exception and allows a retry only for
`EnvironmentFailure` (and only when the crash-loop guard allowed it). The backoff computed by the
guard (exponential, jitter, cap, reset after a healthy stretch) is slept at the start of the
next attempt, because Prefect's own retry delays are fixed when the task is defined.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from spml.errors import EnvironmentFailure, TrainingStopped
from spml.protocols.watchdog import WatchdogSettings, load_watchdog_settings
from spml.toolkit.watchdog.evaluator import read_evaluations
from spml.toolkit.watchdog.state import WatchdogState
from spml.toolkit.watchdog.supervise import AttemptReport, supervise_once

# The real budget is the crash-loop guard's (RestartPolicy), unlimited by default for a run
# that keeps progressing; this only keeps Prefect's own counter out of the way.
MAX_TASK_RETRIES = 100_000


def only_environment_failures(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect hook
    """Retry only when the attempt raised `EnvironmentFailure`."""
    try:
        state.result()
    except EnvironmentFailure:
        return True
    except BaseException:  # noqa: BLE001 - anything else must not be retried
        return False
    return False


@task(name="supervise-training", task_run_name="training attempt", cache_policy=NO_CACHE,
      retries=MAX_TASK_RETRIES, retry_delay_seconds=0,
      retry_condition_fn=only_environment_failures)
def supervise_training(settings: WatchdogSettings, experiment_dir: str) -> AttemptReport:
    """One attempt; raises to make Prefect retry (environment) or fail (code / crash loop)."""
    exp = Path(experiment_dir).resolve()  # the trainer's cwd; checkpoints are recorded absolute
    state = WatchdogState(exp)
    report = supervise_once(settings, exp, state.pending_delay())
    logger = get_run_logger()
    if report.finished:
        logger.info("training finished after %d attempt(s)", report.number)
        return report
    assert report.diagnosis is not None
    assert report.decision is not None
    state.save_delay(report.decision.delay_s if report.decision.restart else 0.0)
    message = f"attempt {report.number}: {report.diagnosis.cause} ({report.diagnosis.kind})"
    if report.diagnosis.kind == "environment" and report.decision.restart:
        raise EnvironmentFailure(f"{message}; restarting in {report.decision.delay_s:.0f}s")
    raise TrainingStopped(f"{message}; {report.decision.reason}")



@task(name="load-watchdog-settings", cache_policy=NO_CACHE, retries=0)
def load_settings(experiment_dir: str, overrides: dict) -> WatchdogSettings:
    """The run's settings (watchdog.yaml / context front matter + overrides), validated before
    any state is written."""
    return load_watchdog_settings(Path(experiment_dir).resolve(), overrides)


@task(name="start-episode", cache_policy=NO_CACHE, retries=0)
def start_episode(experiment_dir: str) -> None:
    """A new watchdog run begins: failures of an earlier one do not count against its restart
    budget, and no backoff is carried over."""
    state = WatchdogState(Path(experiment_dir).resolve())
    state.start_episode()
    state.save_delay(0.0)


@task(name="publish-watch-summary", cache_policy=NO_CACHE, retries=1)
def publish_watch_summary(experiment_dir: str) -> str:
    """The attempts as a table artifact; returns a one-line summary."""
    state = WatchdogState(Path(experiment_dir).resolve())
    rows = [{"attempt": i + 1, "started_step": r.started_step, "last_step": r.last_step,
             "kind": r.diagnosis.kind, "cause": r.diagnosis.cause}
            for i, r in enumerate(state.history())]
    if rows:
        create_table_artifact(key="watchdog-attempts", table=rows,
                              description=f"failed attempts in {experiment_dir}")
    evaluations = [{"step": e["step"], "ok": e["ok"], "duration_s": e["duration_s"],
                    **e["metrics"]} for e in read_evaluations(state.dir)]
    if evaluations:
        create_table_artifact(key="watchdog-evaluations", table=evaluations,
                              description=f"checkpoint evaluations in {experiment_dir}")
    if alerts := state.alerts():
        create_markdown_artifact(key="watchdog-alerts",
                                 markdown="# Watchdog alerts\n\n" + "\n".join(
                                     f"- {a}" for a in alerts))
    return (f"{len(rows)} failed attempt(s), {len(evaluations)} evaluation(s), "
            f"{len(alerts)} alert(s) recorded")
