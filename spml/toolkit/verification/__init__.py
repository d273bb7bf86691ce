"""Verification: is the treatment better than the baseline, beyond the noise? (SPML §6, with the
statistics SPML lacked.) No Prefect here.

- `statistics`: the verdict ``effective | ineffective | inconclusive`` from two arms of runs,
  with Welch's t interval (default) or a bootstrap interval, and a minimum effect.
- `arms`: reading one arm from a CSV (one row per run/seed), with errors naming file and row.
"""
