"""Fault injection without Prefect: a real trainer saves real checkpoints (torch.save archives,
safetensors, Hugging Face shard directories, torch.distributed.checkpoint directories), damages
its newest one and dies; the watchdog must skip it and resume from the one before."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from spml.protocols.watchdog import load_watchdog_settings
from spml.toolkit.watchdog.state import WatchdogState
from spml.toolkit.watchdog.supervise import AttemptReport, supervise_once

TRAINER = Path(__file__).parents[2] / "fixtures" / "watchdog" / "atomic_trainer.py"


def experiment(tmp_path: Path, plan: dict, glob: str, **settings: object) -> Path:
    exp = tmp_path / "run"
    exp.mkdir()
    shutil.copy(TRAINER, exp / "atomic_trainer.py")
    (exp / "plan.json").write_text(json.dumps({"total": 30, "every": 10, **plan}))
    fields = {"train_command": f"{sys.executable} atomic_trainer.py plan.json",
              "checkpoint_glob": glob, "log_file": "train.log", "hang_timeout": 30,
              "startup_grace": 60, "poll_interval": 0.05, "restart_delay": 0,
              "total_steps": 30, **settings}
    (exp / "watchdog.yaml").write_text(yaml.safe_dump(fields))
    return exp


def supervise(exp: Path, limit: int = 6) -> list[AttemptReport]:
    """Attempts until the run finishes or must stop (what the Prefect task's retries do)."""
    settings, reports = load_watchdog_settings(exp, {}), []
    WatchdogState(exp).start_episode()
    for _ in range(limit):
        reports.append(supervise_once(settings, exp))
        last = reports[-1]
        if last.finished or not (last.decision and last.decision.restart):
            break
    return reports


def resumes(exp: Path) -> list[int]:
    return [int(line.split("resume_step=")[1]) for line in
            (exp / "resumes.log").read_text().splitlines()]


@pytest.mark.parametrize(("fmt", "glob", "skipped"), [
    ("pt", "ckpt/step_*.pt",
     "ckpt/step_000020.pt: zip central directory unreadable (File is not a zip file): cut "
     "short or corrupt"),
    ("safetensors", "ckpt/step_*.safetensors",
     "ckpt/step_000020.safetensors: header declares 256 data bytes, the file holds "),
    ("hfdir", "ckpt/checkpoint-*",
     "ckpt/checkpoint-20: model.safetensors.index.json names 1 missing shard(s): "
     "model-00002-of-00002.safetensors"),
    ("dcp", "ckpt/dcp-*", "ckpt/dcp-20: shard __0_0.distcp named by .metadata is missing"),
])
def test_a_damaged_newest_checkpoint_is_skipped(tmp_path: Path, fmt: str, glob: str,
                                                skipped: str) -> None:
    exp = experiment(tmp_path, {"format": fmt, "faults": {"25": "corrupt_kill"}}, glob)
    reports = supervise(exp)
    assert reports[-1].finished
    assert resumes(exp) == [0, 10]  # 20 was damaged at the fault: 10 is the newest whole one
    assert [r.checkpoint_step for r in WatchdogState(exp).history()] == [10]
    context = (exp / "experiment-context.md").read_text()
    assert "- Skipped checkpoints:" in context
    assert f"  - {skipped}" in context
    assert "- Restart from: " in context
    assert "(step 10; " in context


def test_a_legacy_checkpoint_of_unknown_completeness_is_not_handed_out(tmp_path: Path) -> None:
    # An unverifiable format, no marker, never seen complete: the resume would gamble.
    exp = experiment(tmp_path, {"faults": {"5": "kill"}}, "ckpt/*.h5")
    (exp / "ckpt").mkdir()
    (exp / "ckpt" / "old_7.h5").write_bytes(b"\x89HDF")
    supervise(exp)
    assert resumes(exp)[0] == 0
    status = (exp / "experiment-context.md").read_text()
    assert "no structural check for .h5 files; no marker and not seen complete" in status
