"""Ctrl-C and SIGTERM for a supervisor: end the child process groups, record the interruption,
report it, and leave within a few seconds with 128 + the signal (130, 143).

Left to Python and Prefect, a signal unwinds through Prefect's engine, which reports a crash for
every task and flow run on the way out and retries each report for minutes when the API is
gone, as the embedded server is after a Ctrl-C (it runs in the terminal's process group, so it
gets the same SIGINT) or a scheduler's SIGTERM to the whole job (hundreds of ConnectError
lines), while the ledger keeps saying `running`.

Here the handler takes over at once, in the main thread, and never returns into the
interrupted code, which stays suspended, as under a kill -9 at that instant, whose recovery the
loops and the watchdog already have. Stdout and stderr go to /dev/null (what was printed is
flushed first), then, in helper threads joined against one deadline (`BUDGET_S`), so that a
lock held by the suspended code can delay the exit but never block it:

1. the live process groups (training, evaluation, researcher) get SIGTERM, and SIGKILL after
   `KILL_GRACE_S` (`end_live_groups`);
2. the innermost recorder writes the interruption to disk (atomically) and returns the line
   to print: where it stopped and how to resume;
3. the reporters run (the Prefect layer gives its runs a final state, if the API answers);

then the finishers (the Prefect layer stops its embedded server: no atexit hook runs after
`os._exit`), the line goes to the original stderr, and the process leaves. A second signal
while the record is being written is ignored; one after it leaves at once.

A handler that another library installed over this one (Prefect's flow engine installs its own
SIGTERM handler while it sets up or tears down a flow run) does not hide a signal: a watcher
thread hears every SIGINT / SIGTERM through the signal wakeup fd and, if no handler here took
over within `HANDOFF_S`, takes over from its own thread; the main thread, when it reaches
`take_over` in its turn, waits for the exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from spml.toolkit.process.runner import end_live_groups

KILL_GRACE_S = 2.0  # SIGTERM to SIGKILL for the child process groups
BUDGET_S = 4.0      # recording and reporting, from the signal on
HANDOFF_S = 0.3     # how long the watcher lets a handler in the main thread take over first
# SIGHUP: the terminal closed or the ssh session dropped; left to its default, the supervisor
# would die at once and leave the training (and its GPU) running with no time limit.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# Called with the signal's name (e.g. "SIGINT"); writes the interruption to disk and returns
# the line to print (where it stopped and how to resume).
Recorder = Callable[[str], str]


@dataclass
class _State:
    recorders: list[Recorder] = field(default_factory=list)
    reporters: list[Callable[[int], None]] = field(default_factory=list)  # get the signal
    finishers: list[Callable[[], None]] = field(default_factory=list)
    # Whoever takes this lock handles the interruption (and exits: it is never released).
    claim: threading.Lock = field(default_factory=threading.Lock)
    owner: int | None = None
    recorded: threading.Event = field(default_factory=threading.Event)
    watching: bool = False
    active: bool = False  # installed and not uninstalled: the watcher acts only then
    terminal: int | None = None  # the original stderr, once stdout and stderr are silenced


STATE = _State()


def install() -> None:
    """Make SIGINT and SIGTERM take over (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _on_signal)
    STATE.active = True
    _watch()


def uninstall(previous: dict[int, object] | None = None) -> None:
    """Put ``previous`` handlers back (Python's defaults if None) and forget the recorders:
    signals no longer take over (a CLI command run in-process, as tests do, has ended)."""
    STATE.active = False
    STATE.recorders.clear()
    if threading.current_thread() is threading.main_thread():
        defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL,
                    signal.SIGHUP: signal.SIG_DFL}
        for sig, handler in (previous or defaults).items():
            if handler is not None:
                signal.signal(sig, handler)


def _on_signal(signum: int, _frame: object) -> None:
    take_over(signum, again_exits=True)


