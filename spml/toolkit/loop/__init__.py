"""The loop engine: rounds of researcher -> compliance -> train+eval -> decide -> git, for every
loop kind (Auto Research, ml-iteration). Plain Python, no Prefect; `spml.tasks` wraps each step.

Contents, in the order a round runs them:

- `kind`: `LoopKind`, what makes a kind (protocol file and model, ledger columns, brief,
  policy, commit prefix, artifact keys): `AUTORESEARCH`, `ITERATION`.
- `experiment`: where an experiment's files live (state in `.spml/<kind>/`), the lock,
  `is_running`; `identity`: its name (unique in the repository: branch, worktree, attempt
  refs) and its ledger generation; `generation`: a deleted ledger starts a new generation.
- `session`: `LoopSession`, the accepted protocol + worktree rebuilt from disk by every step;
  protocol edits between rounds (`reload_protocol`), `preflight`, `check_checkout`.
- `lifecycle`: `open_loop` (validate, worktree, recovery, ledger), `next_step`, `close_loop`;
  `activity`: running, interrupted or ended, for `status`.
- `round`: `run_round`, THE round sequence (the flow passes task steps, tests `PlainSteps`).
- S0 `begin`: `begin_round` -> `RoundPlan` (notes, overrides, clean tree, journal, snapshot,
  brief); `overrides`: a person's verdict override (revert, or re-apply an attempt).
- S1 `researchers/`: the researcher contract (`base`), `command` and `optuna` researchers,
  `dispatch.run_researcher`.
- S2 `compliance`: `check_compliance` (pure: snapshots + changes -> violations), `check_round`,
  `verify_fixed_files`, `restore_supervisor_files`.
- S3+S4 `measure`: the fixed train and eval commands with hard limits -> `Measurement`
  (`measurement`: the per-seed record in `rounds/NNNN/measurement.json`; `observe`: what the
  supervisor reads from the training output itself; `evaluation`: the evaluation's clean
  room and `SPML_METRIC_FILE`).
- `sandboxing`: every command run for the researcher (researcher, train, eval) confined by
  bwrap, the holdout sealed (`sandbox:` in the protocol); `holdout`: the end's measurement of
  best and baseline on it; `confirm`: the end's re-measurement on fresh seeds (`Bench`).
- S5 decide: `policies` (`Decision`, the `Policy` interface, Auto Research's `MinDeltaPolicy`),
  `review` (ml-iteration's compound `ReviewPolicy`), `incumbent` (HEAD's measured state);
  `settle` (decide, commit or archive + roll back, crash-safe order) and `record` (ledger
  row, researcher feedback, journal cleared).
- `batch`: batches of candidates (`parallel:` in the protocol): a worktree, pid files and GPU
  slice per candidate, one settle that keeps at most the best (Bonferroni-corrected), the batch
  journal and its recovery; `round.run_batch` is its sequence. `remote`: a candidate trained on
  another machine (the Dask runner): its code pushed as a git ref, its results back as data.
- `recovery`: finish or undo the round a killed supervisor left in flight, exactly once;
  `interrupt`: what a supervisor stopped by Ctrl-C / SIGTERM writes (ledger `status:
  interrupted`, the journal kept for recovery) and the one line it prints.
- `ledger`: `experiences.md` (and the supervisor's copy) and the round journal on disk;
  `handedits`: a person's edits of the ledger and the protocol while a loop runs.
- `control`: the person on the loop — notes and stop requests as files.
- `brief`: the markdown brief a researcher gets each round (one renderer per kind).
- `summary`: the end-of-loop report (`cost`: what each round and the loop cost); `narrate`:
  what a round's run says in the Prefect UI (its state's name and message, its page); `plot`:
  the ledger drawn as `experiences.png`. `scaffold`: writing a new protocol. `faults`:
  test-only crash points.
"""
