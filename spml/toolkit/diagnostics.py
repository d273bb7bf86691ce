"""SPML's diagnostics decision trees as a function: collected evidence -> likely causes.

SPML (§8) keeps three trees as prose for an agent: why the loss does not go down
(convergence), why training is slow (efficiency), and what an architecture metric says
(architecture). `diagnose` walks all three over the evidence that is present and returns one
`Diagnosis` per branch that fires, each naming its tree, the symptom, the likely cause, the
first action, and the numbers that decided it. Absent evidence fires nothing: a diagnosis is
never guessed. Thresholds are SPML's (§2.4, §8), the gradient ones shared with L1
(`runtime.thresholds`). No fix is proposed before evidence: the first action is where to look.

Evidence comes from per-step records (`evidence_from_records`: L1's and Monitor's JSON lines),
from training-log lines (`evidence_from_log_lines`, the watchdog's) or from what an L1 run left
in its log dir (`evidence_from_l1_log_dir`); `diagnostics_text` renders the report section.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spml.toolkit.metrics.log import GRAD_NORM_KEYS, LOSS_KEYS, find_value, mfu_of, parse_log_line
from spml.toolkit.runtime.thresholds import Thresholds

CONVERGENCE, EFFICIENCY, ARCHITECTURE = "convergence", "efficiency", "architecture"
FLAT_DROP = 0.01          # a loss that falls less than 1 % from the first to the last window
OSCILLATION_CV = 0.3      # the loss swings by more than 30 % of its mean ...
OSCILLATION_FLIPS = 0.5   # ... and changes direction on more than half the steps
PLATEAU_EARLY_DROP = 0.2  # fell >= 20 % in the first half, then < 2 % in the second
PLATEAU_LATE_DROP = 0.02
MFU_LOW, MFU_MID = 0.20, 0.40
DATA_WAIT_SHARE = 0.20    # a step spends >= 20 % of its time waiting for data: I/O bound
LAYER_SHARE = 0.50        # one layer takes half the step
ENTROPY_COLLAPSE, MOE_BALANCE, RESIDUAL_RATIO, EMBEDDING_NORM = 0.1, 0.5, 1.0, 100.0
HEADING = "Diagnostics (SPML's trees)"
# What an L1 run leaves in its log dir: command mode's $SPML_METRICS_FILE (else the training
# output's key=value lines), entry mode's per-step records.
L1_METRICS_FILES = {"command": ("metrics.jsonl",), "entry": ("l1-metrics.jsonl",)}
L1_OUTPUT_LOGS = ("train.stdout.log", "train.stderr.log")


@dataclass(frozen=True)
class Evidence:
    """What was measured (anything may be missing). Series are per logged step; MFU and the
    shares are fractions of 1."""

    losses: Sequence[float] = ()
    grad_norms: Sequence[float] = ()
    mfu: float | None = None
    data_wait_share: float | None = None
    layer_shares: dict[str, float] = field(default_factory=dict)
    attention_entropy: float | None = None
    moe_balance: float | None = None
    residual_write_ratio: float | None = None
    embedding_norm_max: float | None = None


@dataclass(frozen=True)
class Diagnosis:
    """One branch of one tree that fired."""

    tree: str
    symptom: str
    cause: str
    first_action: str
    evidence: str

    def line(self) -> str:
        return (f"[{self.tree}] {self.symptom} ({self.evidence}) -> likely {self.cause}; "
                f"first: {self.first_action}")


def diagnose(ev: Evidence, thresholds: Thresholds | None = None) -> list[Diagnosis]:
    """Every branch the evidence supports: convergence first (a run that does not learn makes
    the other numbers moot), then efficiency, then architecture."""
    limits = thresholds or Thresholds()
    return [*convergence(ev, limits), *efficiency(ev), *architecture(ev)]


def convergence(ev: Evidence, limits: Thresholds) -> list[Diagnosis]:
    """SPML's "loss not decreasing" tree."""
    losses, grads = list(ev.losses), list(ev.grad_norms)
    bad = [v for v in [*losses, *grads] if not math.isfinite(v)]
    if bad:
        return [Diagnosis(CONVERGENCE, "NaN/Inf in the loss or gradients", "numeric "
                          "instability", "look for log(0), division by zero, overflow (fp16 "
                          "range, missing loss scaling)", f"{len(bad)} non-finite values")]
    found = _gradient_branches(grads, limits)
    if len(losses) >= 4 and not found:
        found = _loss_shape_branches(losses, bool(grads))
    return found


