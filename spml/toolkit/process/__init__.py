"""The command runner every stage shares: process groups, time limits, exit classification.

- `runner`: `run_command` (run to the end with a hard limit, kill the whole group),
  `start_command` / `RunningCommand` (for callers that poll, like the watchdog),
  `kill_stale_process_group` (orphans of a dead supervisor), `supervisor_path`.
- `result`: `CommandResult` and `ExitKind` (ok, error, signal, timeout) with one-line causes.
- `procfs`: /proc helpers (descendants that left the group, found by an environment token).
"""

from spml.toolkit.process.result import CommandResult, ExitKind
from spml.toolkit.process.runner import (
    RunningCommand,
    kill_stale_process_group,
    run_command,
    start_command,
    supervisor_path,
)

__all__ = ["CommandResult", "ExitKind", "RunningCommand", "kill_stale_process_group",
           "run_command", "start_command", "supervisor_path"]
