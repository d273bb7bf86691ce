"""What an interrupted watchdog leaves in experiment-context.md, and the line it prints."""

from __future__ import annotations

from pathlib import Path

from spml.toolkit.watchdog.context import ContextFile
from spml.toolkit.watchdog.interrupt import record_interrupted, resume_command


def test_the_state_becomes_interrupted_keeping_the_attempt_fields(tmp_path: Path) -> None:
    context = ContextFile(tmp_path / "experiment-context.md")
    context.set_status("running", attempt="2", resumed_from="ckpt/step_000040.json (step 40)")
    (tmp_path / "train.log").write_text("".join(f"step={s} loss=0.5\n" for s in range(1, 58)))
    resume = resume_command(tmp_path, {"hang_timeout": 60.0, "eval_command": None})
    line = record_interrupted(tmp_path, tmp_path / "train.log", resume, "SIGTERM")
    assert line == (f"interrupted by SIGTERM at attempt 2 (step 57); resume with: spml watchdog "
                    f"run {tmp_path} --hang-timeout 60.0")
    status = context.read_status()
    assert status["state"] == "interrupted"
    assert status["attempt"] == "2"
    assert status["resumed_from"] == "ckpt/step_000040.json (step 40)"
    assert status["last_step"] == "57"
    assert status["interrupted_by"] == "SIGTERM"
    assert status["resume"] == resume


def test_a_finished_run_keeps_its_state(tmp_path: Path) -> None:
    context = ContextFile(tmp_path / "experiment-context.md")
    context.set_status("completed", attempts="1", last_step=30)
    line = record_interrupted(tmp_path, None, "spml watchdog run x", "SIGINT")
    assert line == "interrupted by SIGINT after training ended (state: completed)"
    assert context.read_status()["state"] == "completed"


def test_the_resume_command_quotes_the_flags_it_repeats(tmp_path: Path) -> None:
    exp = tmp_path / "my run"
    assert resume_command(exp, {"train_command": "python train.py --lr 1e-3",
                                "checkpoint_glob": "ckpt/*.pt", "unknown": 1}) == (
        f"spml watchdog run '{exp}' --train-command 'python train.py --lr 1e-3' "
        "--checkpoint-glob 'ckpt/*.pt'")
