"""Tensor-core activity from DCGM field 1004 (``DCGM_FI_PROF_PIPE_TENSOR_ACTIVE``) via ``dcgmi``.

Field 1004 is the ratio (0-1) of cycles any tensor pipe was active, averaged over the sampling
interval and over the whole device (shared/spec/toolkit-and-watchdog-notes.md §2.1). It needs the
``dcgmi`` client, a running ``nv-hostengine`` and the profiling module, which takes a system-wide
lock that Nsight/CUPTI profilers also want. It is used only where ``dcgmi`` exists; otherwise the
result is unavailable with the reason, never an estimate. NVML GPM (`gpm`) is the DCGM-free path
on Hopper and newer.

``dcgmi dmon -d`` takes MILLISECONDS (dcgmi's DeviceMonitor stores the delay as
``std::chrono::milliseconds``); the reference toolkit passed seconds and sampled every ~1 ms.
Output rows look like ``GPU 0    0.873`` under a ``#Entity  TENSO`` header and an ``ID`` line.
"""

from __future__ import annotations

import logging
import math
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from spml.errors import CommandError
from spml.toolkit.process.runner import RunningCommand, run_command, start_command

log = logging.getLogger(__name__)

TENSOR_ACTIVE_FIELD = 1004  # DCGM_FI_PROF_PIPE_TENSOR_ACTIVE
DEFAULT_INTERVAL_MS = 1000
# Same floor as GPM: the field is an average over the interval, so shorter intervals only add
# host-engine load and noise.
MIN_INTERVAL_MS = 100
DISCOVERY_TIMEOUT_S = 5.0  # `dcgmi discovery -l` must answer within this to count as available
STOP_GRACE_S = 5.0
# Header names the tensor-active column has had (dcgmi prints the field's short name).
TENSOR_COLUMN_NAMES = frozenset({"TENSO", "TENACT", "TENSOR_ACTIVE"})
_MISSING = frozenset({"N/A", "NA", "-", ""})


@dataclass(frozen=True)
class TcaStats:
    """Statistics of TCA samples (fractions 0-1)."""

    mean: float
    median: float
    std: float  # sample standard deviation; 0 for one sample
    min: float
    max: float
    count: int


@dataclass(frozen=True)
class DcgmSummary:
    """What `DcgmSampler` collected; ``available=False`` with ``reason`` when it could not."""

    available: bool
    reason: str
    interval_ms: int
    samples: tuple[float, ...] = ()
    stats: TcaStats | None = None

    @property
    def tca(self) -> float | None:
        """Mean tensor-core activity (fraction 0-1), None when nothing was measured."""
        return None if self.stats is None else self.stats.mean


def tca_stats(samples: list[float] | tuple[float, ...]) -> TcaStats | None:
    """Mean, median, sample std, min, max and count; None for no samples."""
    if not samples:
        return None
    std = statistics.stdev(samples) if len(samples) > 1 else 0.0
    return TcaStats(mean=statistics.fmean(samples), median=statistics.median(samples), std=std,
                    min=min(samples), max=max(samples), count=len(samples))


def dmon_command(gpu_index: int = 0, interval_ms: int = DEFAULT_INTERVAL_MS) -> list[str]:
    """The ``dcgmi dmon`` argv sampling field 1004 on one GPU every ``interval_ms`` ms."""
    interval_ms = max(int(interval_ms), MIN_INTERVAL_MS)
    return ["dcgmi", "dmon", "-e", str(TENSOR_ACTIVE_FIELD), "-d", str(interval_ms),
            "-i", str(gpu_index)]


def warmup_samples(warmup_s: float, interval_ms: int) -> int:
    """How many leading samples fall inside ``warmup_s`` seconds of sampling every
    ``interval_ms`` milliseconds (both units explicit: the reference mixed them up)."""
    if warmup_s <= 0:
        return 0
    return int(warmup_s * 1000.0 / max(int(interval_ms), MIN_INTERVAL_MS))


def parse_dmon_output(text: str, gpu_index: int | None = None) -> list[float]:
    """The field-1004 values (fractions 0-1) in ``dcgmi dmon`` output, oldest first.

    Header lines start with ``#``; the tensor column is found by name (`TENSOR_COLUMN_NAMES`),
    or is the only value column when one field was requested. Rows of other GPUs (when
    ``gpu_index`` is given), ``N/A`` values and non-data lines (``ID``, errors) are skipped.
    """
    column: int | None = None
    values: list[float] = []
    for line in text.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0].startswith("#"):
            names = [t for t in tokens if t.lstrip("#").lower() not in ("", "entity")]
            column = _tensor_column(names)
            continue
        if len(tokens) < 3 or tokens[0] not in ("GPU", "GPU-I", "GPU-CI"):
            continue
        if gpu_index is not None and tokens[1] != str(gpu_index):
            continue
        value = _value_at(tokens[2:], column)
        if value is not None:
            values.append(value)
    return values


