"""Wall time of `spml validate static` (parse + every L0 check) on a ~2,000-line project.

Builds, in a temporary folder, one flat multi-file training project out of the fixture projects
in tests/fixtures/projects (gpt_clean, and the nanoGPT / ImageNet / HF-CLM style scripts) plus
generated copies of gpt_clean's model/data/train with renamed symbols (``GPTV1``,
``build_loader_v1``, ``from model_v1 import ...``), until it holds at least ``--min-lines``
lines. Then it runs ``spml.toolkit.checks.engine.analyse`` on it ``--repeats`` times and
prints the median/min/max wall time, and the per-check breakdown of the median run: the same
work as ``analyse`` (one parse, one shared ``Facts``, every check through ``engine._run_one``)
with each phase timed. Shared facts are cached on first use, so a check's time on the shared
``Facts`` includes what it is the first to compute; the "alone" column runs each check by
itself (``ValidateConfig(select=[id])``, parse included) once.

Usage: python benchmarks/static_checks.py [--repeats 20] [--min-lines 2000] [--keep]
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks.engine import _run_one, analyse, selected_checks
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import Project

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "projects"
# fixture folder -> {file in it: its name in the combined (flat) project}
COMPONENTS: dict[str, dict[str, str]] = {
    "gpt_clean": {"model.py": "gpt_model.py", "data.py": "gpt_data.py",
                  "train.py": "gpt_train.py"},
    "public_styles/nanogpt": {"model.py": "nano_model.py", "train.py": "nano_train.py",
                              "configurator.py": "configurator.py"},
    "public_styles/imagenet": {"main.py": "imagenet_main.py"},
    "public_styles/hf_clm": {"run_clm_no_trainer.py": "run_clm_no_trainer.py"},
}
# the nanoGPT-style classes would shadow gpt_clean's (the project indexes classes by name)
RENAMED_COMPONENTS = {"public_styles/nanogpt": "nano"}


@dataclass
class Run:
    """One instrumented analysis: phase and per-check seconds."""

    parse_s: float
    facts_s: float
    checks: dict[str, tuple[float, str, int]] = field(default_factory=dict)  # id -> s, status, n
    errors: dict[str, str] = field(default_factory=dict)  # id -> reason, for ERROR results

    @property
    def total_s(self) -> float:
        return self.parse_s + self.facts_s + sum(s for s, _, _ in self.checks.values())


def top_level_names(text: str) -> tuple[set[str], set[str]]:
    """Classes and functions defined at module level."""
    tree = ast.parse(text)
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    return classes, funcs


def rename_symbols(texts: dict[str, str], tag: str, functions: bool = True) -> dict[str, str]:
    """Rename module-level classes (``GPT`` -> ``GPTV1``) and optionally functions
    (``build_loader`` -> ``build_loader_v1``) everywhere in ``texts``."""
    mapping: dict[str, str] = {}
    for text in texts.values():
        classes, funcs = top_level_names(text)
        mapping |= {c: c + tag.capitalize() for c in classes}
        if functions:
            mapping |= {f: f"{f}_{tag}" for f in funcs}
    if not mapping:
        return texts
    # not after "." (attributes such as args.evaluate) nor before "-" (prose like "GPT-2")
    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, mapping)) + r")(?![\w-])")
    return {name: pattern.sub(lambda m: mapping[m.group(1)], text)
            for name, text in texts.items()}


def rename_imports(texts: dict[str, str], modules: dict[str, str]) -> dict[str, str]:
    """Point ``from model import ...`` / ``import model`` at the renamed modules."""
    out = {}
    for name, text in texts.items():
        for old, new in modules.items():
            text = re.sub(rf"^(\s*)from {old} import", rf"\1from {new} import", text, flags=re.M)
            text = re.sub(rf"^(\s*)import {old}$", rf"\1import {new}", text, flags=re.M)
        out[name] = text
    return out


def component(folder: str) -> dict[str, str]:
    """A fixture project's files under their combined-project names, imports rewritten."""
    files = COMPONENTS[folder]
    texts = {new: (FIXTURES / folder / old).read_text(encoding="utf-8")
             for old, new in files.items()}
    tag = RENAMED_COMPONENTS.get(folder)
    if tag:
        texts = rename_symbols(texts, tag, functions=False)
    return rename_imports(texts, {Path(old).stem: Path(new).stem for old, new in files.items()
                                  if old != new})


