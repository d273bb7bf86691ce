"""Numbers out of text: one parser for what commands print and what training logs.

- `output`: a command's final metrics — `parse_metric` (one named metric, strict; its
  `MetricNotFound.reason` and `missing_reason` say why a value is missing), `find_pairs`
  (every `key=value` / `key: value`), `parse_summary` (the last `---` block).
- `log`: per-step training-log lines — `parse_log_line`, `LogFollower` (tail a growing file),
  `MetricHistory`, and alias lookups (`loss_of`, `grad_norm_of`, `mfu_of`, ...).
"""

from spml.toolkit.metrics.log import parse_log_line
from spml.toolkit.metrics.output import find_pairs, missing_reason, parse_metric, parse_summary

__all__ = ["find_pairs", "missing_reason", "parse_log_line", "parse_metric", "parse_summary"]
