"""Handoff pre-checks: is an experiment ready to be trained unattended by a loop?

Before SPML hands an experiment to ml-iteration or autoresearch (spml-reference §4 "Handoff
pre-checks", §5.2) it checks what a loop silently depends on: the training script runs
standalone and non-interactively, logs to a file and fixes its seeds; git ignores every file
a run writes (a loop commits with ``git add -A`` and rolls back with ``git clean``) and no
importable file beside the fixed ones (a module nobody sees could shadow a fixed one); the
eval prints the same metric twice; the first step arrives fast; SPML_TIME_LIMIT ends the run.

The evidence comes from real runs: L1 in command mode (run here unless a report is passed in)
and one more training run, the time-limit probe, with a short SPML_TIME_LIMIT and a huge
SPML_MAX_STEPS, so that only the time limit can end it. The files these runs create or change
inside the experiment directory are "what a run writes". Pure toolkit code: no Prefect.

The runs, the snapshots and the git queries live in `handoff_runs`; the checks are here.
"""

from __future__ import annotations

import ast
import importlib.machinery
import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from spml.errors import SpmlError
from spml.toolkit.checks.engine import validate_static
from spml.toolkit.globs import compile_globs
from spml.toolkit.metrics import log as lm
from spml.toolkit.pipeline.handoff_runs import (
    ENV_EPOCH_LIMIT,
    PROBE_MAX_STEPS,
    HandoffSettings,
    _Evidence,
    _gather_evidence,
    _ignored_by,
    _listed_files,
)
from spml.toolkit.pipeline.handoff_runs import PROBE_TIME_LIMIT_S as PROBE_TIME_LIMIT_S
from spml.toolkit.process.result import CommandResult
from spml.toolkit.runtime import contract
from spml.toolkit.runtime.report import L1Report, StageResult

__all__ = ["CHECK_NAMES", "HandoffCheck", "HandoffReport", "HandoffSettings",
           "run_handoff_checks"]

# time_limit_honoured: training may overrun the limit by this much (the last step, saving)
TRAINING_MARGIN_S, TRAINING_MARGIN_SHARE = 2.0, 0.5
STARTUP_ALLOWANCE_S = 5.0  # imports and data loading, when no step line shows training began
SEEDS_CHECK = "L0-09"
IMPORTABLE_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".pth")
PROBE_STEM = "spml_probe"
TEST_DIRS = frozenset({"tests", "test", "validation"})
DYNAMIC_IMPORTS = frozenset({"import_module", "__import__"})
_TAIL_LINES = 5
_LOG_READ_BYTES = 1 << 20
_MAX_LISTED = 5


@dataclass(frozen=True)
class HandoffCheck:
    """One check's verdict: ``detail`` says what was found, ``fix`` what to do (failures)."""

    name: str
    passed: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class HandoffReport:
    """Every check, in order, and the L1 report they used."""

    checks: tuple[HandoffCheck, ...]
    l1: L1Report | None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[HandoffCheck]:
        return [check for check in self.checks if not check.passed]

    def text(self) -> str:
        """One ``PASS|FAIL <name>: <detail>`` line per check, a ``  fix:`` line per failure."""
        lines = []
        for check in self.checks:
            lines.append(f"{'PASS' if check.passed else 'FAIL'} {check.name}: {check.detail}")
            if not check.passed and check.fix:
                lines.append(f"  fix: {check.fix}")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks],
                "l1": self.l1.as_dict() if self.l1 is not None else None}


def run_handoff_checks(exp_dir: Path, settings: HandoffSettings,
                       l1_report: L1Report | None = None, *,
                       log_dir: Path | None = None) -> HandoffReport:
    """Run every handoff pre-check on ``exp_dir`` (a git repository or a folder inside one).

    Args:
        exp_dir: The experiment directory; the commands run there.
        settings: The commands and limits.
        l1_report: A command-mode L1 report of this experiment to reuse; None runs L1 here.
        log_dir: Where spml keeps the runs' output (default: a new temporary folder).

    Returns:
        The report; a failing check is a verdict, never an exception.

    Raises:
        ProtocolError: ``exp_dir`` is not a folder.
        GitStateError: ``exp_dir`` is not inside a git repository.
    """
    evidence = _gather_evidence(exp_dir, settings, l1_report, log_dir)
    return HandoffReport(tuple(check(evidence) for check in _CHECKS), evidence.l1)