def variant(index: int) -> dict[str, str]:
    """gpt_clean's three modules as ``model_v{index}`` etc. with every top-level symbol renamed."""
    tag = f"v{index}"
    texts = {f"{Path(name).stem}_{tag}.py": (FIXTURES / "gpt_clean" / name).read_text("utf-8")
             for name in ("model.py", "data.py", "train.py")}
    return rename_imports(rename_symbols(texts, tag),
                          {"model": f"model_{tag}", "data": f"data_{tag}"})


def line_count(texts: dict[str, str]) -> int:
    return sum(len(t.splitlines()) for t in texts.values())


def build_project(dest: Path, min_lines: int, min_variants: int) -> dict[str, str]:
    files: dict[str, str] = {}
    for folder in COMPONENTS:
        files |= component(folder)
    index = 0
    while index < min_variants or line_count(files) < min_lines:
        index += 1
        files |= variant(index)
    for name, text in files.items():
        ast.parse(text, filename=name)  # a broken rename must fail here, not as a check error
        (dest / name).write_text(text, encoding="utf-8")
    return files


def instrumented(paths: list[Path], config: ValidateConfig) -> Run:
    """``engine.analyse`` step by step, each step timed."""
    t0 = time.perf_counter()
    project = Project.load(paths)
    t1 = time.perf_counter()
    facts = Facts(project, config)
    run = Run(parse_s=t1 - t0, facts_s=time.perf_counter() - t1)
    for check in selected_checks(config.select, config.ignore):
        started = time.perf_counter()
        result = _run_one(check(), facts, config, None)
        run.checks[check.id] = (time.perf_counter() - started, result.status,
                                len(result.findings))
        if result.status == "ERROR":
            run.errors[check.id] = result.reason
    return run


def timed_analyse(paths: list[Path], config: ValidateConfig | None = None) -> float:
    started = time.perf_counter()
    analyse(paths, config)
    return time.perf_counter() - started


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def report_breakdown(run: Run, alone: dict[str, float]) -> None:
    print(f"\nper-check breakdown of the median instrumented run (total {ms(run.total_s)}):")
    print(f"  {'parse (Project.load)':34s} {ms(run.parse_s)}")
    print(f"  {'Facts()':34s} {ms(run.facts_s)}")
    print(f"  {'check':8s} {'status':6s} {'findings':>8s} {'shared Facts':>15s}"
          f" {'alone (w/ parse)':>18s}")
    ordered = sorted(run.checks.items(), key=lambda item: -item[1][0])
    for check_id, (seconds, status, count) in ordered:
        print(f"  {check_id:8s} {status:6s} {count:8d} {ms(seconds):>15s}"
              f" {ms(alone[check_id]):>18s}")
    checks_s = sum(s for s, _, _ in run.checks.values())
    print(f"  {'all checks':34s} {ms(checks_s)}")
    if run.errors:
        print(f"\n{len(run.errors)} check(s) ended in ERROR (their time is still counted):")
        for check_id, reason in sorted(run.errors.items()):
            print(f"  {check_id}: {reason[:90]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--min-lines", type=int, default=2000)
    parser.add_argument("--min-variants", type=int, default=1,
                        help="generated gpt_clean copies to add even if the line count is met")
    parser.add_argument("--keep", action="store_true", help="keep the generated project")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="spml-static-bench-"))
    try:
        files = build_project(workdir, args.min_lines, args.min_variants)
        paths = [workdir]
        print(f"project: {workdir} ({len(files)} files, {line_count(files)} lines)")
        timed_analyse(paths)  # warm-up: imports, first-call caches
        walls = [timed_analyse(paths) for _ in range(args.repeats)]
        print(f"analyse() x{args.repeats} (parse + all checks):"
              f" median {ms(statistics.median(walls))} | min {ms(min(walls))}"
              f" | max {ms(max(walls))}")

        config = ValidateConfig()
        runs = sorted((instrumented(paths, config) for _ in range(args.repeats)),
                      key=lambda r: r.total_s)
        median_run = runs[len(runs) // 2]
        alone = {c.id: timed_analyse(paths, ValidateConfig(select=[c.id]))
                 for c in selected_checks(config.select, config.ignore)}
        report_breakdown(median_run, alone)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
