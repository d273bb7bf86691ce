"""Verification: is the treatment better than the baseline, beyond the noise? (SPML §6, with the
statistics SPML lacked.) No Prefect here.

- `statistics`: the verdict ``effective | ineffective | inconclusive`` from two arms of runs,
  with Welch's t interval (default) or a bootstrap interval, and a minimum effect.
- `arms`: reading one arm from a CSV (one row per run/seed), with errors naming file and row.
- `subject`: what an experiment directory's verification compares (the finished loop's baseline
  and chosen commits, metric, direction, minimum effect, review criteria).
- `experiment`: the verification's steps as plain functions (fresh-seed runs of each arm, the
  judgement, the checklist, the report written).
- `checklist`: SPML's checklist, one function of the evidence per item.
- `report`: `verification.md` (front matter and body); `plot`: `verification.png`.
"""