# --- checks ---------------------------------------------------------------------------------


def _passed(name: str, detail: str) -> HandoffCheck:
    return HandoffCheck(name, True, detail)


def _failed(name: str, problems: Sequence[tuple[str, str]]) -> HandoffCheck:
    """One failing check from ``(what is wrong, the fix)`` pairs."""
    fixes = list(dict.fromkeys(fix for _, fix in problems))
    return HandoffCheck(name, False, "; ".join(what for what, _ in problems), "; ".join(fixes))


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def _stage(report: L1Report, name: str) -> StageResult | None:
    return next((stage for stage in report.stages if stage.name == name), None)


def _check_standalone(ev: _Evidence) -> HandoffCheck:
    script, problems = _training_script(ev.settings.train_command, ev.exp_dir)
    core = [p for p in _listed_files(ev.exp_dir) if p.endswith(".py") and not is_test_code(p)]
    problems += [(f"{where} imports {module}", "core code must not import tests or validation "
                  "code: move what it needs into a core module") for where, module in
                 _test_imports(ev.exp_dir, core)]
    problems += _interactive_problems(ev.l1)
    if problems:
        return _failed("standalone", problems)
    return _passed("standalone", f"{script} runs from the experiment dir; {len(core)} core "
                   "files import no test or validation code; L1 trained with stdin closed")


def _training_script(command: str, exp_dir: Path) -> tuple[str, list[tuple[str, str]]]:
    """The script the train command runs (relative) and what is wrong with it."""
    fix = "run a script inside the experiment dir, e.g. `python train.py`"
    try:
        words = shlex.split(command)
    except ValueError as exc:
        return "", [(f"cannot read the train command: {exc}", fix)]
    for index, word in enumerate(words):
        if word == "-m" and index + 1 < len(words):
            parts = words[index + 1].split(".")
            candidates = [exp_dir.joinpath(*parts[:-1], parts[-1] + ".py"),
                          exp_dir.joinpath(*parts, "__main__.py")]
            return _script_in(exp_dir, candidates, f"module {words[index + 1]}", fix)
        if word.endswith((".py", ".sh")):
            return _script_in(exp_dir, [exp_dir / word], word, fix)
    return "", [(f"cannot tell which script {command!r} runs (no *.py, *.sh or -m module)",
                 fix)]


def _script_in(exp_dir: Path, candidates: list[Path], what: str, fix: str
               ) -> tuple[str, list[tuple[str, str]]]:
    for path in candidates:
        if path.is_file() and path.resolve().is_relative_to(exp_dir):
            return path.resolve().relative_to(exp_dir).as_posix(), []
    return what, [(f"the training script {what} is not a file in {exp_dir}", fix)]


def is_test_code(path: str) -> bool:
    """Test or validation code: under tests/, test/ or validation/, or a test_*.py file."""
    *folders, name = path.split("/")
    return (bool(TEST_DIRS.intersection(folders)) or name.startswith(("test_", "validation"))
            or name.endswith("_test.py") or name == "conftest.py")


def _is_test_module(module: str) -> bool:
    first = module.split(".")[0]
    return first in {"tests", "test", "validation"} or first.startswith("test_")


