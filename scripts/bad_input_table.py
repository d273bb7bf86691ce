"""Replay a careless new user's bad inputs across the spml CLI and print a markdown table.

Every input runs as a real subprocess (``python -m spml ...``, the same Python that runs this
script, 120 s limit each) against fixtures this script builds itself in a fresh temporary
directory, removed at the end: small git repositories (``git init``, a user name and e-mail, a
commit) holding tiny Auto Research, ml-iteration, watchdog and validation projects. The
environment is the caller's (Prefect's logging level and home included) plus ``COLUMNS=200``,
so that Rich does not wrap a message's first line at 80 columns.

The table has one row per input: ``#``, ``input`` (as a user would type it, temporary paths
shortened to ``EXP`` / ``REPO`` / ``DIR`` / ``TMP``; a shell comment says what is wrong),
``exit`` (the exit code) and ``first line`` (the first non-empty line of stderr, else of stdout,
trimmed). A few rows say whether the output holds a telling text (``[prints 'training
finished']``) or whether stdout is valid JSON. Rows whose output holds a Python traceback are
flagged ``TRACEBACK``; the last line counts rows and tracebacks. Most inputs are refused within
seconds; the ones that run a loop are baseline-only (``max_rounds: 0``; one has a single round)
with trainers that finish at once. A whole pass takes about six minutes on two cores.

Usage (repository root):
    .venv/bin/python scripts/bad_input_table.py [--out FILE] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 120.0
FIRST_LINE_CHARS = 150
TRACEBACK = "Traceback (most recent call last)"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROTOCOL = "autoresearch-protocol.md"
Edit = tuple[str, str]  # (old, new) text of the protocol

# Rich wraps at 80 columns when stdout is not a terminal; a wider "terminal" keeps the first
# line of a message whole. Everything else (Prefect's logging level included) stays default.
ENV = {**os.environ, "COLUMNS": "200"}

AR_PROTOCOL = """\
---
research_question: Which x maximises the toy score?
max_rounds: 0
target: null
train_command: python train.py
fixed: {files: [train.py, evaluate.py], time_limit: 30}
variable: {files: [params.yaml], range: "x"}
eval: {command: python evaluate.py, metric: score, direction: maximize}
researcher: {kind: command, command: "true", timeout: 20}
---
Toy background for the researcher.
"""

AR_TRAIN = """\
import json, os
os.makedirs("outputs", exist_ok=True)
with open("outputs/result.json", "w") as fh:
    json.dump({"score": 0.5}, fh)
print("step=1 loss=0.5")
"""

AR_EVAL = """\
import json
print(f"score={json.load(open('outputs/result.json'))['score']}")
"""

STDERR_EVAL = """\
import sys
print("score=0.5", file=sys.stderr)
"""

# Writes a marker (an absolute path, since it runs in the loop's worktree), then trains "long".
SLOW_TRAIN = """\
import pathlib, time
pathlib.Path({marker!r}).write_text("started")
time.sleep(100)
"""

IT_PROTOCOL = """\
---
goal: Reach acc >= 0.9 with loss on every step line.
max_rounds: 0
train_command: python train.py
fixed: {{files: [evaluate.py], time_limit: 30}}
focused_files: [train.py]
eval: {{command: python evaluate.py}}
researcher: {{kind: command, command: "true", timeout: 20}}
review_criteria:
  metrics: [{{name: acc, op: "{op}", threshold: 0.9}}]
  observability: {{required_keys: [loss]}}
---
Toy background.
"""

IT_TRAIN = """\
import json, os
for step in range(1, 4):
    print(f"step={step} loss={1 / step:.3f}", flush=True)
os.makedirs("outputs", exist_ok=True)
json.dump({"acc": 0.8}, open("outputs/state.json", "w"))
"""

IT_EVAL = """\
import json
print(f"acc: {json.load(open('outputs/state.json'))['acc']}")
"""

WD_TRAIN = """\
import os, time
os.makedirs("ckpt", exist_ok=True)
with open("train.log", "a") as log:
    for step in range(1, 4):
        log.write(f"step={step} loss={1 / step:.3f}\\n")
        log.flush()
        time.sleep(0.2)
