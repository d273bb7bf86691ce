"""Classify how one training attempt ended: environment failure (restart) or code failure.

Environment: host OOM kill, preemption, NCCL timeout, GPU hardware fault, full disk, hang. Code:
Python exception, CUDA OOM, non-finite loss, illegal memory access, anything unknown (a restart
would fail the same way). Source: shared/spec/toolkit-and-watchdog-notes.md §5.1-5.8.
"""

from __future__ import annotations

import logging
import re
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple

from spml.toolkit.process.result import SHELL_EXIT_NAMES

logger = logging.getLogger(__name__)

FailureKind = Literal["environment", "code"]

_HARDWARE_XIDS = {  # Xid triage: notes §5.4 (NVIDIA Xid catalogue as summarised by operators)
    48: "double-bit ECC error", 63: "ECC row-remap pending", 64: "ECC row-remap failure",
    74: "NVLink error", 79: "GPU fallen off the bus", 92: "high single-bit ECC rate",
    94: "contained ECC error", 95: "uncontained ECC error", 119: "GSP error", 120: "GSP error",
}
_BUG_XIDS = {13: "graphics engine exception", 31: "GPU memory page fault"}  # usually app bugs
_SHELL_SIGNALS = {128 + n: n for n in (2, 6, 9, 11, 15)}  # shell `$?` -> signal (notes §5.1)
_SIGNAL_NAMES = {sig.value: sig.name for sig in signal.Signals}
_MAX_EVIDENCE, _MAX_TEXT, _KERNEL_KEY = 5, 200, "kernel_log"

# (pattern, kind, cause, signature); the first that matches wins. Notes §5.2, §5.5, §5.8.
_PATTERNS: tuple[tuple[re.Pattern[str], FailureKind, str, str], ...] = (
    (re.compile(r"uncorrectable ECC error encountered", re.I), "environment",
     "GPU hardware error (uncorrectable ECC)", "gpu:ecc"),
    (re.compile(r"No space left on device|\[Errno 28\]|\bENOSPC\b|PytorchStreamWriter failed "
                r"writing file"), "environment", "disk full (ENOSPC)", "enospc"),
    (re.compile(r"Bus error.*out of shared memory", re.I), "environment",
     "DataLoader worker out of shared memory (/dev/shm)", "dataloader:shm"),
    (re.compile(r"DataLoader worker \(pid.*\) is killed by signal"), "environment",
     "DataLoader worker killed (likely host OOM)", "dataloader:killed"),
    (re.compile(r"torch(?:\.cuda)?\.OutOfMemoryError|CUDA out of memory"), "code",
     "CUDA out of memory (needs a parameter change)", "cuda-oom"),
    (re.compile(r"\bloss\s*(?:is|=|:)\s*[+-]?(?:nan|inf)\b|\b(?:nan|inf)\s+loss\b|non-finite "
                r"loss", re.I), "code", "non-finite loss", "nonfinite-loss"),
    (re.compile(r"illegal memory access|device-side assert triggered|misaligned address|unhandled "
                r"cuda error", re.I), "code", "CUDA error in the application (Xid 13/31 class)",
     "cuda:app-error"),
)
_NVRM_XID = re.compile(r"NVRM: Xid \([^)]*\): (\d+)")
_NCCL_TIMEOUT = re.compile(r"Watchdog caught collective operation timeout: "
                           r"WorkNCCL\(SeqNum=(\d+), OpType=(\w+)")
_NCCL_HEARTBEAT = re.compile(r"Heartbeat monitor timed out|watchdog got stuck for \d+ seconds")
_NCCL_ANY = re.compile(rf"{_NCCL_TIMEOUT.pattern}|{_NCCL_HEARTBEAT.pattern}|NCCL error|nccl\w+"
                       r"Error|Some NCCL operations have failed|taking the entire process down")
_NCCL_WORK = re.compile(r"last enqueued NCCL work: (\d+), last completed NCCL work: (\d+)")
_RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d+\]:\s?")
_CHILD_EXIT = re.compile(r"exitcode\s*:\s*(-\d+)|got signal:\s*(\d+)")  # torchrun's report
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')
_EXC_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<msg>.*))?$")
_LIBRARY_PATHS = ("site-packages", "dist-packages", "/lib/python3", "<frozen ")
_KERNEL_OOM = re.compile(r"^.*out of memory: kill(?:ed)? process.*$", re.I | re.M)