def _test_imports(exp_dir: Path, files: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``(file:line, module)`` for each import of test or validation code in ``files``."""
    def read(path: str) -> bytes | None:
        try:
            return (exp_dir / path).read_bytes()
        except OSError:
            return None

    return imports_of_test_code((path, read(path)) for path in files)


def imports_of_test_code(sources: Iterable[tuple[str, bytes | None]]) -> Iterator[tuple[str, str]]:
    """``(file:line, module)`` for each import of test or validation code in the ``(path,
    source)`` pairs (a source that cannot be read or parsed is skipped: L0 reports those)."""
    for path, source in sources:
        try:
            tree = ast.parse(source, filename=path) if source is not None else None
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree) if tree is not None else ():
            for module in _imported_names(node):
                if _is_test_module(module):
                    yield f"{path}:{node.lineno}", module


def _imported_names(node: ast.AST) -> list[str]:
    # The first name part decides (`tests.helpers`); `sklearn.utils.validation` is a library.
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.module:
            return [node.module]
        return [alias.name for alias in node.names]  # `from . import tests`
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str) and _call_name(node.func) in DYNAMIC_IMPORTS:
        return [node.args[0].value]  # importlib.import_module("tests.helpers"), __import__
    return []


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _interactive_problems(l1: L1Report) -> list[tuple[str, str]]:
    """A loop runs training with no terminal: L1's run (stdin closed) must have passed."""
    training = _stage(l1, "Training")
    if training is None:
        return [("the L1 report has no Training stage", "run L1 on the experiment first")]
    if training.status == "PASS":
        return []
    if "timed out" in training.summary or "no limited total" in training.summary:
        return [(f"L1 training hung with stdin closed: {training.summary}",
                 "never wait for input (stdin is /dev/null): pass options as flags or "
                 "environment variables")]
    return [(f"L1 training did not pass: {training.summary}",
             "fix the L1 Training stage first (see the L1 report)")]


def _check_file_logging(ev: _Evidence) -> HandoffCheck:
    glob = ev.settings.log_glob
    fix = (f"write a human-readable log file matching {glob} (e.g. outputs/train.log) with one "
           "`step=N loss=X` line per logged step")
    is_log = compile_globs([glob])
    logs = [path for path in ev.written if is_log(path)]
    if not logs:
        return _failed("file_logging", [(f"the runs wrote no file matching {glob}", fix)])
    verdicts = [(path, _step_lines(ev.exp_dir / path)) for path in logs]
    for path, lines in verdicts:
        if isinstance(lines, int) and lines > 0:
            return _passed("file_logging", f"{path}: {lines} per-step lines")
    return _failed("file_logging", [(f"{path}: {verdict}", fix) for path, verdict in verdicts])


def _step_lines(path: Path) -> int | str:
    """How many per-step lines (a step or a loss) the log holds, or why it is no log."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_LOG_READ_BYTES)
    except OSError as exc:
        return f"unreadable ({exc})"
    if not data.strip():
        return "empty"
    if b"\0" in data:
        return "binary, not a human-readable log"
    steps = 0
    for line in data.decode("utf-8", "replace").splitlines():
        values = lm.parse_log_line(line) or {}
        steps += bool(lm.find_key(values, lm.STEP_KEYS) or lm.find_key(values, lm.LOSS_KEYS))
    return steps or "no per-step line (none names a step or a loss)"


def _check_seeds_fixed(ev: _Evidence) -> HandoffCheck:
    try:
        report = validate_static([ev.exp_dir], select=[SEEDS_CHECK])
    except SpmlError as exc:  # e.g. a broken [tool.spml.validate] table
        return _failed("seeds_fixed", [(f"L0 could not run: {exc}", "fix the L0 settings")])
    result = next(r for r in report.results if r.check.id == SEEDS_CHECK)
    if result.status == "FAIL":
        return _failed("seeds_fixed", [(f"{f.path}:{f.line}: {f.message}", f.fix or
                                        result.check.fix) for f in result.findings])
    if result.status == "ERROR":
        return _failed("seeds_fixed", [(f"L0 {SEEDS_CHECK}: {result.reason}",
                                        "report this spml bug; seed every RNG meanwhile")])
    note = f" ({result.status}: {result.reason})" if result.status != "PASS" else ""
    return _passed("seeds_fixed", f"{SEEDS_CHECK} missing-seeds finds nothing{note}")


def _check_gitignore_outputs(ev: _Evidence) -> HandoffCheck:
    if not ev.written:
        return _passed("gitignore_outputs", "the runs wrote no file inside the experiment dir")
    ignored = _ignored_by(ev.exp_dir, ev.written, no_index=False)
    exposed = [path for path in ev.written if path not in ignored]
    if exposed:
        folders = sorted({path.split("/")[0] + ("/" if "/" in path else "") for path in exposed})
        return _failed("gitignore_outputs", [(
            f"{len(exposed)} file(s) the runs wrote are not ignored by git: {_listed(exposed)}",
            f"add {', '.join(folders)} to the experiment's .gitignore (and untrack them): a "
            "loop would commit them, or delete them on rollback")])
    return _passed("gitignore_outputs", f"all {len(ev.written)} files the runs wrote are "
                   f"ignored (e.g. {ev.written[0]} by {ignored[ev.written[0]]})")


def _check_gitignore_importable(ev: _Evidence) -> HandoffCheck:
    # No probe lies in __pycache__/, so ignoring it is allowed: CPython imports a
    # __pycache__/*.pyc only for the source file beside it (PEP 3147), never on its own.
    probes = _importable_probes(ev.exp_dir, ev.settings.fixed_files)
    ignored = _ignored_by(ev.exp_dir, probes, no_index=True)
    if not ignored:
        return _passed("gitignore_importable", f"no importable name is ignored ({len(probes)} "
                       "probes beside the fixed files)")
    rules = sorted(set(ignored.values()))
    shadows = [f"{path} (by {rule})" for path, rule in ignored.items()]
    return _failed("gitignore_importable", [(
        f"git ignores importable files beside the fixed files, so a module could shadow one "
        f"unseen: {_listed(shadows)}",
        f"remove or anchor {', '.join(rules)} (ignore only `__pycache__/`, not `*.pyc`; put "
        "build outputs in a folder that holds no code)")])


def _importable_probes(exp_dir: Path, fixed_globs: Sequence[str]) -> list[str]:
    """Names a module could take in each folder Python imports fixed code from."""
    is_fixed = compile_globs(list(fixed_globs))
    fixed = [path for path in _listed_files(exp_dir) if is_fixed(path)]
    stems: dict[str, set[str]] = {".": {PROBE_STEM}}  # the script's folder is sys.path[0]
    for path in fixed:
        folder, _, name = path.rpartition("/")
        names = stems.setdefault(folder or ".", {PROBE_STEM})
        if name.endswith(".py"):
            names.add(name.removesuffix(".py"))  # a same-named extension module wins over it
    suffixes = dict.fromkeys([*IMPORTABLE_SUFFIXES, *importlib.machinery.EXTENSION_SUFFIXES])
    probes = []
    for folder, names in sorted(stems.items()):
        prefix = "" if folder == "." else folder + "/"
        for stem in sorted(names):
            probes += [f"{prefix}{stem}{suffix}" for suffix in suffixes]
            probes.append(f"{prefix}{stem}/__init__.py")  # a package wins over a module too
    return probes


def _check_deterministic_eval(ev: _Evidence) -> HandoffCheck:
    if not ev.settings.eval_command:
        return _failed("deterministic_eval", [(
            "no eval command: a loop needs a programmatic, deterministic metric",
            "set eval_command to a command that prints `<metric>=<value>` for {checkpoint}")])
    inference = _stage(ev.l1, "Inference")
    if inference is not None and inference.status == "PASS":
        values = ", ".join(line for line in inference.evidence if line.startswith("pass "))
        return _passed("deterministic_eval", f"two eval runs on one checkpoint agree ({values})")
    if inference is not None and inference.status == "FAIL":
        return _failed("deterministic_eval", [(inference.summary, (
            "make the eval deterministic: eval mode, no random sampling or augmentation, a "
            "fixed seed and data order"))])
    evaluation = _stage(ev.l1, "Evaluation")
    why = inference.summary if inference is not None else "L1 ran no Inference stage"
    if evaluation is not None and evaluation.status == "FAIL":
        why = f"{why}; Evaluation: {evaluation.summary}"
    return _failed("deterministic_eval", [(
        f"the eval was not run twice: {why}",
        "fix the eval command (and the checkpoint it reads) until L1's Inference stage runs")])


def _check_fast_first_step(ev: _Evidence) -> HandoffCheck:
    limit = ev.settings.first_step_limit_s
    training = _stage(ev.l1, "Training")
    seconds = training.metrics.get("first_step_s") if training is not None else None
    source = "L1 training run"
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        seconds, source = ev.probe.first_step_s, "time-limit probe"
    if seconds is None:
        return _failed("fast_first_step", [(
            "no step line appeared on stdout or stderr (L1 run and time-limit probe)",
            "print one `step=N loss=X` line per logged step, from the first step on")])
    if seconds > limit:
        return _failed("fast_first_step", [(
            f"first step after {seconds:.1f} s ({source}), limit {limit:g} s",
            "speed up the baseline's start: smaller data, a lighter model, faster I/O")])
    return _passed("fast_first_step", f"first step after {seconds:.1f} s ({source}), limit "
                   f"{limit:g} s")


def _check_time_limit_honoured(ev: _Evidence) -> HandoffCheck:
    probe, result = ev.probe, ev.probe.result
    asked = (f"{contract.ENV_TIME_LIMIT}={probe.time_limit_s:g}, {contract.ENV_MAX_STEPS}="
             f"{PROBE_MAX_STEPS}" + (f", {ENV_EPOCH_LIMIT}={ev.settings.epoch_limit}"
                                     if ev.settings.epoch_limit is not None else ""))
    fix = (f"stop training once {contract.ENV_TIME_LIMIT} seconds have passed (or "
           f"{ENV_EPOCH_LIMIT} epochs), save, and exit 0")
    if not result.ok:
        return _failed("time_limit_honoured", [(
            f"{result.describe()} with {asked} (killed at {probe.allowed_s:g} s); output tail: "
            f"{_tail(result)}", fix)])
    # Exiting before the kill is not enough: a script that ignores the limit but happens to
    # finish within the grace would pass. Training (from the first step, or from the start
    # plus an allowance for imports and data loading) must end near the limit.
    margin = max(TRAINING_MARGIN_S, TRAINING_MARGIN_SHARE * probe.time_limit_s)
    # Start-up counts up to the allowance: a first step line printed only at the end (or
    # none at all) must not excuse the whole run.
    if probe.first_step_s is not None and probe.first_step_s <= STARTUP_ALLOWANCE_S:
        trained, since = result.duration_s - probe.first_step_s, "after its first step"
    else:
        trained, since = result.duration_s - STARTUP_ALLOWANCE_S, (
            f"counting {STARTUP_ALLOWANCE_S:g} s for start-up (no step line was seen within it)")
    if trained > probe.time_limit_s + margin:
        return _failed("time_limit_honoured", [(
            f"ran {result.duration_s:.1f} s with {asked}: {trained:.1f} s {since}, more than "
            f"the limit + {margin:g} s", fix)])
    return _passed("time_limit_honoured", f"exit 0 after {result.duration_s:.1f} s with "
                   f"{asked} ({max(trained, 0):.1f} s {since}; at most the limit + {margin:g} s)")


def _tail(result: CommandResult) -> str:
    lines = [line.strip() for line in result.stderr_tail(_TAIL_LINES).splitlines()
             if line.strip()]
    if not lines:
        lines = [line.strip() for line in result.stdout_text(64 * 1024).splitlines()
                 if line.strip()][-_TAIL_LINES:]
    return " | ".join(lines) or "(no output)"


_CHECKS: tuple[Callable[[_Evidence], HandoffCheck], ...] = (
    _check_standalone, _check_file_logging, _check_seeds_fixed, _check_gitignore_outputs,
    _check_gitignore_importable, _check_deterministic_eval, _check_fast_first_step,
    _check_time_limit_honoured)
CHECK_NAMES = ("standalone", "file_logging", "seeds_fixed", "gitignore_outputs",
               "gitignore_importable", "deterministic_eval", "fast_first_step",
               "time_limit_honoured")
