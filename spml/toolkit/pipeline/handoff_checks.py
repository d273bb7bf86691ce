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
"""

from __future__ import annotations

import ast
import importlib.machinery
import os
import re
import shlex
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import git

from spml.errors import ProtocolError, SpmlError
from spml.toolkit.checks.engine import validate_static
from spml.toolkit.git.runner import HARDENING, config_args
from spml.toolkit.git.setup import find_repo
from spml.toolkit.globs import compile_globs
from spml.toolkit.loop.observe import FirstStepClock
from spml.toolkit.metrics import log as lm
from spml.toolkit.process.result import CommandResult
from spml.toolkit.process.runner import run_command, supervisor_path
from spml.toolkit.runtime import contract
from spml.toolkit.runtime.command import CommandSettings, run_commands
from spml.toolkit.runtime.report import L1Report, StageResult
from spml.toolkit.runtime.thresholds import Thresholds

__all__ = ["CHECK_NAMES", "HandoffCheck", "HandoffReport", "HandoffSettings",
           "run_handoff_checks"]

ENV_EPOCH_LIMIT = "SPML_EPOCH_LIMIT"
PROBE_TIME_LIMIT_S = 3.0  # the probe only needs to see the limit work, not a full budget
PROBE_MAX_STEPS = 10**9  # so large that only the time (or epoch) limit can end the probe
SEEDS_CHECK = "L0-09"
IMPORTABLE_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".pth")
PROBE_STEM = "spml_probe"
TEST_DIRS = frozenset({"tests", "test", "validation"})
_KILL_GRACE_S = 2.0
_TAIL_LINES = 5
_LOG_READ_BYTES = 1 << 20
_MAX_LISTED = 5
_PLACEHOLDER = re.compile(r"\{(max_steps|time_limit|checkpoint_dir|metrics_file|seed)\}")


@dataclass(frozen=True)
class HandoffSettings:
    """What the checks run and their limits.

    Attributes:
        train_command: The training command (L1's); reads ``SPML_*`` or placeholders.
        eval_command: Prints ``metric`` for ``{checkpoint}``; None fails deterministic_eval.
        metric: The name the eval command prints.
        fixed_files: Globs (relative to the experiment dir) of the files a loop never edits.
        time_limit_s: The loop's training budget; the probe uses min(this, 3 s).
        epoch_limit: ``SPML_EPOCH_LIMIT`` for the probe, when the protocol has one.
        max_steps: ``SPML_MAX_STEPS`` of the L1 run.
        first_step_limit_s: The first step line must arrive within this.
        log_glob: Where the run's own log file lands (relative to the experiment dir).
        checkpoint_glob: Where the run's checkpoint lands (L1 evaluates the newest).
        grace_s: The probe may run this long past its time limit before it is killed.
    """

    train_command: str
    eval_command: str | None
    metric: str | None
    fixed_files: list[str]
    time_limit_s: float
    epoch_limit: int | None = None
    max_steps: int = 50
    first_step_limit_s: float = 60.0
    log_glob: str = "**/*.log"
    checkpoint_glob: str = "outputs/*.pt"
    grace_s: float = 30.0

    def __post_init__(self) -> None:
        if min(self.time_limit_s, self.first_step_limit_s, self.grace_s) <= 0:
            raise ProtocolError("time_limit_s, first_step_limit_s and grace_s must be > 0")
        if self.epoch_limit is not None and self.epoch_limit < 1:
            raise ProtocolError(f"epoch_limit must be >= 1 (or None), got {self.epoch_limit}")
        self.l1_settings()  # L1's own rules: a non-empty command, a metric for the eval

    def l1_settings(self) -> CommandSettings:
        """The settings of L1 command mode on this experiment."""
        return CommandSettings(train_command=self.train_command, eval_command=self.eval_command,
                               metric=self.metric, checkpoint_glob=self.checkpoint_glob,
                               max_steps=self.max_steps, time_limit_s=self.time_limit_s)


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


@dataclass(frozen=True)
class _Probe:
    """The time-limit probe: its result, its limits and when its first step line came."""

    result: CommandResult
    time_limit_s: float
    allowed_s: float
    first_step_s: float | None


@dataclass(frozen=True)
class _Evidence:
    """What the checks judge: the runs and the files they wrote (relative POSIX paths)."""

    exp_dir: Path
    settings: HandoffSettings
    l1: L1Report
    probe: _Probe
    written: list[str]


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
    exp_dir = Path(exp_dir).resolve()
    if not exp_dir.is_dir():
        raise ProtocolError(f"{exp_dir}: no such folder (the handoff checks an experiment dir)")
    find_repo(exp_dir)  # the gitignore checks, and every loop after handoff, need one
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="spml-handoff-")).resolve()
    before = _snapshot(exp_dir, log_dir)
    l1 = l1_report if l1_report is not None else run_commands(
        settings.l1_settings(), exp_dir, thresholds=Thresholds(), log_dir=log_dir / "l1")
    probe = _time_limit_probe(exp_dir, settings, log_dir / "time-limit")
    after = _snapshot(exp_dir, log_dir)
    written = sorted(path for path, stamp in after.items() if before.get(path) != stamp)
    evidence = _Evidence(exp_dir, settings, l1, probe, written)
    return HandoffReport(tuple(check(evidence) for check in _CHECKS), l1)


# --- the runs -------------------------------------------------------------------------------


def _snapshot(exp_dir: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``exp_dir`` (but .git and spml's own logs) -> (mtime_ns, size)."""
    files: dict[str, tuple[int, int]] = {}
    for root, dirs, names in os.walk(exp_dir):
        dirs[:] = [d for d in dirs if d != ".git" and os.path.join(root, d) != str(skip)]
        for name in names:
            path = Path(root, name)
            try:
                stat = path.lstat()
            except OSError:  # vanished while we walked
                continue
            files[path.relative_to(exp_dir).as_posix()] = (stat.st_mtime_ns, stat.st_size)
    return files


def _time_limit_probe(exp_dir: Path, settings: HandoffSettings, log_dir: Path) -> _Probe:
    """Train with a short SPML_TIME_LIMIT and a huge SPML_MAX_STEPS; it must exit 0 in time."""
    probe_s = min(settings.time_limit_s, PROBE_TIME_LIMIT_S)
    (log_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    values = {"max_steps": str(PROBE_MAX_STEPS), "time_limit": f"{probe_s:g}",
              "checkpoint_dir": str(log_dir / "checkpoints"),
              "metrics_file": str(log_dir / "metrics.jsonl"), "seed": "0"}
    names = {"max_steps": contract.ENV_MAX_STEPS, "time_limit": contract.ENV_TIME_LIMIT,
             "checkpoint_dir": contract.ENV_CHECKPOINT_DIR,
             "metrics_file": contract.ENV_METRICS_FILE, "seed": contract.ENV_SEED}
    env = {**supervisor_path(), **{names[key]: value for key, value in values.items()},
           "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1")}
    if settings.epoch_limit is not None:
        env[ENV_EPOCH_LIMIT] = str(settings.epoch_limit)
    command = _PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(1)]), settings.train_command)
    allowed = probe_s + settings.grace_s
    with FirstStepClock(log_dir / "train.stdout.log", log_dir / "train.stderr.log") as clock:
        result = run_command(command, cwd=exp_dir, log_dir=log_dir, name="train", env=env,
                             time_limit_s=allowed, kill_grace_s=_KILL_GRACE_S)
    return _Probe(result, probe_s, allowed, clock.first_step_s)