open("ckpt/step_3.pt", "wb").write(b"weights")
"""

WD_SETTINGS = """\
train_command: {command}
checkpoint_glob: ckpt/*.pt
log_file: train.log
poll_interval: 0.5
restart_delay: 0
checkpoint_stable: 0.5
"""


@dataclass
class Outcome:
    """What one command did."""

    code: int | str
    stdout: str
    stderr: str


@dataclass
class Case:
    """One bad input: ``spml`` arguments, a comment for the reader, optional hooks."""

    args: list[str]
    note: str = ""
    before: Callable[[], None] | None = None
    custom: Callable[[], Outcome] | None = None  # replaces running ``spml args``
    shown: str | None = None  # the input column, when it is not ``spml args``
    json_out: bool = False  # stdout must be one JSON document: say whether it is
    mark: str | None = None  # text the row says the output holds, or lacks


@dataclass
class Row:
    """One line of the table."""

    number: int
    shown: str
    code: int | str
    first_line: str
    traceback: bool
    seconds: float


def git(repo: Path, *args: str) -> None:
    """Run git in ``repo`` (quietly; a failure is a bug in this script)."""
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)


def spml(args: list[str], cwd: Path, timeout: float = TIMEOUT_S) -> Outcome:
    """Run ``python -m spml args`` in ``cwd``; on a timeout kill its process group."""
    proc = subprocess.Popen([sys.executable, "-m", "spml", *args], cwd=cwd, env=ENV,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return Outcome(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Outcome(f"timeout {timeout:.0f}s", out, err)


class Lab:
    """Builds fixtures under ``root`` and shortens their paths for display."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def shorten(self, text: str) -> str:
        """Replace fixture paths by ``EXP`` / ``REPO`` / ``DIR`` / ``TMP``."""
        base, name, end = re.escape(str(self.root)), r"/[^/\s'\"`]+", r"(?![\w-]|\.\w)"
        text = re.sub(base + name + "/repo/exp" + end, "EXP", text)
        text = re.sub(base + name + "/repo" + end, "REPO", text)
        text = re.sub(base + name + end, "DIR", text)
        return text.replace(str(self.root), "TMP")

    def folder(self, name: str, files: dict[str, str]) -> Path:
        """A plain (non-git) folder ``root/name`` holding ``files``."""
        path = self.root / name
        path.mkdir(parents=True)
        for rel, text in files.items():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_text(text)
        return path

    def repo(self, name: str, files: dict[str, str], *, git_init: bool = True,
             commit: bool = True) -> Path:
        """``root/name/repo`` with ``files`` (relative paths); returns its ``exp`` folder."""
        repo = self.folder(f"{name}/repo", {"README.md": "user project\n", **files})
        if git_init:
            git(repo, "init", "-q", "-b", "main")
            git(repo, "config", "user.name", "Careless User")
            git(repo, "config", "user.email", "careless@example.invalid")
            git(repo, "config", "commit.gpgsign", "false")
        if git_init and commit:
            git(repo, "add", "-A")
            git(repo, "commit", "-qm", "experiment")
        return repo / "exp"

    def autoresearch(self, name: str, *edits: Edit, train: str = AR_TRAIN,
                     evaluate: str = AR_EVAL, **repo_kw: bool) -> Path:
        """A toy Auto Research experiment; ``edits`` are (old, new) protocol text swaps."""
        protocol = AR_PROTOCOL
        for old, new in edits:
            if old not in protocol:
                raise ValueError(f"{name}: {old!r} is not in the protocol")
            protocol = protocol.replace(old, new, 1)
        files = {"exp/train.py": train, "exp/evaluate.py": evaluate,
                 "exp/params.yaml": "x: 1.0\n", "exp/.gitignore": "outputs/\n__pycache__/\n",
                 f"exp/{PROTOCOL}": protocol}
        return self.repo(name, files, **repo_kw)


def run_cmd(exp: Path, *extra: str) -> list[str]:
    """``autoresearch run EXP`` plus extra arguments."""
    return ["autoresearch", "run", str(exp), *extra]


def protocol_cases(lab: Lab) -> list[Case]:
    """A malformed protocol: refused before anything runs (exit 2)."""
    bad: list[tuple[str, *tuple[Edit, ...]]] = [
        ("YAML syntax error", ("max_rounds: 0", "max_rounds: [0")),
        ("typo: max_round", ("max_rounds: 0", "max_round: 0")),
        ("max_rounds: ten", ("max_rounds: 0", "max_rounds: ten")),
        ("max_rounds: -1", ("max_rounds: 0", "max_rounds: -1")),
        ("direction: up", ("direction: maximize", "direction: up")),
        ("no eval.metric", ("metric: score, ", "")),
        ('time_limit: "1e400"', ("time_limit: 30", 'time_limit: "1e400"')),
        ('time_limit: "0"', ("time_limit: 30", 'time_limit: "0"')),
        ('time_limit: "forever"', ("time_limit: 30", 'time_limit: "forever"')),
        ("time_limit: 5 minutes", ("time_limit: 30", "time_limit: 5 minutes")),
        ("params.yaml both fixed and variable",
         ("[train.py, evaluate.py]", "[train.py, evaluate.py, params.yaml]")),
        ("variable.files glob matches nothing (and 1 round)",
         ("[params.yaml]", '["configs/*.yaml"]'), ("max_rounds: 0", "max_rounds: 1")),
        ("fixed.files names a missing model.py",
         ("[train.py, evaluate.py]", "[train.py, evaluate.py, model.py]")),
        ("metric with a space: val score", ("metric: score", 'metric: "val score"')),
        ("researcher kind: claude",
         ('{kind: command, command: "true", timeout: 20}', "{kind: claude}")),
        ("unknown placeholder {prompt}", ('command: "true"', 'command: "my-agent {prompt}"')),
        ("acceptance.repeats: 0", ("researcher:", "acceptance: {repeats: 0}\nresearcher:")),
        ('target: "high"', ("target: null", 'target: "high"')),
    ]
    missing = lab.autoresearch("p-missing")
    (missing / PROTOCOL).unlink()
    git(missing.parent, "commit", "-qam", "no protocol")
    empty = lab.autoresearch("p-empty")
    (empty / PROTOCOL).write_text("---\n---\nJust prose, no fields.\n")
    git(empty.parent, "commit", "-qam", "empty front matter")
    cases = [Case(run_cmd(missing), "# no autoresearch-protocol.md"),
             Case(run_cmd(empty), "# empty front matter")]
    for index, (note, *edits) in enumerate(bad):
        cases.append(Case(run_cmd(lab.autoresearch(f"p-{index:02d}", *edits)), f"# {note}"))
    return cases


def metric_cases(lab: Lab) -> list[Case]:
    """Commands that run but do not measure: the baseline fails (exit 1)."""
    cases = [
        Case(run_cmd(lab.autoresearch("m-trainn", ("python train.py", "python trainn.py")))),
        Case(run_cmd(lab.autoresearch(
            "m-nobin", ("python train.py", "nosuchbinary --epochs 1")))),
    ]
    cases[0].note = "# train_command: python trainn.py (typo)"
    cases[1].note = "# train_command: nosuchbinary --epochs 1"
    printed = ["accuracy is great", "val_score=0.5", "score=0x10", "score=1_000",
               "score=1.2.3", "score=5e", "score: 1,000", '{"score": "0.5"}', "score=nan"]
    for index, line in enumerate(printed):
        exp = lab.autoresearch(f"m-{index}", evaluate=f"print({line!r})\n")
        what = "no metric" if index == 0 else line
        cases.append(Case(run_cmd(exp), f"# eval prints: {what}"))
    to_stderr = lab.autoresearch("m-stderr", evaluate=STDERR_EVAL)
    cases.append(Case(run_cmd(to_stderr), "# eval prints score=0.5 to stderr"))
    return cases


def git_cases(lab: Lab) -> list[Case]:
    """Git state a new user gets wrong."""
    uncommitted = lab.autoresearch("g-untracked", commit=False)
    git(uncommitted.parent, "add", "README.md", "exp/train.py", "exp/evaluate.py",
        "exp/params.yaml", "exp/.gitignore")
    git(uncommitted.parent, "commit", "-qm", "code only")
    no_git = lab.autoresearch("g-nogit", git_init=False)
    dirty = lab.autoresearch("g-dirty")
    with (dirty / "train.py").open("a") as fh:
        fh.write("# tweak the learning rate\n")
    dirty2 = lab.autoresearch("g-dirty2")
    with (dirty2 / "train.py").open("a") as fh:
        fh.write("# tweak the learning rate\n")
    return [
        Case(run_cmd(uncommitted), "# protocol never committed"),
        Case(run_cmd(no_git), "# not a git repository"),
        Case(run_cmd(dirty), "# uncommitted edit of fixed train.py"),
        Case(run_cmd(dirty2, "--allow-dirty"), "# same edit, --allow-dirty"),
    ]


def path_cases(lab: Lab) -> list[Case]:
    """The wrong path, the wrong flag value, controls of an experiment that is not there."""
    good = lab.autoresearch("a-good")
    empty = lab.folder("a-empty", {})
    notes = lab.folder("a-files", {"notes.txt": "my notes\n"})
    busy = lab.folder("a-busy", {"README.md": "my own project\n", "train.py": "print(1)\n"})
    return [
        Case(run_cmd(good / PROTOCOL), "# the protocol file, not its folder"),
        Case(run_cmd(good.parent / "expt"), "# typo: no such folder"),
        Case(run_cmd(good, "--max-rounds", "-1")),
        Case(["autoresearch", "note", str(good), ""], "# empty note"),
        Case(["autoresearch", "note", str(empty), "try a cosine schedule"],
             "# empty folder, no experiment"),
        Case(["autoresearch", "stop", str(empty)], "# empty folder, no experiment"),
        Case(["autoresearch", "status", str(empty)], "# empty folder, no experiment"),
        Case(["autoresearch", "create", str(empty)], "# no flags, stdin is not a terminal"),
        Case(["demo", str(notes / "notes.txt")], "# a file"),
        Case(["demo", str(busy)], "# a non-empty folder that is not a demo"),
        Case(["schema", "nosuchkind"]),
    ]


def ledger_cases(lab: Lab) -> list[Case]:
    """A hand-broken ledger after a baseline, and a second run beside a live one."""
    broken = lab.autoresearch("l-broken", ("max_rounds: 0", "max_rounds: 1"))

    def break_ledger() -> None:
        done = spml(run_cmd(broken, "--max-rounds", "0"), lab.root)
        ledger = broken / "experiences.md"
        if done.code != 0 or not ledger.is_file():
            raise RuntimeError(f"baseline of l-broken failed: {done.stdout}{done.stderr}")
        text = ledger.read_text()
        table = text.index("| Round")
        ledger.write_text("lorem ipsum\nbest = ???\n\n" + text[table:])

    marker = lab.root / "l-busy-started"
    busy = lab.autoresearch("l-busy", ("time_limit: 30", "time_limit: 300"),
                            train=SLOW_TRAIN.format(marker=str(marker)))
    first = Background(run_cmd(busy), lab.root, marker)
    return [
        Case(run_cmd(broken), "# experiences.md header hand-edited to garbage",
             before=break_ledger),
        Case(run_cmd(busy), "# while another run of EXP trains", before=first.start),
        Case([], custom=first.stop,
             shown=f"kill -TERM <first run>  # {lab.shorten(shlex.join(run_cmd(busy)))}"),
    ]


class Background:
    """A run started in the background, stopped with SIGTERM as a user would."""

    def __init__(self, args: list[str], cwd: Path, marker: Path) -> None:
        self.args, self.cwd, self.marker = args, cwd, marker
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start the run and wait until its trainer has started."""
        self.proc = subprocess.Popen([sys.executable, "-m", "spml", *self.args], cwd=self.cwd,
                                     env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + TIMEOUT_S
        while not self.marker.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the background run did not start training")
            time.sleep(0.2)

    def stop(self) -> Outcome:
        """SIGTERM the run, wait for it, and return what it did."""
        if self.proc is None:
            return Outcome("not started", "", "")
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=60)
            return Outcome(self.proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            return Outcome("no exit 60s after SIGTERM (killed)", out, err)


def iteration_cases(lab: Lab) -> list[Case]:
    """ml-iteration: the wrong protocol, a malformed criterion."""
    autoresearch_only = lab.autoresearch("i-wrong")
    files = {"exp/train.py": IT_TRAIN, "exp/evaluate.py": IT_EVAL,
             "exp/.gitignore": "outputs/\n__pycache__/\n",
             "exp/iteration-protocol.md": IT_PROTOCOL.format(op="=>")}
    bad_op = lab.repo("i-badop", files)
    return [
        Case(["iteration", "run", str(autoresearch_only)],
             "# holds an autoresearch protocol only"),
        Case(["iteration", "run", str(bad_op)], '# criterion op: "=>"'),
        Case(["iteration", "override", str(bad_op), "--round", "3", "--verdict", "keep"],
             "# no such verdict, no round 3"),
    ]


def watchdog_cases(lab: Lab) -> list[Case]:
    """Watchdog: bad flags, no settings, a command that cannot start, a log that never comes."""
    settings = WD_SETTINGS.format(command="python train.py")
    good = lab.folder("w-good/exp", {"train.py": WD_TRAIN, "watchdog.yaml": settings})
    empty = lab.folder("w-empty/exp", {"train.py": WD_TRAIN})
    missing = lab.folder("w-127/exp", {
        "watchdog.yaml": WD_SETTINGS.format(command="nosuchbinary --epochs 1")})
    silent = lab.folder("w-nolog/exp", {"watchdog.yaml": WD_SETTINGS.format(command="sleep 3")})
    hung = lab.folder("w-hang/exp", {"watchdog.yaml": WD_SETTINGS.format(command="sleep 3")})
    typo = lab.folder("w-typo/exp", {"train.py": WD_TRAIN, "watchdog.yaml": settings
                                     + "hang_timout: 60\n"})
    return [
        Case(["watchdog", "run", str(lab.root / "w-none/exp")], "# no such folder"),
        Case(["watchdog", "run", str(good), "--hang-timeout", "inf"]),
        Case(["watchdog", "run", str(good), "--hang-timeout", "-1"]),
        Case(["watchdog", "run", str(good), "--startup-grace", "ten"]),
        Case(["watchdog", "run", str(empty)], "# no watchdog.yaml, no flags"),
        Case(["watchdog", "status", "/nonexistent"]),
        Case(["watchdog", "run", str(missing)], "# train_command: nosuchbinary (exit 127)",
             mark="command not found"),
        Case(["watchdog", "run", str(typo)], "# watchdog.yaml: hang_timout (typo)"),
        Case(["watchdog", "run", str(silent), "--startup-grace", "1"],
             "# sleep 3 exits 0, train.log never written", mark="training finished"),
        Case(["watchdog", "run", str(hung), "--startup-grace", "1", "--hang-timeout", "2"],
             "# sleep 3, no train.log, hang timeout 2 s"),
    ]


def validate_cases(lab: Lab) -> list[Case]:
    """Validation Pyramid: paths that are not there or loop, bad flag values."""
    project = lab.folder("v-proj", {"train.py": "print('train')\n"})
    loop = lab.folder("v-loop", {"train.py": "print('train')\n"})
    (loop / "sub").mkdir()
    (loop / "sub" / "back").symlink_to("..")
    selfloop = lab.root / "v-selfloop"
    selfloop.symlink_to(selfloop.name)
    dangling = lab.folder("v-dangling", {"train.py": "print('train')\n"})
    (dangling / "old_train.py").symlink_to("removed.py")
    nosuch = str(lab.root / "v-none")
    return [
        Case(["validate", "static", nosuch], "# no such path"),
        Case(["validate", "static", str(loop)], "# sub/back -> .. (a symlink loop)"),
        Case(["validate", "static", str(selfloop)], "# a symlink to itself"),
        Case(["validate", "static", str(dangling)], "# old_train.py -> removed.py (dangling)"),
        Case(["validate", "static", "--format", "json", nosuch], "# JSON expected",
             json_out=True),
        Case(["validate", "static", "--profile", "nosuch", str(project)]),
        Case(["validate", "explain", "L0-99"], "# no such check"),
        Case(["validate", "runtime", str(project), "--train-command", "python train.py",
              "--max-steps", "-5"]),
        Case(["validate", "runtime", str(project)], "# no pyproject.toml, no flags"),
    ]


def toolkit_cases() -> list[Case]:
    """`toolkit mfu` with missing, negative and garbage numbers."""
    gpu = ["--gpu", "H100"]
    return [
        Case(["toolkit", "mfu"], "# no flags"),
        Case(["toolkit", "mfu", "--flops-per-step", "-1e12", "--step-time", "0.5", *gpu]),
        Case(["toolkit", "mfu", "--flops-per-step", "1e12", "--step-time", "0", *gpu]),
        Case(["toolkit", "mfu", "--flops-per-step", "1e12", "--step-time", "-0.5", *gpu]),
        Case(["toolkit", "mfu", "--flops-per-step", "abc", "--step-time", "0.5", *gpu]),
        Case(["toolkit", "mfu", "--flops-per-step", "1e12", "--step-time", "0.5", *gpu,
              "--n-gpus", "0"]),
        Case(["toolkit", "mfu", "--flops-per-step", "1e12", "--step-time", "0.5", *gpu,
              "--dtype", "fp7"]),
        Case(["toolkit", "mfu", "--flops-per-step", "1e12", "--step-time", "nan", *gpu]),
    ]


def cli_cases(lab: Lab) -> list[Case]:
    """Commands and options that do not exist, no arguments at all."""
    good = lab.autoresearch("c-good")
    return [
        Case(["trian"], "# typo of a command"),
        Case(["run", str(good)], "# forgot the autoresearch group"),
        Case(run_cmd(good, "--max-round", "3"), "# typo of an option"),
        Case(["autoresearch", "run"], "# no experiment folder"),
        Case([], "# no arguments"),
    ]


def first_line(outcome: Outcome, json_out: bool = False) -> str:
    """First non-empty line of stderr, else of stdout, without colour codes.

    With ``json_out``: whether stdout is one JSON document, and that document on one line.
    """
    if json_out:
        try:
            return "valid JSON: " + json.dumps(json.loads(outcome.stdout))
        except ValueError:
            return "NOT JSON: " + (outcome.stdout or outcome.stderr).strip()
    for stream in (outcome.stderr, outcome.stdout):
        for line in ANSI.sub("", stream).splitlines():
            if line.strip():
                return line.strip()
    return "(no output)"


def run_case(lab: Lab, number: int, case: Case) -> Row:
    """Run one case (its hook first) and summarise it as a row."""
    shown = case.shown or lab.shorten(shlex.join(["spml", *case.args]))
    if case.note and case.shown is None:
        shown = f"{shown}  {case.note}"
    start = time.monotonic()
    try:
        if case.before is not None:
            case.before()
        outcome = case.custom() if case.custom is not None else spml(case.args, lab.root)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # this script's setup
        outcome = Outcome("setup failed", "", f"(setup failed) {exc}")
    line = lab.shorten(first_line(outcome, case.json_out))
    if len(line) > FIRST_LINE_CHARS:
        line = line[:FIRST_LINE_CHARS - 1] + "…"
    traceback = TRACEBACK in outcome.stdout + outcome.stderr
    if case.mark is not None:
        said = case.mark in outcome.stdout + outcome.stderr
        line = f"[{'prints' if said else 'never prints'} {case.mark!r}] {line}"
    return Row(number, shown, outcome.code, line, traceback, time.monotonic() - start)


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[Row], seconds: float) -> str:
    """The markdown table and its summary line."""
    lines = ["| # | input | exit | first line |", "|---|---|---|---|"]
    for row in rows:
        flag = "**TRACEBACK** " if row.traceback else ""
        tick = "``" if "`" in row.shown else "`"
        lines.append(f"| {row.number} | {tick}{cell(row.shown)}{tick} | {row.code} | "
                     f"{flag}{cell(row.first_line)} |")
    tracebacks = sum(row.traceback for row in rows)
    lines.append("")
    lines.append(f"{len(rows)} rows, {tracebacks} with a Python traceback "
                 f"({seconds:.0f} s in all).")
    return "\n".join(lines) + "\n"


def all_cases(lab: Lab) -> list[Case]:
    """Every case, in table order (building the fixtures on the way)."""
    return [*protocol_cases(lab), *metric_cases(lab), *git_cases(lab), *path_cases(lab),
            *ledger_cases(lab), *iteration_cases(lab), *watchdog_cases(lab),
            *validate_cases(lab), *toolkit_cases(), *cli_cases(lab)]


def main() -> int:
    """Build the fixtures, run every case, print (and optionally save) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary fixtures")
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="spml-bad-input-")).resolve()
    start = time.monotonic()
    try:
        lab = Lab(root)
        rows = []
        for number, case in enumerate(all_cases(lab), start=1):
            rows.append(run_case(lab, number, case))
            sys.stderr.write(f"[{number}] {rows[-1].code} {rows[-1].seconds:.1f}s "
                             f"{rows[-1].shown}\n")
    finally:
        if options.keep:
            sys.stderr.write(f"fixtures kept in {root}\n")
        else:
            shutil.rmtree(root, ignore_errors=True)
    text = table(rows, time.monotonic() - start)
    sys.stdout.write(text)
    if options.out is not None:
        options.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
