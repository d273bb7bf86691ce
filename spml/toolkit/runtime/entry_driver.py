"""The child side of L1 entry mode: load the entry point, run the six stages, write the report.

Run by `entry.run_entry` as::

    python -m spml.toolkit.runtime.entry_driver --entry mod:fn --project DIR \\
        --max-steps N --time-limit S --out report.json [--progress progress.jsonl] \\
        [--thresholds thresholds.json]

Each stage appends ``{"event": "start", "stage": ...}`` to the progress file when it begins
and ``{"event": "end", "stage": ..., "result": {...}}`` when it ends (Training adds a
``{"event": "step", ...}`` heartbeat at most once a second), so a parent that kills a hung
child still knows which stage hung. The final report (`L1Report.as_dict`) goes to ``--out``.
A stage's failure is a FAIL in the report, never a non-zero exit: a non-zero exit means the
child itself crashed.

`run_stages` (with `StageState`) is the in-process pipeline; tests call it directly.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from spml.toolkit.runtime import stages
from spml.toolkit.runtime.contract import (
    ENV_CHECKPOINT_DIR,
    ENV_MAX_STEPS,
    ENV_METRICS_FILE,
    ENV_SEED,
    ENV_TIME_LIMIT,
)
from spml.toolkit.runtime.entry import (
    EntryPointError,
    exception_line,
    load_entry,
    seed_everything,
    where,
)
from spml.toolkit.runtime.report import STAGES, L1Report, StageResult
from spml.toolkit.runtime.thresholds import Thresholds

Progress = Callable[[dict[str, Any]], None]
DEFAULT_MAX_STEPS = 50
DEFAULT_TIME_LIMIT_S = 300.0


def _no_progress(event: dict[str, Any]) -> None:
    """Progress sink that drops every event."""


@dataclass
class StageOptions:
    """How far L1 goes: steps, seconds, thresholds, seed, batches, output files."""

    max_steps: int = DEFAULT_MAX_STEPS
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    thresholds: Thresholds = field(default_factory=Thresholds)
    seed: int = 0
    data_batches: int = 4
    checkpoint_dir: Path | None = None  # None: a temporary folder
    metrics_file: Path | None = None    # per-step records appended as JSON lines


@dataclass
class StageState:
    """The project's pieces (``entry``) and what each stage hands on to the next."""

    entry: Any
    project: Path
    options: StageOptions = field(default_factory=StageOptions)
    progress: Progress = _no_progress
    batches: list[Any] = field(default_factory=list)
    model: Any = None
    optimizer: Any = None
    records: list[dict[str, Any]] = field(default_factory=list)
    last_beat: float = 0.0


_STAGE_FUNCTIONS = (stages.data_loading, stages.model_init, stages.training, stages.checkpoint,
                    stages.inference, stages.evaluation)


def run_stages(state: StageState) -> list[StageResult]:
    """Run the six stages in order; every stage yields one `StageResult`.

    No batch from Data Loading skips everything after it; a failed Model Init skips
    everything after it; other failures (Training's included) let the later stages run.
    """
    results = []
    for name, stage in zip(STAGES, _STAGE_FUNCTIONS, strict=True):
        blocker = _blocker(name, state)
        if blocker:
            result = StageResult.skipped(name, blocker)
            state.progress({"event": "end", "stage": name, "result": asdict(result)})
        else:
            result = guarded(name, stage, state)
        results.append(result)
    return results


def _blocker(name: str, state: StageState) -> str | None:
    if name == STAGES[0]:
        return None
    if not state.batches:
        return "skipped: no batch to run on (Data Loading failed)"
    if name != STAGES[1] and state.model is None:
        return "skipped: Model Init failed"
    return None


def guarded(name: str, stage: Callable[[StageState], StageResult],
            state: StageState) -> StageResult:
    """Run one stage, turning an exception into a FAIL at the project's ``file:line``."""
    state.progress({"event": "start", "stage": name, "time": time.time()})
    started = time.monotonic()
    try:
        result = stage(state)
    except Exception as exc:  # noqa: BLE001 - any error in user code is this stage's FAIL
        result = StageResult.failed(name, exception_line(exc), f"at {where(exc, state.project)}")
    result.metrics.setdefault("duration_s", round(time.monotonic() - started, 3))
    state.progress({"event": "end", "stage": name, "result": asdict(result)})
    return result


def drive(entry: str, project: Path, options: StageOptions,
          progress: Progress = _no_progress) -> L1Report:
    """Load ``entry`` from ``project`` and run the stages; a load failure fails Data Loading."""
    started = time.monotonic()
    progress({"event": "start", "stage": STAGES[0], "time": time.time()})
    seed_everything(options.seed)
    try:
        pieces = load_entry(entry, project)
    except EntryPointError as exc:
        results = [StageResult.failed(STAGES[0], "the entry point did not load", str(exc))]
        results += [StageResult.skipped(name, "skipped: the entry point did not load")
                    for name in STAGES[1:]]
        for result in results:
            progress({"event": "end", "stage": result.name, "result": asdict(result)})
    else:
        results = run_stages(StageState(pieces, project, options, progress))
    return L1Report(entry, "entry", results, time.monotonic() - started)


def progress_file(path: Path | None) -> Progress:
    """A sink appending each event as one JSON line (opened and closed per event)."""
    if path is None:
        return _no_progress

    def write(event: dict[str, Any]) -> None:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, default=str) + "\n")

    return write


def read_thresholds(path: Path | None) -> Thresholds:
    """Thresholds from a JSON object of field overrides (unknown keys are ignored)."""
    if path is None:
        return Thresholds()
    data = json.loads(path.read_text(encoding="utf-8"))
    known = {f.name for f in fields(Thresholds)}
    return Thresholds(**{k: v for k, v in data.items() if k in known})


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def options_from(args: argparse.Namespace) -> StageOptions:
    """Stage options from the flags, falling back to the SPML_* environment contract."""
    env_path = {name: Path(os.environ[name]) if os.environ.get(name) else None
                for name in (ENV_CHECKPOINT_DIR, ENV_METRICS_FILE)}
    max_steps = args.max_steps or int(_env_number(ENV_MAX_STEPS, DEFAULT_MAX_STEPS))
    time_limit = args.time_limit or _env_number(ENV_TIME_LIMIT, DEFAULT_TIME_LIMIT_S)
    return StageOptions(max_steps=max_steps, time_limit_s=time_limit,
                        thresholds=read_thresholds(args.thresholds),
                        seed=int(_env_number(ENV_SEED, 0)),
                        checkpoint_dir=env_path[ENV_CHECKPOINT_DIR],
                        metrics_file=env_path[ENV_METRICS_FILE])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spml.toolkit.runtime.entry_driver",
                                     description="Run L1's six stages on an entry point.")
    parser.add_argument("--entry", required=True, help="module:function in the project")
    parser.add_argument("--project", required=True, type=Path, help="the project folder")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps at most")
    parser.add_argument("--time-limit", type=float, default=None, help="training seconds")
    parser.add_argument("--out", required=True, type=Path, help="the report JSON to write")
    parser.add_argument("--progress", type=Path, default=None, help="progress JSON lines")
    parser.add_argument("--thresholds", type=Path, default=None, help="thresholds JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the flags, run the stages, write the report atomically to ``--out``."""
    args = _parser().parse_args(argv)
    report = drive(args.entry, args.project, options_from(args), progress_file(args.progress))
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(report.json(), encoding="utf-8")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
