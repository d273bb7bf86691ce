"""L1 in command mode: run the project's own training and eval commands under the environment
contract (``contract.py``), watch them, and judge the six stages from what they leave behind.

Training runs in the background with ``SPML_*`` set (and ``{placeholders}`` filled); while it
runs, its stdout/stderr and ``$SPML_METRICS_FILE`` are tailed and it is killed at once when

* a line shows a limited total larger than ``SPML_MAX_STEPS`` (``max_steps=100000``),
* nothing showed the limited total within ``limit_check_s`` and it is still running,
* a step record names a step past ``SPML_MAX_STEPS``, or
* the total timeout (all stages together) runs out.

Step records come from ``$SPML_METRICS_FILE`` (JSON lines, e.g. :class:`spml.toolkit.Monitor`)
when it holds any, else from ``key=value`` lines of the output (`metrics.log.parse_log_line`).
The health judges (`health.py`) give the Training verdict; without logged grad norms the
gradient criterion passes with the judge's "not recorded" evidence (nothing to judge).

What command mode cannot observe, it derives and says so: Data Loading and Model Init PASS when
a step was logged (both happen inside the training command). The checkpoint is loaded in a
child process (``checkpoint_probe``) with ``weights_only=True``; reloading it into a fresh model
needs the entry point. Inference runs the eval command twice and requires equal metrics
(``allclose``); Evaluation requires a finite metric. Python children get ``PYTHONUNBUFFERED=1``
(unless set) so a printed limit is visible at once, not when a 4 KiB buffer fills.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spml.errors import MetricNotFound, ProtocolError
from spml.toolkit.metrics import log as lm
from spml.toolkit.metrics.output import parse_metric
from spml.toolkit.process.result import CommandResult
from spml.toolkit.process.runner import RunningCommand, run_command, start_command, supervisor_path
from spml.toolkit.runtime import contract, health
from spml.toolkit.runtime.checkpoint_probe import checkpoint_stage, snapshot
from spml.toolkit.runtime.report import L1Report, StageResult
from spml.toolkit.runtime.thresholds import Thresholds

__all__ = ["CommandSettings", "run_commands"]

_POLL_S = 0.2
MAX_OUTPUT_BYTES = 256 * 2**20  # per stream: far above any sane L1 log
_KILL_GRACE_S = 2.0
_TAIL_LINES = 8
_CLIP = 200
_LIMIT = re.compile(contract.LIMIT_LINE_PATTERN)
_PLACEHOLDER = contract.PLACEHOLDER
_STEP_NAMES = ("step", "global_step", "iter", "iteration")
_DERIVED = ("derived: command mode runs this stage inside the training command and cannot "
            "observe it separately")


@dataclass(frozen=True)
class CommandSettings:
    """How L1 runs a project's commands (``[tool.spml.validate.runtime]`` in command mode).

    Attributes:
        train_command: Shell command; reads ``SPML_*`` or takes ``{max_steps}``,
            ``{time_limit}``, ``{checkpoint_dir}``, ``{metrics_file}``, ``{seed}``.
        eval_command: Optional shell command printing ``metric``; ``{checkpoint}`` is the
            newest checkpoint the training run wrote.
        metric: The name the eval command prints (``val_mse=0.12``).
        checkpoint_glob: Where the checkpoint appears: ``{checkpoint_dir}/*`` (any file in
            ``SPML_CHECKPOINT_DIR``) or a glob relative to the project (``outputs/*.pt``).
        max_steps: ``SPML_MAX_STEPS``.
        time_limit_s: ``SPML_TIME_LIMIT``.
        limit_check_s: The run must show its limited total (or have finished) by then.
        total_timeout_s: All stages together.
        seed: ``SPML_SEED``.
    """

    train_command: str
    eval_command: str | None = None
    metric: str | None = None
    checkpoint_glob: str = "{checkpoint_dir}/*"
    max_steps: int = 50
    time_limit_s: float = 300.0
    limit_check_s: float = 30.0
    total_timeout_s: float = 900.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.train_command.strip():
            raise ProtocolError("train_command must be a non-empty shell command")
        if self.eval_command and not self.metric:
            raise ProtocolError("eval_command needs metric (the name the command prints)")
        if self.max_steps < 1 or min(self.time_limit_s, self.limit_check_s,
                                     self.total_timeout_s) <= 0:
            raise ProtocolError("max_steps must be >= 1 and every duration > 0")


@dataclass
class _Run:
    """Everything one L1 run shares between its stages."""

    settings: CommandSettings
    project: Path
    log_dir: Path
    thresholds: Thresholds
    deadline: float
    values: dict[str, str]  # the placeholders' values, unquoted
    env: dict[str, str]

    def fill(self, command: str, checkpoint: Path | None = None) -> str:
        """``command`` with its placeholders filled (shell-quoted where a value needs it)."""
        values = {**self.values, "checkpoint": str(checkpoint or "")}
        return contract.fill_placeholders(command, values)

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 1.0)


def run_commands(settings: CommandSettings, project: Path, *, thresholds: Thresholds,
                 log_dir: Path) -> L1Report:
    """Run L1 on ``project`` through its commands; logs and the checkpoint go to ``log_dir``.

    Args:
        settings: The commands and the limits.
        project: Working directory of the commands.
        thresholds: SPML's judgement thresholds (with the project's overrides).
        log_dir: Gets ``train.stdout.log`` & co., ``checkpoints/`` and ``metrics.jsonl``.

    Returns:
        The six-stage report (a failing command is a FAIL stage, never an exception).

    Raises:
        CommandError: A command could not be started at all (bad ``project``).
    """
    started = time.monotonic()
    run = _prepare(settings, project, log_dir, thresholds, started)
    before = snapshot(_checkpoint_pattern(run))
    train = _train(run, started)
    stages = [*_derived_stages(train), _training_stage(run, train)]
    if not train.completed:
        why = "not reached: the training command did not complete (see Training)"
        stages += [StageResult.skipped(name, why)
                   for name in ("Checkpoint", "Inference", "Evaluation")]
    else:
        checkpoint, path = checkpoint_stage(_checkpoint_pattern(run), before,
                                            log_dir=run.log_dir, time_limit_s=run.remaining())
        stages += [checkpoint, *_eval_stages(run, path)]
    notes = ["command mode: Data Loading and Model Init are derived from the training log; the "
             "checkpoint is loaded, not reloaded into a fresh model (that needs an entry point)",
             f"logs: {log_dir}"]
    return L1Report(settings.train_command, "command", stages, time.monotonic() - started,
                    notes)


def _prepare(settings: CommandSettings, project: Path, log_dir: Path, thresholds: Thresholds,
             started: float) -> _Run:
    log_dir = log_dir.resolve()
    checkpoint_dir, metrics_file = log_dir / "checkpoints", log_dir / "metrics.jsonl"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    metrics_file.unlink(missing_ok=True)
    values = {"max_steps": str(settings.max_steps), "time_limit": f"{settings.time_limit_s:g}",
              "checkpoint_dir": str(checkpoint_dir), "metrics_file": str(metrics_file),
              "seed": str(settings.seed)}
    env = {**supervisor_path(), **contract.contract_env(values)}
    return _Run(settings, project.resolve(), log_dir, thresholds,
                started + settings.total_timeout_s, values, env)


# --- training -------------------------------------------------------------------------------


@dataclass
class _Train:
    """What the training run left: its result, why spml killed it (if it did), its records."""

    result: CommandResult
    kill_reason: str | None
    kill_evidence: list[str]
    records: list[dict[str, Any]]
    source: str
    first_step_s: float | None
    limit_note: str

    @property
    def completed(self) -> bool:
        return self.kill_reason is None and self.result.ok


@dataclass
class _Watch:
    """Tails the training output and metrics file; decides when to kill."""

    running: RunningCommand
    metrics_file: Path
    max_steps: int
    started: float
    followers: list[lm.LogFollower] = field(default_factory=list)
    metrics: lm.LogFollower | None = None
    log_records: list[dict[str, Any]] = field(default_factory=list)
    file_records: list[dict[str, Any]] = field(default_factory=list)
    limit: int | None = None
    limit_note: str = ""
    first_step_s: float | None = None
    last_line: str = ""
    last_output_s: float = 0.0

    def __post_init__(self) -> None:
        self.followers = [lm.LogFollower(self.running.stdout_path),
                          lm.LogFollower(self.running.stderr_path)]
        self.metrics = lm.LogFollower(self.metrics_file)

    def poll(self, now: float) -> tuple[str, list[str]] | None:
        """Read all that is new; return ``(reason, evidence)`` when the run must be killed."""
        elapsed = now - self.started
        flood = self._flood()  # before reading: parsing a flood would take longer than it
        if flood is not None:
            return flood
        verdicts = [self._line(line, elapsed, follower.path.name)
                    for follower in self.followers for line in follower.poll()]
        assert self.metrics is not None
        for line in self.metrics.poll():
            record = _json_record(line)
            if record is not None:
                self._add(self.file_records, record, elapsed)
        return next((v for v in verdicts if v is not None), None) or self._overrun()

    def _flood(self) -> tuple[str, list[str]] | None:
        # A run printing without pause would fill the disk before the total timeout.
        for path in (self.running.stdout_path, self.running.stderr_path):
            size = path.stat().st_size if path.exists() else 0
            if size > MAX_OUTPUT_BYTES:
                return (f"output flood: {path.name} passed {MAX_OUTPUT_BYTES // 2**20} MiB",
                        ["print every N steps, not on every iteration; the run was killed"])
        return None

    def _line(self, line: str, elapsed: float, where: str) -> tuple[str, list[str]] | None:
        if line.strip():
            self.last_line, self.last_output_s = _clip(line.strip()), elapsed
        shown = _LIMIT.search(line)
        if shown is not None:
            total = int(shown.group(1))
            if total > self.max_steps:
                return (f"run is not limited: output shows total {total} > "
                        f"{contract.ENV_MAX_STEPS}={self.max_steps}",
                        [f"{where} at {elapsed:.1f} s: {_clip(line.strip())!r}"])
            if self.limit is None:
                self.limit = total
                self.limit_note = f"limited total {total} shown at {elapsed:.1f} s"
        record = _log_record(line)
        if record is not None:
            self._add(self.log_records, record, elapsed)
        return None

    def _add(self, records: list[dict[str, Any]], record: dict[str, Any], elapsed: float
             ) -> None:
        records.append(record)
        if self.first_step_s is None:
            self.first_step_s = elapsed

    def _overrun(self) -> tuple[str, list[str]] | None:
        for records, where in ((self.file_records, "metrics file"), (self.log_records, "log")):
            past = [r["step"] for r in records
                    if isinstance(r.get("step"), int | float) and r["step"] > self.max_steps]
            if past:
                return (f"ran past {contract.ENV_MAX_STEPS}: step {past[0]:g} > "
                        f"{self.max_steps}", [f"step records from the {where}"])
        return None

    def records(self) -> tuple[list[dict[str, Any]], str]:
        if self.file_records:
            return self.file_records, f"{len(self.file_records)} records from SPML_METRICS_FILE"
        return self.log_records, (f"{len(self.log_records)} records from key=value lines of "
                                  "the training output")


def _train(run: _Run, started: float) -> _Train:
    settings = run.settings
    running = start_command(run.fill(settings.train_command), cwd=run.project,
                            log_dir=run.log_dir, name="train", env=run.env)
    watch = _Watch(running, run.log_dir / "metrics.jsonl", settings.max_steps, started)
    verdict: tuple[str, list[str]] | None = None
    try:
        verdict = _watch_training(running, watch, run)
        if verdict is not None:
            running.stop(grace_s=_KILL_GRACE_S)
    finally:
        result = running.finish()
    watch.poll(time.monotonic())  # what it wrote before the kill still counts as evidence
    records, source = watch.records()
    limit_note = watch.limit_note or ("" if verdict else (
        f"no limited total printed; finished in {result.duration_s:.1f} s (< limit check "
        f"{settings.limit_check_s:g} s)"))
    return _Train(result, verdict[0] if verdict else None, verdict[1] if verdict else [],
                  records, source, watch.first_step_s, limit_note)


def _watch_training(running: RunningCommand, watch: _Watch, run: _Run
                    ) -> tuple[str, list[str]] | None:
    settings = run.settings
    while True:
        exited = running.exited(timeout_s=_POLL_S)
        now = time.monotonic()
        verdict = watch.poll(now)
        if verdict is not None or exited:
            return verdict
        elapsed = now - watch.started
        silent = (f"last output at {watch.last_output_s:.1f} s: {watch.last_line!r}"
                  if watch.last_line else "no output at all")
        if watch.limit is None and elapsed > settings.limit_check_s:
            return (f"no limited total in the first {settings.limit_check_s:g} s (print "
                    f"max_steps=N; see the {contract.ENV_MAX_STEPS} contract)", [silent])
        if now > run.deadline:
            records, _ = watch.records()
            return (f"timed out: still running after {elapsed:.0f} s (total timeout "
                    f"{settings.total_timeout_s:g} s, {contract.ENV_TIME_LIMIT}="
                    f"{settings.time_limit_s:g})",
                    [silent, f"last step logged: {_steps_of(records)}" if records
                     else "no step logged"])


def _training_stage(run: _Run, train: _Train) -> StageResult:
    evidence = [line for line in (train.limit_note, train.source) if line]
    if train.kill_reason is not None:
        return StageResult.failed("Training", train.kill_reason, *train.kill_evidence,
                                  *evidence, f"killed by spml: {train.result.describe()}")
    if not train.result.ok:
        return StageResult.failed("Training", f"training command failed: "
                                  f"{train.result.describe()}", *_tail(train.result), *evidence)
    judgements = _judge(train.records, run.thresholds)
    for label, judgement in judgements:
        evidence.append(f"{label}: {judgement.summary}")
        evidence.extend(f"   {line}" for line in judgement.evidence)
    steps = _steps_of(train.records)
    metrics = {"steps": steps, "duration_s": round(train.result.duration_s, 3),
               "first_step_s": train.first_step_s}
    failed = [j for _, j in judgements if not j.ok]
    if failed:
        return StageResult("Training", "FAIL", failed[0].summary, evidence, metrics)
    return StageResult("Training", "PASS",
                       f"{steps} steps, {_duration(train.result.duration_s)}", evidence, metrics)


def _judge(records: list[dict[str, Any]], thresholds: Thresholds
           ) -> list[tuple[str, health.Judgement]]:
    drifts = [r["param_drift"] for r in records
              if isinstance(r.get("param_drift"), int | float)]
    return [("loss", health.judge_loss_trend(records, thresholds)),
            ("gradients", health.judge_gradients(records, thresholds)),
            ("learning rate", health.judge_learning_rate(records)),
            ("drift", health.judge_drift(drifts[-1] if drifts else None, thresholds)),
            ("throughput", health.judge_throughput(records, thresholds))]


def _derived_stages(train: _Train) -> list[StageResult]:
    if train.records and train.first_step_s is not None:
        summary = f"covered by the training run (first step logged at {train.first_step_s:.1f} s)"
        return [StageResult(name, "PASS", summary, [_DERIVED])
                for name in ("Data Loading", "Model Init")]
    if train.kill_reason is not None:
        why = "not verified: spml stopped the training run before a step was logged"
        return [StageResult.skipped(name, why) for name in ("Data Loading", "Model Init")]
    if not train.result.ok:
        return [StageResult.failed("Data Loading", "training crashed before the first step",
                                   train.result.describe(), *_tail(train.result, 3)),
                StageResult.failed("Model Init", "training crashed before the first step",
                                   train.result.describe(), "stderr tail: see Training")]
    hint = ("no step record: print `step=N loss=X` lines or append JSON records to "
            "SPML_METRICS_FILE (spml.toolkit.Monitor)")
    return [StageResult.failed(name, "no training step was logged, so this stage is unverified",
                               hint) for name in ("Data Loading", "Model Init")]


# --- checkpoint -----------------------------------------------------------------------------


def _checkpoint_pattern(run: _Run) -> str:
    pattern = _PLACEHOLDER.sub(
        lambda m: glob.escape(run.values[m.group(1)]) if m.group(1) in run.values
        else m.group(0), run.settings.checkpoint_glob)
    return pattern if os.path.isabs(pattern) else str(run.project / pattern)


# --- inference and evaluation ---------------------------------------------------------------


def _eval_stages(run: _Run, checkpoint: Path | None) -> list[StageResult]:
    command, metric = run.settings.eval_command, run.settings.metric
    if not command or not metric:
        return [StageResult.skipped(name, "no eval_command") for name in ("Inference",
                                                                          "Evaluation")]
    if checkpoint is None and "{checkpoint}" in command:
        why = "not reached: no checkpoint to evaluate (see Checkpoint)"
        return [StageResult.skipped(name, why) for name in ("Inference", "Evaluation")]
    first = _eval_once(run, run.fill(command, checkpoint), metric, 1)
    if isinstance(first, StageResult):
        return [StageResult.skipped("Inference", "not judged: the eval command failed "
                                    "(see Evaluation)"), first]
    evaluation = StageResult("Evaluation", "PASS", f"metrics computed ({metric}={first:.8g})",
                             [f"eval command: {run.fill(command, checkpoint)}"],
                             {metric: first})
    second = _eval_once(run, run.fill(command, checkpoint), metric, 2)
    if isinstance(second, StageResult):
        second.name = "Inference"
        second.summary = f"second eval pass: {second.summary}"
        return [second, evaluation]
    return [_judge_inference(run.thresholds, metric, first, second), evaluation]


def _eval_once(run: _Run, command: str, metric: str, attempt: int) -> float | StageResult:
    result = run_command(command, cwd=run.project, log_dir=run.log_dir, name=f"eval-{attempt}",
                         env=run.env, time_limit_s=run.remaining())
    if not result.ok:
        return StageResult.failed("Evaluation", f"eval command failed: {result.describe()}",
                                  *_tail(result))
    try:
        value = parse_metric(result.stdout_text(), metric, where=str(result.stdout_path))
    except MetricNotFound as exc:
        return StageResult.failed("Evaluation", f"no {metric} in the eval output", str(exc))
    if not math.isfinite(value):
        return StageResult.failed("Evaluation", f"{metric} is {value}: not finite",
                                  str(result.stdout_path))
    return value


def _judge_inference(thresholds: Thresholds, metric: str, first: float, second: float
                     ) -> StageResult:
    diff = abs(first - second)
    bound = thresholds.allclose_atol + thresholds.allclose_rtol * abs(second)
    evidence = [f"pass 1: {metric}={first:.10g}", f"pass 2: {metric}={second:.10g}",
                f"|diff| {diff:.3g} vs atol {thresholds.allclose_atol:g} + rtol "
                f"{thresholds.allclose_rtol:g} x |{metric}| = {bound:.3g}"]
    metrics = {"diff": diff}
    if diff > bound:
        return StageResult("Inference", "FAIL", f"inference is not deterministic: {metric} "
                           f"{first:.8g} vs {second:.8g} from two identical runs", evidence,
                           metrics)
    return StageResult("Inference", "PASS", "2 passes of the eval command, deterministic",
                       evidence, metrics)


# --- records and text -----------------------------------------------------------------------


def _log_record(line: str) -> dict[str, Any] | None:
    """A step record from one output line: it must name a step or a loss."""
    values = lm.parse_log_line(line)
    if not values:
        return None
    step_key = lm.find_key(values, _STEP_NAMES)
    loss = lm.find_value(values, lm.LOSS_KEYS)
    if loss is None and step_key is None:
        return None
    keys = {"grad_norm": lm.GRAD_NORM_KEYS, "lr": ("lr", "learning_rate"),
            "step_time_s": lm.STEP_TIME_KEYS, "throughput": lm.SAMPLES_KEYS,
            "tokens_per_s": lm.TOKENS_KEYS, "param_drift": ("param_drift",)}
    record: dict[str, Any] = {key: lm.find_value(values, aliases)
                              for key, aliases in keys.items()}
    record.update(loss=loss, mfu=lm.mfu_of(values))
    if step_key is not None and float(values[step_key]).is_integer():
        record["step"] = int(values[step_key])
    return {key: value for key, value in record.items() if value is not None}


def _json_record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _steps_of(records: list[dict[str, Any]]) -> int:
    steps = [r["step"] for r in records if isinstance(r.get("step"), int | float)]
    return int(max(steps)) if steps else len(records)


def _tail(result: CommandResult, count: int = _TAIL_LINES) -> list[str]:
    lines = [line for line in result.stderr_tail(count).splitlines() if line.strip()]
    if not lines:
        lines = result.stdout_text(64 * 1024).splitlines()[-count:]
    return [f"| {_clip(line)}" for line in lines] + [f"log: {result.stderr_path}"]


def _clip(text: str) -> str:
    return text if len(text) <= _CLIP else text[: _CLIP - 3] + "..."


def _duration(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:04.1f}s"
