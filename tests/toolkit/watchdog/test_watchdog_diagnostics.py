"""A failed watchdog attempt's entry in experiment-context.md gets SPML's diagnostics trees,
computed from the steps the attempt logged; the classification itself is unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spml.protocols.watchdog import WatchdogSettings
from spml.toolkit.diagnostics import HEADING
from spml.toolkit.watchdog.context import ContextFile
from spml.toolkit.watchdog.state import WatchdogState
from spml.toolkit.watchdog.supervise import AttemptReport, supervise_once

# Logs 12 steps to train.log (flat, or NaN from step 9), then dies or hangs.
TRAINER = """import sys, time
mode, end = sys.argv[1], sys.argv[2]
with open("train.log", "a", buffering=1) as log:
    for step in range(1, 13):
        loss = float("nan") if mode == "nan" and step > 8 else 2.0
        log.write(f"step={step} loss={loss} grad_norm=1.0\\n")
if end == "hang":
    time.sleep(600)
raise RuntimeError("training gave up")
"""


def attempt(tmp_path: Path, mode: str, end: str = "raise", **extra: object) -> AttemptReport:
    (tmp_path / "trainer.py").write_text(TRAINER)
    settings = WatchdogSettings.model_validate({
        "train_command": f"{sys.executable} trainer.py {mode} {end}",
        "checkpoint_glob": "ckpt/*.pt", "log_file": "train.log", "poll_interval": 0.05,
        "restart_delay": 0, **extra})
    WatchdogState(tmp_path).start_episode()
    return supervise_once(settings, tmp_path)


def issue(tmp_path: Path) -> list[str]:
    text = (tmp_path / "experiment-context.md").read_text()
    return text.split("### Issue #1", 1)[1].splitlines()


@pytest.mark.parametrize(("mode", "cause", "tree"), [
    ("flat", "python exception: RuntimeError: training gave up",
     "[convergence] the loss is flat (loss 2 -> 2 (+0.0%)) -> likely learning rate too low or "
     "the wrong loss; first: check the learning-rate schedule and the loss function"),
    ("nan", "non-finite loss",
     "[convergence] NaN/Inf in the loss or gradients (4 non-finite values) -> likely numeric "
     "instability; first: look for log(0), division by zero, overflow (fp16 range, missing "
     "loss scaling)"),
])
def test_a_failed_attempt_records_the_tree_that_fired(tmp_path: Path, mode: str, cause: str,
                                                      tree: str) -> None:
    report = attempt(tmp_path, mode)
    assert report.diagnosis is not None
    assert (report.diagnosis.kind, report.diagnosis.cause) == ("code", cause)  # as before
    assert report.diagnostics == (tree,)
    lines = issue(tmp_path)
    assert f"- Symptom: {cause}" in lines
    assert lines[lines.index(f"- {HEADING}:") + 1] == f"  - {tree}"
    recorded = WatchdogState(tmp_path).history()[0].diagnosis
    assert recorded == report.diagnosis  # attempts.jsonl keeps the classification only


def test_a_hung_attempt_is_diagnosed_from_its_logged_steps(tmp_path: Path) -> None:
    report = attempt(tmp_path, "flat", "hang", hang_timeout=0.5, startup_grace=0)
    assert report.diagnosis is not None
    assert report.diagnosis.cause == "hang: no heartbeat"
    assert report.diagnostics[0].startswith("[convergence] the loss is flat")
    assert f"- {HEADING}:" in issue(tmp_path)


def test_an_attempt_that_logged_no_step_gets_no_diagnostics(tmp_path: Path) -> None:
    settings = WatchdogSettings.model_validate({
        "train_command": f"{sys.executable} -c 'raise SystemExit(3)'",
        "checkpoint_glob": "ckpt/*.pt", "log_file": "train.log", "poll_interval": 0.05})
    report = supervise_once(settings, tmp_path)
    assert report.diagnosis is not None
    assert report.diagnostics == ()
    assert HEADING not in (tmp_path / "experiment-context.md").read_text()


def test_the_context_entry_lists_each_diagnosis_under_its_own_bullet(tmp_path: Path) -> None:
    context = ContextFile(tmp_path / "ctx.md")
    context.add_diagnosis(7, "hang: no heartbeat", "environment", ["no heartbeat"], "restart",
                          None, diagnostics=["[convergence] a", "[efficiency] b"])
    context.add_diagnosis(8, "exit 1", "code", [], "stopped", None)
    text = (tmp_path / "ctx.md").read_text()
    assert f"- Checkpoint: none\n- {HEADING}:\n  - [convergence] a\n  - [efficiency] b\n" in text
    assert text.count(HEADING) == 1  # the second issue had none
