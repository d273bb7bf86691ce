"""A round's measurement as data: `rounds/NNNN/measurement.json`, one record per seed.

Every metric the evaluation printed is kept, plus what the supervisor measured itself (train
wall time, time to the first step line, the training-output scan, custom-check exit codes) and
the git tree that was measured. Decisions read these files — the candidate's and the incumbent's
(the latest measurement of the tree HEAD has now) — never numbers parsed back from the ledger.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from spml.toolkit.files import write_atomic

MEASUREMENT_FILENAME = "measurement.json"
# Runs of the incumbent (HEAD's code) made at the start of a round, to top its count up.
INCUMBENT_FILENAME = "incumbent.json"


class CheckResult(BaseModel):
    """A custom check: its exit code (None when it could not run or was killed) and cause."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="constants")

    exit_code: int | None
    cause: str = ""

    @property
    def passed(self) -> bool:
        """Exit 0 = pass."""
        return self.exit_code == 0


class SeedRecord(BaseModel):
    """One train+eval run (seed ``seed``)."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="constants")

    seed: int
    metrics: dict[str, float] = Field(default_factory=dict)   # printed by the eval
    metric_problems: dict[str, str] = Field(default_factory=dict)  # why a named one is missing
    train_time_s: float = 0.0
    first_step_time_s: float | None = None
    eval_time_s: float = 0.0
    step_lines: int = 0
    step_keys: list[str] = Field(default_factory=list)
    key_lines: dict[str, int] = Field(default_factory=dict)   # step lines carrying each key
    nonfinite_keys: list[str] = Field(default_factory=list)
    pattern_hits: dict[str, int] = Field(default_factory=dict)
    reported: dict[str, float] = Field(default_factory=dict)  # medians of the trained code's
    custom: dict[str, CheckResult] = Field(default_factory=dict)


class ViolationRecord(BaseModel):
    """A compliance violation found while measuring (see `spml.toolkit.loop.compliance`)."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="constants")

    path: str
    reason: str


class Measurement(BaseModel):
    """The outcome of S3+S4 over all repeats."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="constants")

    round: int = 0
    tree: str | None = None               # the git tree that was trained and evaluated
    primary: str | None = None            # the metric that is the loop's scalar, if any
    seeds: tuple[SeedRecord, ...] = ()
    cause: str = ""                       # why measuring failed ("" = it did not)
    violations: tuple[ViolationRecord, ...] = ()
    source: str = "measured"              # or "protocol": a baseline given, not measured

    @property
    def ok(self) -> bool:
        """Every repeat ran and, with a primary metric, printed a finite value of it."""
        if self.cause or self.violations or not self.seeds:
            return False
        values = self.values
        return self.primary is None or (len(values) == len(self.seeds)
                                        and all(map(math.isfinite, values)))

    @property
    def values(self) -> tuple[float, ...]:
        """The primary metric, one value per seed that printed it."""
        if self.primary is None:
            return ()
        return tuple(s.metrics[self.primary] for s in self.seeds if self.primary in s.metrics)

    @property
    def mean(self) -> float | None:
        """Mean of the primary metric over repeats, or None when nothing was measured."""
        return statistics.fmean(self.values) if self.values else None

    @property
    def train_s(self) -> float:
        """Total training wall time over repeats."""
        return sum(s.train_time_s for s in self.seeds)

    @property
    def eval_s(self) -> float:
        """Total evaluation wall time over repeats."""
        return sum(s.eval_time_s for s in self.seeds)

    def samples(self, source: str, name: str) -> list[float]:
        """Per-seed values of ``name`` from ``source`` (metrics | measured | reported)."""
        out = []
        for seed in self.seeds:
            value = _sample(seed, source, name)
            if value is not None:
                out.append(value)
        return out


def _sample(seed: SeedRecord, source: str, name: str) -> float | None:
    if source == "metrics":
        return seed.metrics.get(name)
    if source == "measured":
        return getattr(seed, name)
    return seed.reported.get(name)


def mean_and_sem(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (None with one value: no spread was measured)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, statistics.stdev(values) / math.sqrt(len(values))


def save_measurement(round_dir: Path, measurement: Measurement,
                     name: str = MEASUREMENT_FILENAME) -> None:
    """Atomically write ``round_dir/measurement.json`` (or ``name``)."""
    write_atomic(round_dir / name, measurement.model_dump_json(indent=2))


def load_measurement(round_dir: Path, name: str = MEASUREMENT_FILENAME) -> Measurement | None:
    """The round's measurement, or None when it was never measured (or the file is unusable)."""
    path = round_dir / name
    try:
        return Measurement.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
