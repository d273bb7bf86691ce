"""What the supervisor measures itself while the fixed training command runs (S3).

Beside the evaluation's metrics, a review needs facts about the run itself: the wall time of
the train command (the trained code cannot fake it), the time to its first per-step line on
stdout or stderr (the code decides when it prints that line), which keys every per-step line
carries, non-finite values on any line, and lines matching forbidden patterns. The trained
code's own numbers (``mfu=0.31`` in a step line) are kept too, marked as reported by that code.
Whole files are read line by line, so a flood of output cannot push a NaN out of sight.
"""

from __future__ import annotations

import math
import re
import statistics
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spml.toolkit.metrics.log import STEP_KEYS, LogFollower, find_key, parse_log_line

_NON_FINITE_WORD = re.compile(r"(?<![\w.])[-+]?(?:nan|inf)(?![\w])", re.IGNORECASE)


@dataclass
class TrainingScan:
    """Facts read from the training output (stdout and stderr)."""

    step_lines: int = 0
    step_keys: set[str] = field(default_factory=set)
    key_lines: dict[str, int] = field(default_factory=dict)  # step lines carrying each key
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
        values = parse_log_line(line) or {}
        # Any line counts for NaN/Inf: `epoch=1 loss=nan`, a Trainer dict without a step.
        scan.nonfinite_keys.update(k for k, v in values.items() if not math.isfinite(v))
        if _NON_FINITE_WORD.search(line) and all(map(math.isfinite, values.values())):
            scan.nonfinite_keys.add("(unparsed)")  # `loss nan` without a key=value pair
        if is_step_line(values):
            _count_step_line(scan, values)
    return scan


def _count_step_line(scan: TrainingScan, values: dict[str, float]) -> None:
    scan.step_lines += 1
    for key, value in values.items():
        scan.step_keys.add(key)
        scan.key_lines[key] = scan.key_lines.get(key, 0) + 1
        scan.step_values.setdefault(key, []).append(value)


def read_lines(*paths: Path, max_line: int = 1 << 20) -> Iterator[str]:
    """Every line of each file, streamed (a line longer than ``max_line`` bytes is cut)."""
    for path in paths:
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            while chunk := handle.readline(max_line):
                yield chunk.decode("utf-8", "replace").rstrip("\r\n")


def has_key(keys: Iterable[str], wanted: str) -> bool:
    """``wanted`` among ``keys``, exactly or as the last part of a namespaced key (train/loss)."""
    return any(k == wanted or k.endswith("/" + wanted) for k in keys)


class FirstStepClock:
    """Watches the growing stdout and stderr files from a thread; records when the first step
    line appears on either."""

    def __init__(self, *paths: Path, poll_s: float = 0.05) -> None:
        self._followers = [LogFollower(path) for path in paths]
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
        for follower in self._followers:
            try:
                lines = follower.poll()
            except OSError:
                continue
            if any(is_step_line(parse_log_line(line)) for line in lines):
                self.first_step_s = time.monotonic() - self._started
                return