@dataclass(frozen=True)
class AttemptEnd:
    """What the supervisor knows when one attempt of the training subprocess ends."""

    exit_code: int | None  # Popen.returncode (negative = signal); None if we killed it for a hang
    hung: bool = False  # True when the supervisor killed it for missing heartbeats
    log_tail: str = ""  # last ~200 lines of the training log + stderr, joined
    started_step: int | None = None  # step it resumed from (None = fresh start)
    last_step: int | None = None  # last step seen in its log
    oom_kill_evidence: str | None = None  # from read_oom_evidence()
    xid_events: tuple[int, ...] = ()  # Xid codes seen by the GPU watcher during the attempt


@dataclass(frozen=True)
class Diagnosis:
    """Why an attempt ended, and whether a restart can help (``kind == "environment"``)."""

    kind: FailureKind
    cause: str  # short and human-readable: "NCCL collective timeout"
    signature: str  # normalised identity for crash-loop detection: "exc:KeyError@train.py:3"
    evidence: tuple[str, ...]  # the lines or facts that led to it (at most 5 short strings)


class _Facts(NamedTuple):
    end: AttemptEnd
    code: int | None  # exit status, with a torchrun child's signal unwrapped
    lines: tuple[str, ...]  # log tail without "[rankN]:" prefixes


def classify(end: AttemptEnd) -> Diagnosis:
    """Classify a finished attempt as an environment failure (restart) or a code failure (report).

    Args:
        end: What the supervisor saw: exit status, hang flag, log tail, OOM and Xid evidence.

    Returns:
        The :class:`Diagnosis`; an unrecognised failure is ``"code"``, to be surfaced.

    Raises:
        ValueError: ``end`` is a clean exit (code 0, not hung), which is no failure.
    """
    if end.exit_code == 0 and not end.hung:
        raise ValueError("end must be a failed attempt, got exit_code=0 and hung=False "
                         "(classify). A clean exit needs no diagnosis.")
    lines = tuple(_RANK_PREFIX.sub("", line) for line in end.log_tail.splitlines())
    facts = _Facts(end, _effective_exit(end.exit_code, lines), lines)
    diagnosis = next((d for rule in _RULES if (d := rule(facts))), None) or _unrecognised(facts)
    logger.info("attempt classified %s: %s", diagnosis.kind, diagnosis.cause)
    return diagnosis


def _xids(table: Mapping[int, str], kind: FailureKind, what: str, f: _Facts) -> Diagnosis | None:
    nvrm = _matches(f.lines, _NVRM_XID)
    seen = sorted({*f.end.xid_events, *(int(m[1]) for m in nvrm)})
    if not (hits := [xid for xid in seen if xid in table]):
        return None
    names = ", ".join(f"Xid {xid}: {table[xid]}" for xid in hits)
    return _make(kind, f"{what} ({names})", "xid:" + "+".join(map(str, hits)),
                 [f"Xid codes seen: {seen}", *(m.string for m in nvrm[-2:])])


def _hang_or_killed(f: _Facts) -> Diagnosis | None:
    if f.end.hung:
        return _make("environment", "hang: no heartbeat", "hang", [
            "no heartbeat: killed by the supervisor", f"last logged step: {f.end.last_step}"])
    number = _signal_number(f.code)
    status = f"exit status {f.code} (signal {number})"
    if number == signal.SIGKILL and f.end.oom_kill_evidence:
        return _make("environment", "host OOM kill (SIGKILL)", "host-oom",
                     [status, f.end.oom_kill_evidence])
    if number == signal.SIGKILL:
        return _make("environment", "SIGKILL without OOM evidence: external kill or preemption",
                     "signal:9", [status])
    if number == signal.SIGTERM:
        return _make("environment", "SIGTERM: preemption or external stop", "signal:15", [status])
    return None


def _pattern(f: _Facts) -> Diagnosis | None:
    # Only the end of the log: a warning long before the death (a recovered CUDA OOM, an old
    # nan line) must not decide how the run died.
    for pattern, kind, cause, signature in _PATTERNS:
        if hits := _matches(f.lines[-_RECENT_LINES:], pattern):
            return _make(kind, cause, signature, [hits[-1].string])
    return None


