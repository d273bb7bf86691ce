"""`spml validate runtime` ends a failed (or warned) L1 report with SPML's diagnostics trees,
computed from the run's own per-step records; a healthy run, or one without records, gets none."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spml.toolkit.diagnostics import HEADING, diagnostics_text, evidence_from_l1_log_dir
from spml.toolkit.runtime.report import STAGES, L1Report, StageResult
from spml.toolkit.runtime.run import add_diagnostics
from spml.toolkit.runtime.thresholds import Thresholds

ENTRY = Path(__file__).parents[1] / "fixtures" / "l1" / "entry"
# A plain-Python "training" under the L1 contract: honours SPML_MAX_STEPS, logs key=value steps.
TRAIN = """import os, sys
steps = int(os.environ["SPML_MAX_STEPS"])
mode = sys.argv[1]
print(f"max_steps={steps}", flush=True)
for step in range(1, steps + 1):
    loss = {"flat": 2.0, "nan": float("nan") if step > steps // 2 else 2.0 / step,
            "down": 2.0 / step}[mode]
    print(f"step={step} loss={loss} grad_norm=1.0", flush=True)
"""


def project(tmp_path: Path, mode: str) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "train.py").write_text(TRAIN)
    (folder / "pyproject.toml").write_text(
        f'[tool.spml.validate.runtime]\ntrain-command = "python train.py {mode}"\n'
        "max-steps = 20\n")
    return folder


def validate(folder: Path, log_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spml", "validate", "runtime", str(folder),
                           "--log-dir", str(log_dir), *extra],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("mode", "line"), [
    ("flat", "[convergence] the loss is flat (loss 2 -> 2 (+0.0%)) -> likely learning rate too "
             "low or the wrong loss; first: check the learning-rate schedule and the loss "
             "function"),
    ("nan", "[convergence] NaN/Inf in the loss or gradients (10 non-finite values) -> likely "
            "numeric instability; first: look for log(0)"),
])
def test_a_failed_run_ends_with_the_convergence_tree(tmp_path: Path, mode: str,
                                                     line: str) -> None:
    done = validate(project(tmp_path, mode), tmp_path / "logs")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "[Training]       FAIL" in done.stdout
    heading = lines.index(f"{HEADING}:")
    assert lines[heading - 1].startswith("RESULT: FAIL")
    assert lines[heading + 1].startswith("  " + line)
    assert all(x.startswith("  [") for x in lines[heading + 1:])  # the report ends with it


def test_the_json_report_carries_the_diagnoses(tmp_path: Path) -> None:
    done = validate(project(tmp_path, "flat"), tmp_path / "logs", "--format", "json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert [d.split("]")[0] for d in report["diagnostics"]] == ["[convergence"]
    assert "the loss is flat" in report["diagnostics"][0]


def test_a_failed_run_whose_loss_is_healthy_gets_no_section(tmp_path: Path) -> None:
    done = validate(project(tmp_path, "down"), tmp_path / "logs")
    assert done.returncode == 1  # no checkpoint: Checkpoint fails, the loss is fine
    assert "RESULT: FAIL" in done.stdout
    assert HEADING not in done.stdout


def test_a_healthy_run_prints_no_diagnostics(tmp_path: Path) -> None:
    shutil.copy(ENTRY / "good.py", tmp_path / "good.py")
    done = validate(tmp_path, tmp_path / "logs", "--entry", "good:l1_entry", "--max-steps", "40")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RESULT: PASS (6/6 stages)" in done.stdout
    assert HEADING not in done.stdout
    # The records are there (entry mode's l1-metrics.jsonl): a pass without warnings is not
    # diagnosed, whatever a noisy minibatch loss would make the trees say.
    assert evidence_from_l1_log_dir(tmp_path / "logs", "entry").losses


def _report(status: str, *evidence: str) -> L1Report:
    stages = [StageResult(name, "PASS", "ok") for name in STAGES]
    stages[2] = StageResult("Training", status, "20 steps", list(evidence))  # type: ignore[arg-type]
    return L1Report("python train.py", "command", stages, 1.0)


def _flat_records(log_dir: Path) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"step": i, "loss": 2.0, "grad_norm": 1.0}) + "\n" for i in range(8)))
    return log_dir


def test_a_pass_with_a_warning_is_diagnosed_a_clean_pass_is_not(tmp_path: Path) -> None:
    log_dir = _flat_records(tmp_path / "logs")
    clean = add_diagnostics(_report("PASS", "loss: loss 2 -> 1"), log_dir, Thresholds())
    assert clean.diagnostics == []
    assert HEADING not in clean.text() + clean.markdown()
    warned = add_diagnostics(_report("PASS", "loss: loss 2 -> 1", "   warning: loss spike at "
                                     "step 5"), log_dir, Thresholds())
    assert warned.passed
    assert warned.warnings == ["warning: loss spike at step 5"]
    assert len(warned.diagnostics) == 1
    assert warned.diagnostics[0].startswith("[convergence] the loss is flat (loss 2 -> 2")
    assert warned.text().splitlines()[-2:] == [f"{HEADING}:", f"  {warned.diagnostics[0]}"]
    markdown = warned.markdown()
    assert f"## {HEADING}\n\n- [convergence] the loss is flat" in markdown
    assert json.loads(warned.json())["diagnostics"] == warned.diagnostics


def test_no_records_no_diagnosis(tmp_path: Path) -> None:
    failed = add_diagnostics(_report("FAIL", "training command failed: exit 1"), tmp_path,
                             Thresholds())
    assert not failed.passed
    assert failed.diagnostics == []
    assert HEADING not in failed.text()
    assert diagnostics_text(tmp_path) == ""


def test_the_l1_log_dir_is_read_by_mode(tmp_path: Path) -> None:
    (tmp_path / "l1-metrics.jsonl").write_text(json.dumps({"loss": float("nan")}) + "\n")
    (tmp_path / "train.stdout.log").write_text("".join(f"step={i} loss=2.0\n" for i in range(8)))
    assert len(evidence_from_l1_log_dir(tmp_path, "entry").losses) == 1
    assert evidence_from_l1_log_dir(tmp_path, "command").losses == [2.0] * 8  # stdout lines
    _flat_records(tmp_path)
    assert evidence_from_l1_log_dir(tmp_path, "command").grad_norms == [1.0] * 8  # the file wins
    assert "NaN/Inf" in diagnostics_text(tmp_path, "entry")


def test_develops_l1_level_gets_the_section_once(tmp_path: Path) -> None:
    from spml.toolkit.pipeline.levels import diagnostics_text as reexported
    from spml.toolkit.pipeline.levels import run_runtime

    result = run_runtime(project(tmp_path, "flat"), log_dir=tmp_path / "logs")
    assert not result.passed
    assert result.report.count(f"{HEADING}:") == 1
    assert "[convergence] the loss is flat" in result.report
    assert result.data["diagnostics"]
    assert reexported is diagnostics_text