# --- git ------------------------------------------------------------------------------------


def _git(cwd: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """``git <args>`` in ``cwd`` with spml's hardening: (status, stdout, stderr)."""
    runner = git.Git(str(cwd))
    command = [runner.GIT_PYTHON_GIT_EXECUTABLE or "git", *config_args(HARDENING), *args]
    with tempfile.TemporaryFile() as feed:  # GitPython feeds stdin from a real file only
        feed.write(stdin or b"")
        feed.seek(0)
        status, out, err = runner.execute(command, istream=feed, with_extended_output=True,
                                          with_exceptions=False)
    return int(status or 0), str(out), str(err)


def _listed_files(exp_dir: Path) -> list[str]:
    """The experiment's files git sees (tracked or untracked, not ignored), relative."""
    status, out, err = _git(exp_dir, "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard", "--", ".")
    if status != 0:
        raise SpmlError(f"`git ls-files` failed in {exp_dir}: {err.strip()}")
    return sorted({path for path in out.split("\0") if path})


def _ignored_by(exp_dir: Path, paths: Sequence[str], *, no_index: bool) -> dict[str, str]:
    """Each of ``paths`` git ignores -> the rule (``source:line:pattern``) that does it.

    Without ``no_index`` a tracked file counts as not ignored: a loop commits its changes.
    """
    found: dict[str, str] = {}
    options = ["-z", "-v", "--stdin", *(["--no-index"] if no_index else [])]
    paths_in = "".join(f"{path}\0" for path in paths).encode()  # -z: any file name is safe
    status, out, err = _git(exp_dir, "check-ignore", *options, stdin=paths_in)
    if status not in (0, 1):  # 1: nothing ignored
        raise SpmlError(f"`git check-ignore` failed in {exp_dir}: {err.strip()}")
    fields = out.split("\0")
    for source, line, pattern, path in zip(*[iter(fields)] * 4, strict=False):
        if not pattern.startswith("!"):  # -v also names the negation that un-ignores
            found[path] = f"{source}:{line}:{pattern}"
    return found


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
    core = [p for p in _listed_files(ev.exp_dir) if p.endswith(".py") and not _is_test_code(p)]
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


def _is_test_code(path: str) -> bool:
    """Test or validation code: under tests/, test/ or validation/, or a test_*.py file."""
    *folders, name = path.split("/")
    return (bool(TEST_DIRS.intersection(folders)) or name.startswith(("test_", "validation"))
            or name.endswith("_test.py") or name == "conftest.py")


def _is_test_module(module: str) -> bool:
    first = module.split(".")[0]
    return first in {"tests", "validation"} or first.startswith("test_")


def _test_imports(exp_dir: Path, files: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``(file:line, module)`` for each import of test or validation code in ``files``."""
    for path in files:
        try:
            tree = ast.parse((exp_dir / path).read_bytes(), filename=path)
        except (OSError, SyntaxError, ValueError):  # L0 reports unparsable files
            continue
        for node in ast.walk(tree):
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
    return []


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
    if result.ok:
        return _passed("time_limit_honoured", f"exit 0 after {result.duration_s:.1f} s with "
                       f"{asked} (allowed {probe.allowed_s:g} s)")
    return _failed("time_limit_honoured", [(
        f"{result.describe()} with {asked} (allowed {probe.allowed_s:g} s); output tail: "
        f"{_tail(result)}",
        f"stop training once {contract.ENV_TIME_LIMIT} seconds have passed (or "
        f"{ENV_EPOCH_LIMIT} epochs), save, and exit 0")])


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
