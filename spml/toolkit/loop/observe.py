"""What the supervisor measures itself while the fixed training command runs (S3).

Beside the evaluation's metrics, a review needs facts the trained code cannot fake by printing a
number: the wall time of the train command, the time to its first per-step line, which keys the
per-step lines carry, non-finite values, and lines matching forbidden patterns. The trained
code's own numbers (``mfu=0.31`` in a step line) are kept too, marked as reported by that code.
"""

from __future__ import annotations

import math
import re
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spml.toolkit.metrics.log import STEP_KEYS, LogFollower, find_key, parse_log_line

_NON_FINITE_WORD = re.compile(r"(?<![\w.])[-+]?(?:nan|inf)(?![\w])", re.IGNORECASE)


@dataclass
class TrainingScan:
    """Facts read from the training output (stdout and stderr)."""

    step_lines: int = 0
    step_keys: set[str] = field(default_factory=set)
    nonfinite_keys: set[str] = field(default_factory=set)
    pattern_hits: dict[str, int] = field(default_factory=dict)
    step_values: dict[str, list[float]] = field(default_factory=dict)

    def reported(self) -> dict[str, float]:
        """The median of each finite per-step value (the trained code's own numbers)."""
        out = {}
        for key, values in self.step_values.items():
            finite = [v for v in values if math.isfinite(v)]
            if finite:
                out[key] = statistics.median(finite)
        return out


def is_step_line(values: dict[str, float] | None) -> bool:
    """Whether a parsed log line is a per-step line (it names its step)."""
    return values is not None and find_key(values, STEP_KEYS) is not None


def scan_training_output(lines: Iterable[str],
                         forbid_patterns: Sequence[str] = ()) -> TrainingScan:
    """Per-step keys, non-finite values and forbidden-pattern hits of a training run's lines."""
    compiled = [(p, re.compile(p)) for p in forbid_patterns]
    scan = TrainingScan(pattern_hits={p: 0 for p in forbid_patterns})
    for line in lines:
        for pattern, regex in compiled:
            if regex.search(line):
                scan.pattern_hits[pattern] += 1
        values = parse_log_line(line)
        if not is_step_line(values):
            continue
        assert values is not None
        scan.step_lines += 1
        for key, value in values.items():
            scan.step_keys.add(key)
            scan.step_values.setdefault(key, []).append(value)
            if not math.isfinite(value):
                scan.nonfinite_keys.add(key)
        if _NON_FINITE_WORD.search(line) and all(map(math.isfinite, values.values())):
            scan.nonfinite_keys.add("(unparsed)")  # `loss nan` without a key=value pair
    return scan


def read_lines(*paths: Path, max_bytes: int = 64 << 20) -> list[str]:
    """The lines of each file (bounded: a flood of output is read up to ``max_bytes`` each)."""
    lines: list[str] = []
    for path in paths:
        if path.is_file():
            with path.open("rb") as handle:
                lines += handle.read(max_bytes).decode("utf-8", "replace").splitlines()
    return lines


def has_key(keys: Iterable[str], wanted: str) -> bool:
    """``wanted`` among ``keys``, exactly or as the last part of a namespaced key (train/loss)."""
    return any(k == wanted or k.endswith("/" + wanted) for k in keys)


class FirstStepClock:
    """Watches a growing stdout file from a thread; records when the first step line appears."""

    def __init__(self, stdout_path: Path, poll_s: float = 0.05) -> None:
        self._follower = LogFollower(stdout_path)
        self._poll_s = poll_s
        self._started = time.monotonic()
        self.first_step_s: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spml-first-step", daemon=True)

    def __enter__(self) -> FirstStepClock:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.first_step_s is None:
            self._check()  # a run shorter than one poll: its lines count, timed at the end

    def _run(self) -> None:
        while self.first_step_s is None and not self._stop.wait(self._poll_s):
            self._check()

    def _check(self) -> None:
        try:
            lines = self._follower.poll()
        except OSError:
            return
        if any(is_step_line(parse_log_line(line)) for line in lines):
            self.first_step_s = time.monotonic() - self._started
