"""What confining a command costs: the shared runner with and without the bwrap sandbox, and
the two mechanisms considered (bubblewrap, Landlock) on a bare ``/bin/true``.

Landlock is measured only when its binding is installed (``pip install landlock``; spml does
not depend on it). Each figure is the median of ``--repeats`` starts, in milliseconds.

Usage: python benchmarks/sandbox_overhead.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from spml.toolkit.process import run_command
from spml.toolkit.process.sandbox import Confinement, bwrap_binary, unavailable_reason


def median_ms(action: Callable[[], object], repeats: int) -> float:
    action()  # warm the page cache
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def landlock_start() -> Callable[[], object] | None:
    try:
        import landlock
    except ImportError:
        return None

    def confine() -> None:  # read everywhere, write only under /tmp (an allow-list)
        ruleset = landlock.Ruleset()
        ruleset.allow("/", rules=landlock.FSAccess.all() & ~_write_rights(landlock))
        ruleset.allow(tempfile.gettempdir())
        ruleset.apply()

    return lambda: subprocess.run(["/bin/true"], preexec_fn=confine, check=True)


def _write_rights(landlock: object) -> object:
    access = landlock.FSAccess  # type: ignore[attr-defined]
    return (access.WRITE_FILE | access.REMOVE_DIR | access.REMOVE_FILE | access.MAKE_CHAR
            | access.MAKE_DIR | access.MAKE_REG | access.MAKE_SOCK | access.MAKE_FIFO
            | access.MAKE_BLOCK | access.MAKE_SYM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    repeats = parser.parse_args().repeats
    if unavailable_reason():
        raise SystemExit(f"no sandbox here: {unavailable_reason()}")
    binary = bwrap_binary()
    assert binary is not None
    with tempfile.TemporaryDirectory() as root:
        work, logs, tmp = (Path(root) / name for name in ("work", "logs", "tmp"))
        for folder in (work, logs, tmp):
            folder.mkdir()
        confinement = Confinement(writable=(work,), tmpdir=tmp, read_only=(work / ".git",))
        rows = {
            "bare /bin/true": lambda: subprocess.run(["/bin/true"], check=True),
            "bwrap /bin/true": lambda: subprocess.run(
                confinement.wrap(["/bin/true"], binary), check=True),
            "runner, unconfined": lambda: run_command(
                "true", cwd=work, log_dir=logs, name="plain"),
            "runner, confined": lambda: run_command(
                "true", cwd=work, log_dir=logs, name="boxed", confine=confinement),
        }
        if (landlocked := landlock_start()) is not None:
            rows["landlock /bin/true"] = landlocked
        results = {name: median_ms(action, repeats) for name, action in rows.items()}
    for name, value in results.items():
        print(f"{name:22s} {value:8.2f} ms")
    print(f"sandbox overhead per command (runner): "
          f"{results['runner, confined'] - results['runner, unconfined']:.2f} ms")


if __name__ == "__main__":
    main()
