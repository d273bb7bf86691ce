"""Wall time of the L0 static analyser on real code: each clean project of the public corpus.

For every ``tests/fixtures/projects/corpus/<project>/clean`` (verbatim copies of public PyTorch
training projects, see each ``SOURCE.md``) it runs ``spml.toolkit.checks.engine.analyse`` (parse
+ every L0 check, default profile) ``--repeats`` times after one untimed warm-up run, and prints
the project's files and lines (as the report counts them: the analysed files plus the local
modules they import), the median seconds and the median seconds per 1,000 lines; then the
totals over the corpus (sum of the medians, and that sum per 1,000 lines of the corpus).

Usage: python benchmarks/l0_corpus.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks.engine import analyse

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "projects" / "corpus"


def timed(path: Path, config: ValidateConfig) -> tuple[float, int, int]:
    started = time.perf_counter()
    report = analyse([path], config)
    elapsed = time.perf_counter() - started
    return elapsed, report.lines, len(report.files) + report.context_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    config = ValidateConfig(profile="default")
    projects = sorted(p for p in CORPUS.iterdir() if (p / "clean").is_dir())
    print(f"{'project':20s} {'files':>5s} {'lines':>6s} {'median s':>9s} {'s / 1k lines':>13s}")
    total_s = 0.0
    total_lines = total_files = 0
    for project in projects:
        clean = project / "clean"
        timed(clean, config)  # warm-up: imports, first-call caches
        runs = [timed(clean, config) for _ in range(args.repeats)]
        seconds = statistics.median(r[0] for r in runs)
        _, lines, files = runs[0]
        total_s += seconds
        total_lines += lines
        total_files += files
        print(f"{project.name:20s} {files:5d} {lines:6d} {seconds:9.3f} "
              f"{seconds * 1000 / lines:13.3f}")
    print(f"{'total':20s} {total_files:5d} {total_lines:6d} {total_s:9.3f} "
          f"{total_s * 1000 / total_lines:13.3f}")
    print(f"(median of {args.repeats} runs per project, after one warm-up run)")


if __name__ == "__main__":
    main()