def _gradient_branches(grads: list[float], limits: Thresholds) -> list[Diagnosis]:
    if not grads:
        return []
    if max(grads) < limits.grad_vanishing:
        return [Diagnosis(CONVERGENCE, "all gradients ~ 0", "vanishing gradients",
                          "check the initialisation, residual paths and the clipping config",
                          f"max grad norm {max(grads):.3g} < {limits.grad_vanishing:g}")]
    median = statistics.median(grads)
    spikes = [g for g in grads if g > limits.grad_exploding
              or (median > 0 and g > limits.loss_spike_factor * median)]
    if spikes:
        return [Diagnosis(CONVERGENCE, "some gradients exploding", "exploding gradients",
                          "lower the learning rate and add gradient clipping",
                          f"max grad norm {max(spikes):.3g} vs median {median:.3g}")]
    return []


def _loss_shape_branches(losses: list[float], grads_normal: bool) -> list[Diagnosis]:
    window = max(len(losses) // 4, 1)
    first, last = statistics.fmean(losses[:window]), statistics.fmean(losses[-window:])
    drop = (first - last) / abs(first) if first else 0.0
    diffs = [b - a for a, b in zip(losses, losses[1:], strict=False)]
    flips = sum(1 for a, b in zip(diffs, diffs[1:], strict=False) if a * b < 0)
    mean = statistics.fmean(losses)
    swing = statistics.pstdev(losses) / abs(mean) if mean else 0.0
    if swing > OSCILLATION_CV and flips > OSCILLATION_FLIPS * max(len(diffs) - 1, 1):
        return [Diagnosis(CONVERGENCE, "the loss oscillates wildly", "learning rate too high",
                          "divide the learning rate by 10; check the batch size",
                          f"loss swings {swing:.0%} of its mean, direction flips on "
                          f"{flips}/{len(diffs) - 1} steps")]
    if drop < FLAT_DROP:
        cause = ("learning rate too low or the wrong loss" if grads_normal else
                 "learning rate too low or the wrong loss (no gradient norms to rule out "
                 "vanishing gradients)")
        return [Diagnosis(CONVERGENCE, "the loss is flat", cause, "check the learning-rate "
                          "schedule and the loss function", f"loss {first:.4g} -> {last:.4g} "
                          f"({drop:+.1%})")]
    half = len(losses) // 2
    early = _drop(losses[:half])
    late = _drop(losses[half:])
    if early >= PLATEAU_EARLY_DROP and late < PLATEAU_LATE_DROP:
        return [Diagnosis(CONVERGENCE, "the loss drops, then plateaus", "underfitting",
                          "add capacity; check the data quality",
                          f"first half {early:.0%} down, second half {late:.1%}")]
    return []


def _drop(values: list[float]) -> float:
    if len(values) < 2 or not values[0]:
        return 0.0
    window = max(len(values) // 4, 1)
    first, last = statistics.fmean(values[:window]), statistics.fmean(values[-window:])
    return (first - last) / abs(first)


def efficiency(ev: Evidence) -> list[Diagnosis]:
    """SPML's efficiency tree (MFU bands, a dominating layer, data waits)."""
    found: list[Diagnosis] = []
    if ev.mfu is not None:
        found.append(_mfu_branch(ev.mfu, ev.data_wait_share))
    if ev.layer_shares:
        layer, share = max(ev.layer_shares.items(), key=lambda item: item[1])
        if share >= LAYER_SHARE:
            found.append(Diagnosis(EFFICIENCY, "one layer dominates the step", "a bottleneck "
                                   "layer", f"profile {layer} and find its inefficient ops",
                                   f"{layer} takes {share:.0%} of the step"))
    return found


def _mfu_branch(mfu: float, wait: float | None) -> Diagnosis:
    seen = f"MFU {mfu:.0%}"
    if mfu < MFU_LOW:
        if wait is not None and wait >= DATA_WAIT_SHARE:
            return Diagnosis(EFFICIENCY, "MFU < 20%", "I/O bottleneck (the step waits for "
                             "data)", "speed up data loading (workers, pinned memory, "
                             "memory-mapped data)", f"{seen}, {wait:.0%} of the step waiting "
                             "for data")
        return Diagnosis(EFFICIENCY, "MFU < 20%", "I/O bottleneck or the wrong backend",
                         "measure data-loading time; is FlashAttention / the fused kernel on?",
                         seen + ("" if wait is None else f", {wait:.0%} waiting for data"))
    if mfu < MFU_MID:
        return Diagnosis(EFFICIENCY, "MFU 20-40%", "memory-bound kernels or poor overlap",
                         "run the memory profiler; check communication/compute overlap", seen)
    return Diagnosis(EFFICIENCY, "MFU > 40%", "possibly inherent (a memory-bound "
                     "architecture)", "accept, unless one layer dominates", seen)


def architecture(ev: Evidence) -> list[Diagnosis]:
    """SPML's architecture-evidence tree."""
    rules = [
        (ev.attention_entropy, lambda v: v < ENTROPY_COLLAPSE, "attention entropy < 0.1",
         "attention collapse", "check the initialisation, temperature and positional "
         "encoding", "attention entropy"),
        (ev.moe_balance, lambda v: v < MOE_BALANCE, "MoE balance < 0.5", "expert collapse",
         "check the auxiliary balance loss and the router initialisation", "MoE balance"),
        (ev.residual_write_ratio, lambda v: v > RESIDUAL_RATIO, "residual write ratio > 1.0",
         "layer outputs swamp the residual stream", "check norm placement and init scale",
         "residual write ratio"),
        (ev.embedding_norm_max, lambda v: v > EMBEDDING_NORM, "embedding norms exploding",
         "embedding learning rate too high", "give the embeddings their own, lower learning "
         "rate", "max embedding norm"),
    ]
    return [Diagnosis(ARCHITECTURE, symptom, cause, action, f"{name} {value:.3g}")
            for value, fires, symptom, cause, action, name in rules
            if value is not None and fires(value)]


def evidence_from_records(records: Iterable[dict[str, object]]) -> Evidence:
    """The loss and gradient-norm series of per-step records (L1's and Monitor's JSON lines:
    ``loss``, ``grad_norm``, ``mfu``); the last MFU is kept."""
    losses: list[float] = []
    grads: list[float] = []
    mfu: float | None = None
    for record in records:
        losses += _number(record.get("loss"))
        grads += _number(record.get("grad_norm"))
        mfu = next(iter(_number(record.get("mfu"))), mfu)
    return Evidence(losses=losses, grad_norms=grads, mfu=mfu)


def evidence_from_metrics_file(path: Path) -> Evidence:
    """`evidence_from_records` of a JSON-lines metrics file (unreadable lines skipped; no
    file, no evidence)."""
    if not path.is_file():
        return Evidence()
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return evidence_from_records(records)


def _number(value: object) -> list[float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return []
    return [float(value)]


def evidence_from_values(lines: Iterable[Mapping[str, float]]) -> Evidence:
    """`evidence_from_records` of parsed log lines (`metrics.log.parse_log_line`'s values, a
    watchdog `MetricPoint`'s): the loss and grad norm under their usual aliases, NaN kept."""
    return evidence_from_records(_record_of(dict(values)) for values in lines)


def _record_of(values: dict[str, float]) -> dict[str, object]:
    return {"loss": find_value(values, LOSS_KEYS), "grad_norm": find_value(values, GRAD_NORM_KEYS),
            "mfu": mfu_of(values)}


def evidence_from_log_lines(lines: Iterable[str]) -> Evidence:
    """`evidence_from_values` of raw training-log lines (lines without metrics skipped)."""
    return evidence_from_values(values for line in lines
                                if (values := parse_log_line(line)) is not None)


def evidence_from_l1_log_dir(log_dir: Path, mode: str | None = None) -> Evidence:
    """The per-step evidence an L1 run left in ``log_dir``: its metrics file (``mode``
    ``command``: ``metrics.jsonl``; ``entry``: ``l1-metrics.jsonl``; None: either), else, in
    command mode, the key=value lines of the training output (as L1 itself reads them)."""
    names = L1_METRICS_FILES.get(mode or "", (*L1_METRICS_FILES["command"],
                                              *L1_METRICS_FILES["entry"]))
    for name in names:
        evidence = evidence_from_metrics_file(log_dir / name)
        if evidence.losses or evidence.grad_norms:
            return evidence
    if mode == "entry":
        return Evidence()
    lines: list[str] = []
    for name in L1_OUTPUT_LOGS:
        if (log_dir / name).is_file():
            lines += (log_dir / name).read_text(encoding="utf-8", errors="replace").splitlines()
    return evidence_from_log_lines(lines)


def diagnosis_lines(evidence: Evidence, thresholds: Thresholds | None = None) -> list[str]:
    """`Diagnosis.line` of every branch that fires (none without evidence)."""
    return [d.line() for d in diagnose(evidence, thresholds)]


def render_diagnostics(lines: Sequence[str]) -> str:
    """The ``Diagnostics (SPML's trees):`` block of a text report ("" when nothing fired)."""
    if not lines:
        return ""
    return f"{HEADING}:\n" + "".join(f"  {line}\n" for line in lines)


def diagnostics_text(log_dir: Path, mode: str | None = None,
                     thresholds: Thresholds | None = None) -> str:
    """SPML's diagnostics on an L1 run's per-step records in ``log_dir``: where to look first
    ("" when the run left no evidence or nothing fired)."""
    return render_diagnostics(diagnosis_lines(evidence_from_l1_log_dir(log_dir, mode),
                                              thresholds))
