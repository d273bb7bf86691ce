"""The command runner every stage shares: process groups, time limits, exit classification.

- `runner`: `run_command` (run to the end with a hard limit, kill the whole group),
  `start_command` / `RunningCommand` (for callers that poll, like the watchdog),
  `kill_stale_process_group` (orphans of a dead supervisor), `supervisor_path`,
  `live_groups` / `end_live_groups` (every group still running, for an interrupted supervisor).
- `result`: `CommandResult` and `ExitKind` (ok, error, signal, timeout) with one-line causes.
- `interrupt`: Ctrl-C / SIGTERM for a supervisor: end the live groups, record, report, leave
  with 130 / 143 within seconds (the Prefect layer adds its part in `spml.flows._interrupt`).
- `lock`: `SupervisorLock` (one supervisor per directory, freed by the kernel on kill -9) and
  `is_held` (how `status` tells a live supervisor from a killed one).
- `procfs`: /proc helpers (descendants that left the group, found by an environment token).
- `sandbox`: `Confinement` (what a command may write, what it may not read, network or none)
  run by the bundled bwrap; `unavailable_reason` (why a kernel cannot sandbox).
"""

from spml.toolkit.process.result import CommandResult, ExitKind
from spml.toolkit.process.runner import (
    RunningCommand,
    end_live_groups,
    kill_stale_process_group,
    live_groups,
    run_command,
    start_command,
    supervisor_path,
)

__all__ = ["CommandResult", "ExitKind", "RunningCommand", "end_live_groups",
           "kill_stale_process_group", "live_groups", "run_command", "start_command",
           "supervisor_path"]
