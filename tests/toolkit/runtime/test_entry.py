"""L1 entry mode: the six stages on fixture projects with planted defects.

`run_entry` runs real child processes (good, zero_lr, hang); the other defects run the same
pipeline in-process (`entry_driver.drive`) for speed.
"""

from __future__ import annotations

import json
import re
import sys
import types
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from spml.toolkit.process.result import CommandResult, ExitKind
from spml.toolkit.runtime.entry import (
    EntryPointError,
    load_entry,
    report_from_progress,
    run_entry,
)
from spml.toolkit.runtime.entry_driver import StageOptions, StageState, drive, run_stages
from spml.toolkit.runtime.report import STAGES, L1Report
from spml.toolkit.runtime.thresholds import Thresholds

FIXTURES = Path(__file__).parents[2] / "fixtures" / "l1" / "entry"
FIXTURE_MODULES = ("good", "detached_loss", "zero_lr", "nan_grads", "bad_checkpoint",
                   "nondeterministic", "eval_crash", "hang")
BLOCK_LINE = re.compile(r"^\[(?P<stage>[A-Za-z ]+)\] +(?P<status>PASS|FAIL|SKIP) \S")


@pytest.fixture(autouse=True)
def _clean_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """load_entry puts the project on sys.path and imports it; undo both after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in FIXTURE_MODULES:
        sys.modules.pop(name, None)


def statuses(report: L1Report) -> list[str]:
    return [stage.status for stage in report.stages]


def stage(report: L1Report, name: str) -> Any:
    return next(s for s in report.stages if s.name == name)


CHILD_RUNS = {"good": {"max_steps": 60}, "zero_lr": {"max_steps": 24},
              "hang": {"total_timeout_s": 5.0}}


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[L1Report, Path]]:
    """The three child-process runs, started together (each child imports torch: ~2-4 s)."""

    def run(module: str) -> tuple[L1Report, Path]:
        log_dir = tmp_path_factory.mktemp(module) / "logs"
        settings = {"max_steps": 60, "time_limit_s": 60.0, "total_timeout_s": 120.0,
                    **CHILD_RUNS[module]}
        report = run_entry(f"{module}:l1_entry", FIXTURES, thresholds=Thresholds(),
                           log_dir=log_dir, **settings)
        return report, log_dir

    with ThreadPoolExecutor(max_workers=len(CHILD_RUNS)) as pool:
        return dict(zip(CHILD_RUNS, pool.map(run, CHILD_RUNS), strict=True))


def in_process(module: str, max_steps: int = 24) -> tuple[L1Report, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    report = drive(f"{module}:l1_entry", FIXTURES, StageOptions(max_steps=max_steps),
                   events.append)
    return report, events


# --- real child processes ---------------------------------------------------------------------


def test_good_project_passes_all_six_stages_in_a_child(
        children: dict[str, tuple[L1Report, Path]]) -> None:
    report, logs = children["good"]
    assert statuses(report) == ["PASS"] * 6, report.text()
    assert report.passed
    training = stage(report, "Training")
    assert re.fullmatch(r"60 steps, 0m\d\d\.\ds, loss [\d.]+ -> [\d.]+ \(down \d+%\)",
                        training.summary)
    assert training.metrics["loss_last"] < training.metrics["loss_first"]
    assert report.text() == (logs / "l1-report.txt").read_text()
    metrics = [json.loads(line) for line in (logs / "l1-metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 61))
    assert (logs / "checkpoint" / "l1_checkpoint.pt").stat().st_size > 0


def test_the_text_report_is_spmls_block() -> None:
    report = drive("good:l1_entry", FIXTURES, StageOptions(max_steps=12))
    lines = report.text().splitlines()
    assert lines[0] == "=== L1 Runtime Validation Report ==="
    assert lines[1] == "target: good:l1_entry (entry)"
    headers = [m.groupdict() for line in lines if (m := BLOCK_LINE.match(line))]
    assert headers == [{"stage": name, "status": "PASS"} for name in STAGES]
    evidence = [line for line in lines[2:-1] if not BLOCK_LINE.match(line)]
    assert all(line.startswith("   ") for line in evidence)
    assert re.fullmatch(r"RESULT: PASS \(6/6 stages\) {3}Total time: \dm\d\d\.\ds", lines[-1])
    assert lines[2] == "[Data Loading]   PASS 4 batches, shapes ok ([64, 8], [64, 1])"


def test_zero_lr_fails_training_in_a_child(children: dict[str, tuple[L1Report, Path]]) -> None:
    report, _ = children["zero_lr"]
    assert statuses(report) == ["PASS", "PASS", "FAIL", "PASS", "PASS", "PASS"], report.text()
    training = stage(report, "Training")
    assert "loss not decreasing" in training.summary
    assert "(flat)" in training.summary
    assert "Param Drift: parameters did not move: drift 0" in training.evidence


def test_a_hung_data_loader_times_out_in_data_loading(
        children: dict[str, tuple[L1Report, Path]]) -> None:
    report, logs = children["hang"]
    assert statuses(report) == ["FAIL"] + ["SKIP"] * 5, report.text()
    assert stage(report, "Data Loading").summary == "timed out after 5 s (no progress)"
    assert stage(report, "Evaluation").summary == "skipped: Data Loading timed out"
    assert 5.0 <= report.elapsed_s < 30.0
    assert report.text() == (logs / "l1-report.txt").read_text()
    assert not (logs / "l1-report.json").exists()


# --- planted defects, in-process ----------------------------------------------------------------


@pytest.mark.parametrize(("module", "expected", "failing", "summary", "evidence"), [
    ("detached_loss", ["PASS", "FAIL", "SKIP", "SKIP", "SKIP", "SKIP"], "Model Init",
     "the loss is detached from the parameters",
     "loss does not require grad: detached from the parameters"),
    ("nan_grads", ["PASS", "PASS", "FAIL", "PASS", "PASS", "PASS"], "Training",
     "5 steps, ", "Gradients: NaN/Inf gradients at step 5"),
    ("bad_checkpoint", ["PASS", "PASS", "PASS", "FAIL", "PASS", "PASS"], "Checkpoint",
     "optimizer state not restored: 0 of 4 parameter states loaded",
     "model: 4 tensors, max diff 0.0e+00"),
    ("nondeterministic", ["PASS", "PASS", "PASS", "PASS", "FAIL", "PASS"], "Inference",
     "non-deterministic inference: max diff ", "dropout forced on"),
    ("eval_crash", ["PASS", "PASS", "PASS", "PASS", "PASS", "FAIL"], "Evaluation",
     "ZeroDivisionError: division by zero",
     'at eval_crash.py:13 in evaluate: return {"val_mse": sum(losses) / len(losses)}'),
])
def test_each_planted_defect_fails_its_stage(module: str, expected: list[str], failing: str,
                                             summary: str, evidence: str) -> None:
    report, _ = in_process(module)
    assert statuses(report) == expected, report.text()
    result = stage(report, failing)
    assert summary in result.summary
    assert any(evidence in line for line in result.evidence), result.evidence


def test_nan_grads_names_the_step_and_stops_training() -> None:
    report, _ = in_process("nan_grads")
    training = stage(report, "Training")
    assert training.summary.endswith("loss is nan at step 5; NaN/Inf gradients at step 5")
    assert training.evidence[-1] == ("stopped at step 5: non-finite loss or gradients "
                                     "(its optimizer step was skipped)")


def test_the_skipped_stages_say_why() -> None:
    report, _ = in_process("detached_loss")
    assert {s.summary for s in report.stages[2:]} == {"skipped: Model Init failed"}


def test_every_stage_reports_its_start_and_end_in_order() -> None:
    _, events = in_process("eval_crash", max_steps=6)
    ends = [e["stage"] for e in events if e["event"] == "end"]
    assert ends == list(STAGES)
    assert events[-1]["result"]["status"] == "FAIL"
    for name in STAGES:
        assert {"event": "start", "stage": name} in [
            {k: e[k] for k in ("event", "stage")} for e in events if e["event"] == "start"]


# --- stages on hand-made pieces -----------------------------------------------------------------


def good_pieces(**overrides: Any) -> types.SimpleNamespace:
    sys.path.insert(0, str(FIXTURES))
    import good

    return good.pieces(**overrides)


def test_nan_in_the_inputs_fails_data_loading() -> None:
    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x = torch.ones(8, 3)
        x[0, :2] = torch.nan
        yield x, torch.zeros(8, 1)

    state = StageState(good_pieces(train_batches=batches), FIXTURES, StageOptions(max_steps=2))
    result = run_stages(state)[0]
    assert (result.status, result.summary) == ("FAIL", "batch 1: batch[0] holds 2 NaN/Inf values")


def test_no_batch_skips_everything_after_data_loading() -> None:
    state = StageState(good_pieces(train_batches=lambda: iter(())), FIXTURES)
    results = run_stages(state)
    assert results[0].summary == "train_batches() yielded no batch"
    assert {r.summary for r in results[1:]} == {
        "skipped: no batch to run on (Data Loading failed)"}


def test_a_loss_cut_off_from_the_parameters_fails_training() -> None:
    def step(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        scale = torch.ones(1, requires_grad=True)  # requires grad, but is no parameter
        return torch.nn.functional.mse_loss(model(batch[0]).detach() * scale, batch[1])

    state = StageState(good_pieces(training_step=step), FIXTURES, StageOptions(max_steps=12))
    training = run_stages(state)[2]
    assert training.status == "FAIL"
    assert "no gradients reached the parameters; parameters did not move" in training.summary
    assert "  grad norm 0 on all 12 steps: the loss is not connected to the parameters " \
        "(detached?) or every parameter is frozen" in training.evidence


def test_an_error_in_spmls_call_names_the_call_site() -> None:
    state = StageState(good_pieces(training_step=lambda model, batch: 1.0), FIXTURES)
    init = run_stages(state)[1]
    assert init.summary == "training_step returned float, not a loss tensor"
    state = StageState(good_pieces(make_optimizer=lambda model: None), FIXTURES)
    training = run_stages(state)[2]
    assert training.summary == "AttributeError: 'NoneType' object has no attribute 'zero_grad'"
    assert re.fullmatch(r"at .*spml/toolkit/runtime/stages\.py:\d+ in _train_step: "
                        r"optimizer\.zero_grad\(set_to_none=True\)", training.evidence[0])


def test_a_checkpoint_that_changes_a_weight_names_it() -> None:
    def load(path: Path, model: torch.nn.Module, optimizer: Any) -> None:
        state = torch.load(path, weights_only=True)
        state["model"]["2.bias"] += 0.5
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])

    state = StageState(good_pieces(load_checkpoint=load), FIXTURES, StageOptions(max_steps=6))
    result = run_stages(state)[3]
    assert result.status == "FAIL"
    assert result.summary == "2.bias differs after reload (max diff 0.5)"


# --- hung or crashed children -------------------------------------------------------------------


def test_a_crashed_child_keeps_finished_stages_and_blames_the_running_one(tmp_path: Path) -> None:
    stderr = tmp_path / "l1-entry.stderr.log"
    stderr.write_text("Traceback (most recent call last):\nRuntimeError: CUDA error: boom\n")
    result = CommandResult("python -m ...", 1, ExitKind.FAILED, 4.2,
                           tmp_path / "l1-entry.stdout.log", stderr, 60.0)
    done = {"name": "Data Loading", "status": "PASS", "summary": "4 batches, shapes ok",
            "evidence": [], "metrics": {}}
    events = [{"event": "start", "stage": "Data Loading", "time": 0.0},
              {"event": "end", "stage": "Data Loading", "result": done},
              {"event": "start", "stage": "Model Init", "time": 0.0},
              {"event": "end", "stage": "Model Init", "result": {**done, "name": "Model Init"}},
              {"event": "start", "stage": "Training", "time": 0.0},
              {"event": "step", "stage": "Training", "step": 12, "loss": 0.5}]
    report = report_from_progress("good:l1_entry", events, result)
    assert statuses(report) == ["PASS", "PASS", "FAIL", "SKIP", "SKIP", "SKIP"]
    training = stage(report, "Training")
    assert training.summary == "crashed: exit 1: RuntimeError: CUDA error: boom"
    assert "last progress: step 12, loss 0.5" in training.evidence
    assert "stderr: RuntimeError: CUDA error: boom" in training.evidence
    assert stage(report, "Checkpoint").summary == "skipped: Training crashed"


# --- loading the entry point --------------------------------------------------------------------


def project_with(tmp_path: Path, source: str) -> tuple[str, Path]:
    name = f"l1_entry_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(source)
    return name, tmp_path


@pytest.mark.parametrize(("source", "entry_fn", "message"), [
    ("", "l1_entry", "has no attribute 'l1_entry'. Define `def l1_entry():`"),
    ("l1_entry = 3\n", "l1_entry", "is a int, not a function"),
    ("def l1_entry():\n    return None\n", "l1_entry", "l1_entry() returned None"),
    ("import types\ndef l1_entry():\n    return types.SimpleNamespace(make_model=1)\n",
     "l1_entry", "without make_optimizer, train_batches, training_step, predict, evaluate"),
    ("def l1_entry():\n    raise ValueError('no data dir')\n", "l1_entry",
     "raised ValueError: no data dir at l1_entry_"),
    ("import not_a_real_package_xyz\n", "l1_entry",
     "failed: ModuleNotFoundError: No module named 'not_a_real_package_xyz'"),
    ("def broken(:\n", "l1_entry", "raised SyntaxError"),
])
def test_load_errors_say_what_is_wrong(tmp_path: Path, source: str, entry_fn: str,
                                       message: str) -> None:
    module, project = project_with(tmp_path, source)
    with pytest.raises(EntryPointError, match=re.escape(message)):
        load_entry(f"{module}:{entry_fn}", project)


def test_a_missing_module_or_a_bad_spec_is_named(tmp_path: Path) -> None:
    with pytest.raises(EntryPointError, match="module 'nowhere' not found in the project"):
        load_entry("nowhere:l1_entry", tmp_path)
    with pytest.raises(EntryPointError, match="must be 'module:function', got 'good'"):
        load_entry("good", FIXTURES)


def test_a_load_failure_fails_data_loading_and_skips_the_rest(tmp_path: Path) -> None:
    report = drive("nowhere:l1_entry", tmp_path, StageOptions())
    assert statuses(report) == ["FAIL"] + ["SKIP"] * 5
    assert report.stages[0].summary == "the entry point did not load"
    assert "module 'nowhere' not found" in report.stages[0].evidence[0]
