"""The experiment pipeline's stages as plain functions (no Prefect): design -> plan -> develop
-> handoff (SPML §1.5-1.8, §5.2). The documents themselves are models in `spml.protocols`
(`design`, `plan`, `plan_gate`).

- `context`: what the brainstorm collects (git, versions, GPUs, datasets, baselines).
- `questions`: SPML's brainstorming questions, in order (terminal and Prefect UI).
- `brief`: the brief YAML (`spml design new --from`), validated with line numbers.
- `brainstorm`: writing the design doc, or revising it in place (`## Impact on Plan`).
- `planner`: the design -> SPML's subtasks; revision mode with REVISED / NEW / REMOVED.
- `stages`: the stages' preconditions (a checked design, a gated plan) and shared lookups.
- `levels`: a subtask's gates: its tests (pytest), L0, L1.
- `develop`: SPML's fix loop over those levels, and the implementer command.
- `conclusion`: a finished subtask's `## Conclusion` (integration: evidence from L1).
- `handoff_checks`: SPML's handoff pre-checks on real runs.
- `handoff_runs`: the runs the pre-checks judge (L1, the time-limit probe) and git's view.
- `handoff`: the routing rule and the loop documents the handoff writes.
"""