def _tensor_column(names: list[str]) -> int | None:
    """Index of the tensor column among the value columns; None when the header does not
    name it."""
    for index, name in enumerate(names):
        if name.upper() in TENSOR_COLUMN_NAMES:
            return index
    return 0 if len(names) == 1 else None


def _value_at(cells: list[str], column: int | None) -> float | None:
    if column is None:
        if len(cells) != 1:  # several fields and no named column: refuse to guess
            return None
        column = 0
    if column >= len(cells) or cells[column].upper() in _MISSING:
        return None
    try:
        value = float(cells[column])
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def dmon_error(text: str) -> str | None:
    """The first error line dcgmi printed (e.g. the profiling module lock), if any."""
    for line in text.splitlines():
        if "error" in line.lower():
            return line.strip()
    return None


def dcgm_unavailable_reason(log_dir: Path | None = None) -> str | None:
    """None when ``dcgmi`` exists and its host engine answers, else the reason."""
    if shutil.which("dcgmi") is None:
        return "dcgmi not found on PATH (DCGM is not installed); TCA needs DCGM or NVML GPM"
    with tempfile.TemporaryDirectory(prefix="spml-dcgm-") as tmp:
        logs = log_dir or Path(tmp)
        try:
            result = run_command(["dcgmi", "discovery", "-l"], cwd=logs, log_dir=logs,
                                 name="dcgmi-discovery", time_limit_s=DISCOVERY_TIMEOUT_S)
        except CommandError as exc:
            return f"dcgmi could not be started: {exc}"
        if not result.ok:
            detail = result.stderr_tail(5) or result.stdout_text(2000).strip()
            return f"dcgmi discovery failed ({result.describe()}): {detail}"
    return None


class DcgmSampler:
    """Runs ``dcgmi dmon -e 1004`` in the background and parses what it printed on `stop`.

    Args:
        log_dir: Where dcgmi's stdout/stderr logs go (kept for inspection).
        gpu_index: DCGM GPU id to sample.
        interval_ms: Sampling interval in milliseconds (raised to `MIN_INTERVAL_MS`).
    """

    def __init__(self, log_dir: Path, gpu_index: int = 0,
                 interval_ms: int = DEFAULT_INTERVAL_MS) -> None:
        self.log_dir = log_dir
        self.gpu_index = gpu_index
        self.interval_ms = max(int(interval_ms), MIN_INTERVAL_MS)
        self._running: RunningCommand | None = None
        self._unavailable: str | None = None

    def start(self) -> None:
        """Check that DCGM answers, then start ``dcgmi dmon``; a failure is kept for `stop`."""
        if self._running is not None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._unavailable = dcgm_unavailable_reason(self.log_dir)
        if self._unavailable is not None:
            return
        argv = dmon_command(self.gpu_index, self.interval_ms)
        try:
            self._running = start_command(argv, cwd=self.log_dir, log_dir=self.log_dir,
                                          name="dcgmi-dmon")
        except CommandError as exc:
            self._unavailable = f"dcgmi dmon could not be started: {exc}"

    def stop(self, warmup_s: float = 0.0) -> DcgmSummary:
        """Stop ``dcgmi dmon`` and summarise its samples, dropping those in the first
        ``warmup_s`` seconds."""
        if self._running is None:
            reason = self._unavailable or "DCGM sampler was never started"
            return DcgmSummary(available=False, reason=reason, interval_ms=self.interval_ms)
        running, self._running = self._running, None
        running.stop(grace_s=STOP_GRACE_S)
        result = running.finish()
        text = result.stdout_text()
        samples = parse_dmon_output(text, self.gpu_index)
        samples = samples[warmup_samples(warmup_s, self.interval_ms):]
        if not samples:
            error = dmon_error(text + "\n" + result.stderr_tail(20))
            reason = error or f"dcgmi dmon printed no field-{TENSOR_ACTIVE_FIELD} values"
            return DcgmSummary(available=False, reason=reason, interval_ms=self.interval_ms)
        return DcgmSummary(available=True, reason=f"DCGM field {TENSOR_ACTIVE_FIELD} on GPU "
                           f"{self.gpu_index}", interval_ms=self.interval_ms,
                           samples=tuple(samples), stats=tca_stats(samples))
