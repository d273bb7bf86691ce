"""The `watchdog` flow: keep one long training run alive (deployment `watchdog/default`).

The training attempt is one task whose retries are the restart policy: environment failures
(host OOM kill, preemption, NCCL timeout, hardware error, disk full, hang) are retried from the
newest checkpoint that verifies, for as long as training progresses between them; code failures
and crash loops (the same failure without progress) stop the flow with a diagnosis in
`experiment-context.md`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from spml.flows._interrupt import guarding, watchdog_recorder
from spml.tasks.watchdog import (
    load_settings,
    publish_watch_summary,
    start_episode,
    supervise_training,
)
from spml.toolkit.watchdog.state import WatchdogState


@flow(name="watchdog")
def watchdog_flow(experiment_dir: str, overrides: dict[str, Any] | None = None) -> str:
    """Supervise the training run of ``experiment_dir`` until it finishes or must stop.

    Args:
        experiment_dir: directory with `watchdog.yaml` or `experiment-context.md` settings.
        overrides: settings that win over the files (the CLI flags).
    """
    settings = load_settings(experiment_dir, overrides or {})
    # One watchdog per run (a second would launch the training twice): refused before any
    # state is touched; the kernel frees the lock of a killed watchdog.
    with WatchdogState(Path(experiment_dir).resolve()).hold():
        start_episode(experiment_dir)
        # Ctrl-C / SIGTERM: training ended, `state: interrupted`, exit in seconds (`_interrupt`)
        with guarding(watchdog_recorder(experiment_dir, overrides, settings.log_file)):
            state = supervise_training(settings, experiment_dir, return_state=True)
    summary = publish_watch_summary(experiment_dir)
    get_run_logger().info(summary)
    return state.result()  # re-raises TrainingStopped: the flow run fails with the diagnosis