def take_over(signum: int, again_exits: bool = False) -> None:
    """Record, report and leave with 128 + ``signum``. Returns only to a handler that
    interrupted this very thread's handling before the record was written.

    Args:
        signum: The signal (SIGINT or SIGTERM).
        again_exits: A signal that comes after the record is written leaves at once (press
            Ctrl-C twice).
    """
    if not STATE.claim.acquire(blocking=False):
        if again_exits and STATE.recorded.is_set():
            os._exit(128 + signum)
        deadline = time.monotonic() + 0.5
        while STATE.owner is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the claim is taken: its owner is being written down
        if STATE.owner in (None, threading.get_ident()):  # None: this thread, interrupted
            return  # a second signal while the record is written: finish writing it first
        while True:  # another thread handles it and exits the process: stay out of its way
            time.sleep(1.0)
    STATE.owner = threading.get_ident()
    try:
        _handle(signum)
    finally:  # whatever failed above, the process leaves
        os._exit(128 + signum)


def _handle(signum: int) -> None:
    deadline = time.monotonic() + BUDGET_S
    name = signal.Signals(signum).name
    terminal = silence()  # nothing else reaches the terminal now (e.g. crash reports)
    lines: list[str] = []
    workers = [threading.Thread(target=_record, args=(name, list(STATE.recorders), lines)),
               threading.Thread(target=end_live_groups, args=(KILL_GRACE_S,)),
               *(threading.Thread(target=_quietly, args=(report, signum))
                 for report in list(STATE.reporters))]
    for worker in workers:
        worker.daemon = True
        worker.start()
    for worker in workers:
        worker.join(timeout=max(0.0, deadline - time.monotonic()))
    for finish in list(STATE.finishers):
        _quietly(finish)
    with contextlib.suppress(OSError):
        line = lines[-1] if lines else f"interrupted by {name}"
        os.write(terminal, (line + "\n").encode("utf-8", errors="replace"))


def _record(name: str, recorders: list[Recorder], lines: list[str]) -> None:
    try:
        if recorders:
            lines.append(recorders[-1](name))
    except Exception as exc:  # noqa: BLE001 - the exit must happen whatever the record does
        lines.append(f"interrupted by {name}; recording the interruption failed: {exc}")
    finally:
        STATE.recorded.set()


def _quietly(action: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(Exception):  # best effort: the disk record is what counts
        action(*args)


def silence() -> int:
    """Flush what was printed, point stdout and stderr at /dev/null (once, whichever thread
    comes first), and return a descriptor of the original stderr for the line printed last."""
    if not _SILENCING.acquire(blocking=False):  # the other thread is at it: wait for it
        deadline = time.monotonic() + 1.0
        while STATE.terminal is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return STATE.terminal if STATE.terminal is not None else 2
    if STATE.terminal is not None:
        return STATE.terminal
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # e.g. a write that the signal interrupted
            stream.flush()
    try:
        terminal = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        terminal = 2
    STATE.terminal = terminal
    return terminal


_SILENCING = threading.Lock()  # taken once, by the first thread that silences


# --- signals that another handler got -------------------------------------------------------


def _watch() -> None:
    """Start the watcher, once, unless another user of the wakeup fd (an asyncio loop in the
    main thread) has it."""
    if STATE.watching:
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    if previous != -1:
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
        return
    STATE.watching = True
    threading.Thread(target=_watcher, args=(read_end,), name="spml-interrupt-watch",
                     daemon=True).start()


def _watcher(read_end: int) -> None:
    wanted = {int(sig) for sig in SIGNALS}
    while True:
        try:
            data = os.read(read_end, 64)
        except InterruptedError:
            continue
        except OSError:
            return
        for signum in (b for b in data if b in wanted):
            if not STATE.active or _claimed_within(0.02):
                continue  # a handler here took over, as it should
            silence()  # before the code that another handler unwinds prints its reports
            if not _claimed_within(HANDOFF_S) and STATE.active:
                take_over(signum)


def _claimed_within(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not STATE.claim.locked() and time.monotonic() < deadline:
        time.sleep(0.005)
    return STATE.claim.locked()