def _nccl(f: _Facts) -> Diagnosis | None:
    if not (hits := [match.string for match in _matches(f.lines, _NCCL_ANY)]):
        return None
    evidence = [*hits[:1], *hits[1:][-2:]]  # the first report (the root event) and the latest
    if any(work[1] == work[2] for work in _matches(f.lines, _NCCL_WORK)):
        evidence.append("last enqueued == last completed NCCL work: a rank was stuck on the CPU "
                        "side (e.g. data loading)")
    if timeouts := _matches(f.lines, _NCCL_TIMEOUT):
        # The op, not the sequence number: SeqNum counts collectives since the process started,
        # so it differs at every attempt and would hide a repeat from the crash-loop guard.
        signature = f"nccl:timeout:{timeouts[-1][2]}"
        return _make("environment", "NCCL collective timeout", signature, evidence)
    if _matches(f.lines, _NCCL_HEARTBEAT):
        return _make("environment", "NCCL watchdog heartbeat timeout", "nccl:heartbeat", evidence)
    return _make("environment", "NCCL error or abort", "nccl:error", evidence)


def _traceback(f: _Facts) -> Diagnosis | None:
    starts = [i for i, line in enumerate(f.lines) if "Traceback (most recent call last)" in line]
    found = [tb for i in starts if (tb := _parse_traceback(f.lines[i + 1 :])) is not None
             and not tb[0].endswith("ChildFailedError")]  # skip torchrun's wrapper
    if not found:
        return None
    exc_type, message, where, exc_line = found[-1]
    cause = f"python exception: {exc_type}" + (f": {message}" if message else "")
    signature = f"exc:{exc_type}" + (f"@{where}" if where else "")
    return _make("code", cause, signature, [exc_line, f"at {where}" if where else ""])


def _own_traceback(f: _Facts) -> Diagnosis | None:
    """A Python exception that is not itself a collective failure is the root cause: the
    other ranks' NCCL errors follow from it."""
    found = _traceback(f)
    if found is None or _DISTRIBUTED.search(found.cause):
        return None
    return found


def _nccl_usage(f: _Facts) -> Diagnosis | None:
    hits = _matches(f.lines, _NCCL_INVALID_USAGE)
    return _make("code", "NCCL invalid usage (mismatched collectives: a code bug)",
                 "nccl:invalid-usage", [hits[-1].string]) if hits else None


_RECENT_LINES = 40
_DISTRIBUTED = re.compile(r"nccl|ProcessGroup|DistBackendError|distributed", re.IGNORECASE)
_NCCL_INVALID_USAGE = re.compile(r"ncclInvalidUsage")
_RULES: tuple[Callable[[_Facts], Diagnosis | None], ...] = (
    partial(_xids, _HARDWARE_XIDS, "environment", "GPU hardware error"), _hang_or_killed, _pattern,
    partial(_xids, _BUG_XIDS, "code", "GPU exception (usually an app bug)"), _own_traceback,
    _nccl_usage, _nccl, _traceback)


def _unrecognised(f: _Facts) -> Diagnosis:
    last = [line.strip() for line in f.lines if line.strip()][-2:]
    if (number := _signal_number(f.code)) is not None:
        name = _SIGNAL_NAMES.get(number, "unknown signal")
        return _make("code", f"killed by signal {number} ({name}) without a recognised cause",
                     f"signal:{number}", [f"exit status {f.code}", *last])
    if f.code is None:
        return _make("code", "ended without an exit status or a recognised cause", "unknown", last)
    if name := SHELL_EXIT_NAMES.get(f.code):  # the command never ran: a typo, a missing venv
        return _make("code", f"exit {f.code} ({name}): check the train command", f"exit:{f.code}",
                     last)
    return _make("code", f"exit {f.code} without a recognised cause", f"exit:{f.code}", last)


