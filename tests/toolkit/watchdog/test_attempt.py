"""The resume contract and one real attempt (fake trainer, no Prefect)."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

from spml.toolkit.watchdog.attempt import AttemptConfig, attempt_command, run_attempt
from spml.toolkit.watchdog.checkpoints import Checkpoint

TRAINER = Path(__file__).parents[2] / "fixtures" / "watchdog" / "fake_trainer.py"


def config(tmp_path: Path, command: str = "true", hang_timeout_s: float = 5.0) -> AttemptConfig:
    return AttemptConfig(train_command=command, exp_dir=tmp_path, log_file=tmp_path / "train.log",
                         hang_timeout_s=hang_timeout_s, startup_grace_s=0.5,
                         poll_interval_s=0.05, state_dir=tmp_path / "state")


def test_resume_contract(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path / "ckpt" / "step_10.pt", 10, 1, 0.0)
    cfg = config(tmp_path, "python train.py --resume {checkpoint}")
    command, env = attempt_command(cfg, ckpt)
    assert command == f"python train.py --resume {ckpt.path}"
    assert env["SPML_RESUME_FROM"] == str(ckpt.path)
    command, env = attempt_command(cfg, None)
    assert command == "python train.py --resume ''"  # fresh start: an empty argument
    assert env["SPML_RESUME_FROM"] == ""


def test_checkpoint_placeholder_is_one_shell_word(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path / "my run" / "it's" / "step_10.pt", 10, 1, 0.0)
    cfg = config(tmp_path, "python train.py --resume {checkpoint} --tag {checkpoint}")
    command, env = attempt_command(cfg, ckpt)
    assert shlex.split(command) == ["python", "train.py", "--resume", str(ckpt.path),
                                    "--tag", str(ckpt.path)]
    assert env["SPML_RESUME_FROM"] == str(ckpt.path)  # the environment is never quoted
    braces = config(tmp_path, "echo ${HOME} {checkpoint} | awk '{print $1}'")
    assert attempt_command(braces, None)[0] == "echo ${HOME} '' | awk '{print $1}'"


def test_resume_argument_reaches_the_trainer_through_a_real_shell(tmp_path: Path) -> None:
    # Review finding: an unquoted path with a space split into two arguments (argparse exit 2,
    # classified as a code failure: the run stopped instead of resuming).
    exp = tmp_path / "exp dir"
    exp.mkdir()
    (exp / "args.py").write_text(
        "import argparse, json, os\n"
        "p = argparse.ArgumentParser(); p.add_argument('--resume', required=True)\n"
        "a = p.parse_args()\n"
        "print(json.dumps([a.resume, os.environ.get('SPML_RESUME_FROM')]))\n")
    cfg = AttemptConfig(train_command=f"{shlex.quote(sys.executable)} args.py --resume "
                        "{checkpoint}", exp_dir=exp, log_file=None, hang_timeout_s=30.0,
                        startup_grace_s=30.0, poll_interval_s=0.05, state_dir=exp / "state")
    ckpt = Checkpoint(exp / "ckpt" / "step_10.pt", 10, 1, 0.0)
    for resume_from, expected in ((ckpt, [str(ckpt.path)] * 2), (None, ["", ""])):
        outcome = run_attempt(cfg, 1, resume_from)
        assert outcome.finished, outcome.end.log_tail
        out = outcome.result.stdout_path.read_text().strip().splitlines()[-1]
        assert json.loads(out) == expected


def test_hung_attempt_is_killed_and_reported(tmp_path: Path) -> None:
    shutil.copy(TRAINER, tmp_path / "fake_trainer.py")
    (tmp_path / "plan.json").write_text(json.dumps({"default": "hang", "at": 4}))
    cfg = config(tmp_path, f"{sys.executable} fake_trainer.py plan.json", hang_timeout_s=0.5)
    outcome = run_attempt(cfg, 1, None)
    assert outcome.end.hung
    assert outcome.end.exit_code is None
    assert outcome.end.last_step == 3
    assert not outcome.finished


def test_earlier_attempts_log_lines_do_not_count(tmp_path: Path) -> None:
    (tmp_path / "train.log").write_text("step=99 loss=0.1\nTraceback (most recent call last):\n")
    outcome = run_attempt(config(tmp_path, "echo done"), 1, None)
    assert outcome.finished
    assert outcome.end.last_step is None
    assert "Traceback" not in outcome.end.log_tail