def _make(kind: FailureKind, cause: str, signature: str, evidence: Iterable[str]) -> Diagnosis:
    flat = [" ".join(text.split()) for text in (cause, *evidence) if text]
    short = [text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..." for text in flat]
    return Diagnosis(kind, short[0], signature, tuple(short[1 : _MAX_EVIDENCE + 1]))


def _matches(lines: Iterable[str], pattern: re.Pattern[str]) -> list[re.Match[str]]:
    return [match for line in lines if (match := pattern.search(line)) is not None]


def _signal_number(code: int | None) -> int | None:
    return -code if code is not None and code < 0 else _SHELL_SIGNALS.get(code or 0)


def _effective_exit(code: int | None, lines: tuple[str, ...]) -> int | None:
    """Unwrap torchrun, which exits 1 and reports ``exitcode : -9`` for a SIGKILLed child."""
    children = _matches(lines, _CHILD_EXIT)
    if code is None or code <= 0 or _signal_number(code) is not None or not children:
        return code
    return int(children[-1][1]) if children[-1][1] else -int(children[-1][2])


def _parse_traceback(lines: tuple[str, ...]) -> tuple[str, str, str | None, str] | None:
    """``(type, message, innermost user "file:line", exception line)`` of one traceback."""
    frames: list[tuple[str, str]] = []
    for line in lines:
        if frame := _FRAME.match(line):
            frames.append((frame["file"], frame["line"]))
        elif line.strip() and not line[0].isspace():
            if (exc := _EXC_LINE.match(line.strip())) is None:
                return None
            user = [fr for fr in frames if not any(lib in fr[0] for lib in _LIBRARY_PATHS)]
            inner = (user or frames)[-1] if frames else None
            where = f"{Path(inner[0]).name}:{inner[1]}" if inner else None
            return exc["type"], (exc["msg"] or "").strip(), where, line.strip()
    return None


def read_oom_evidence(
    since_counts: dict[str, int] | None = None,
    *,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    kernel_log: Callable[[], str] | None = None,
    proc_cgroup: Path = Path("/proc/self/cgroup"),
) -> tuple[str | None, dict[str, int]]:
    """Read host OOM-kill counters; call at attempt start, then at its end with those counts.

    Args:
        since_counts: Counts from an earlier call; ``None`` compares against zero.
        cgroup_root: cgroup mount (v2 ``memory.events``, v1 ``memory/.../memory.oom_control``).
        kernel_log: Returns kernel log text to scan (e.g. ``dmesg``); its errors are logged.
        proc_cgroup: This process's cgroup membership file.

    Returns:
        ``(evidence, counts)``: evidence is ``None`` unless a counter rose; counts are keyed by
        source (a counter file, or ``"kernel_log"``); ``(None, {})`` when nothing is readable.
    """
    counts = _cgroup_counts(cgroup_root, proc_cgroup)
    if (oom_lines := _kernel_oom_lines(kernel_log)) is not None:
        counts[_KERNEL_KEY] = len(oom_lines)
    base = since_counts or {}
    facts = [f"oom_kill {base.get(key, 0)} -> {n} in {key}" for key, n in counts.items()
             if key != _KERNEL_KEY and n > base.get(key, 0)]
    if oom_lines and counts[_KERNEL_KEY] > base.get(_KERNEL_KEY, 0):
        facts.append(f"kernel: {oom_lines[-1][:_MAX_TEXT]}")
    return ("; ".join(facts) or None), counts


def _cgroup_counts(cgroup_root: Path, proc_cgroup: Path) -> dict[str, int]:
    """``oom_kill`` of each hierarchy's nearest readable counter file, keyed by its path."""
    try:
        entries = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        entries = ["0::/", "0:memory:/"]  # membership unknown: look at the top of the mount
    counts: dict[str, int] = {}
    for entry in entries:
        _, controllers, path = [*entry.split(":", 2), "", ""][:3]
        parts = [part for part in path.split("/") if part not in ("", ".", "..")]
        if controllers == "":
            base, name = cgroup_root, "memory.events"
        elif "memory" in controllers.split(","):
            base, name = cgroup_root / "memory", "memory.oom_control"
        else:
            continue
        for depth in range(len(parts), -1, -1):  # own cgroup first, then its ancestors
            if (n := _oom_kill_count(file := base.joinpath(*parts[:depth], name))) is not None:
                counts[str(file)] = n
                break
    return counts


def _oom_kill_count(path: Path) -> int | None:
    try:
        found = re.search(r"^oom_kill (\d+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    except OSError:
        return None
    return int(found[1]) if found else None


def _kernel_oom_lines(kernel_log: Callable[[], str] | None) -> list[str] | None:
    try:
        text = None if kernel_log is None else kernel_log()
    except Exception as exc:  # a caller-supplied reader (dmesg may be forbidden): tolerate it
        logger.warning("kernel log unreadable, no OOM evidence from it: %s", exc)
        text = None
    return None if text is None else [line.strip() for line in _KERNEL_OOM.findall(text)]
