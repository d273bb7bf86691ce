"""L1 in command mode, against real subprocesses: the fixtures in tests/fixtures/l1/command
(tiny CPU torch scripts) and the bundled regression example."""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest

from spml.errors import ProtocolError
from spml.toolkit.runtime.checkpoint_probe import (
    checkpoint_stage,
    describe,
    judge_checkpoint,
    snapshot,
)
from spml.toolkit.runtime.command import CommandSettings, run_commands
from spml.toolkit.runtime.report import STAGES, L1Report, StageResult
from spml.toolkit.runtime.thresholds import Thresholds

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "l1" / "command"
EXAMPLE = ROOT / "examples" / "regression"
MAX_STEPS = 40


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES, tmp_path / "project"))


def l1(project: Path, train: str, evaluate: str | None = None, **overrides: object
       ) -> L1Report:
    settings = CommandSettings(train_command=train, eval_command=evaluate,
                               metric="val_mse" if evaluate else None,
                               **{"max_steps": MAX_STEPS, "time_limit_s": 60.0,
                                  "total_timeout_s": 120.0, **overrides})  # type: ignore[arg-type]
    report = run_commands(settings, project, thresholds=Thresholds(),
                          log_dir=project.parent / "logs")
    print(report.text())  # shown by pytest when a test fails
    assert [s.name for s in report.stages] == list(STAGES)
    return report


def statuses(report: L1Report) -> list[str]:
    return [stage.status for stage in report.stages]


def stage(report: L1Report, name: str) -> StageResult:
    return next(s for s in report.stages if s.name == name)


def evidence(result: StageResult) -> str:
    return "\n".join(result.evidence)


def leftover_processes(marker: Path) -> list[int]:
    """Live processes whose command line mentions ``marker`` (a per-test folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(marker) in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_a_limited_run_with_deterministic_eval_passes_all_six_stages(project: Path) -> None:
    report = l1(project, "python train_ok.py", "python eval_ok.py {checkpoint}")

    assert report.passed, report.text()
    assert stage(report, "Data Loading").summary.startswith(
        "covered by the training run (first step logged at ")
    training = stage(report, "Training")
    assert training.summary.startswith(f"{MAX_STEPS} steps, ")
    assert f"limited total {MAX_STEPS} shown at" in evidence(training)
    assert "records from key=value lines of the training output" in evidence(training)
    assert "gradients: grad norm" in evidence(training)
    checkpoint = stage(report, "Checkpoint")
    assert checkpoint.summary.startswith(f"step-{MAX_STEPS}.pt (")
    assert "keys: model, optimizer, step" in evidence(checkpoint)
    assert "optimizer state under 'optimizer': 2 parameter entries" in evidence(checkpoint)
    assert stage(report, "Inference").summary == "2 passes of the eval command, deterministic"
    assert stage(report, "Evaluation").summary.startswith("metrics computed (val_mse=0.0")


def test_a_run_announcing_its_full_budget_is_killed_at_once(project: Path) -> None:
    report = l1(project, "python train_unlimited.py")

    training = stage(report, "Training")
    assert training.status == "FAIL"
    assert training.summary == ("run is not limited: output shows total 100000 > "
                                f"SPML_MAX_STEPS={MAX_STEPS}")
    assert "'max_steps=100000'" in evidence(training)
    assert "killed by spml" in evidence(training)
    assert statuses(report) == ["SKIP", "SKIP", "FAIL", "SKIP", "SKIP", "SKIP"]
    # Killed when the header appeared, not by the (default 30 s) limit check or the 60 s time
    # limit: a bound that holds on a loaded machine yet fails if the kill waits for either.
    assert report.elapsed_s < 25
    assert leftover_processes(project) == []


def test_a_run_that_never_shows_its_limit_is_killed_after_the_limit_check(
        project: Path) -> None:
    report = l1(project, "python train_silent.py", limit_check_s=3.0)

    training = stage(report, "Training")
    assert training.summary == ("no limited total in the first 3 s (print max_steps=N; see "
                                "the SPML_MAX_STEPS contract)")
    assert "no output at all" in evidence(training)
    assert statuses(report) == ["SKIP", "SKIP", "FAIL", "SKIP", "SKIP", "SKIP"]
    assert stage(report, "Data Loading").summary.startswith("not verified: spml stopped")
    # Stopped after the 3 s check: not before it, and long before the script's own 60 s of
    # sleeping (or the 60 s time limit).
    assert 3 <= report.elapsed_s < 30
    assert leftover_processes(project) == []


def test_a_run_past_max_steps_fails_training(project: Path) -> None:
    report = l1(project, "python train_overrun.py")

    assert statuses(report) == ["PASS", "PASS", "FAIL", "SKIP", "SKIP", "SKIP"]
    assert stage(report, "Training").summary == (
        f"ran past SPML_MAX_STEPS: step {MAX_STEPS + 1} > {MAX_STEPS}")


def test_a_crash_before_the_first_step_fails_data_loading_and_model_init(
        project: Path) -> None:
    report = l1(project, "python train_crash.py", "python eval_ok.py {checkpoint}")

    assert statuses(report) == ["FAIL", "FAIL", "FAIL", "SKIP", "SKIP", "SKIP"]
    data = stage(report, "Data Loading")
    assert data.summary == "training crashed before the first step"
    assert data.evidence[0].startswith("exit 1: FileNotFoundError:")
    assert "| FileNotFoundError: [Errno 2] No such file or directory: 'data/missing.csv'" \
        in data.evidence
    training = stage(report, "Training")
    assert training.summary.startswith("training command failed: exit 1: FileNotFoundError")
    assert any(line.startswith("log: ") and line.endswith("train.stderr.log")
               for line in training.evidence)


def test_weights_only_checkpoint_passes_and_a_crashing_eval_fails_evaluation(
        project: Path) -> None:
    report = l1(project, "python train_weights_only.py", "python eval_crash.py {checkpoint}")

    assert statuses(report) == ["PASS", "PASS", "PASS", "PASS", "SKIP", "FAIL"]
    training = evidence(stage(report, "Training"))
    assert f"{MAX_STEPS} records from SPML_METRICS_FILE" in training
    assert "gradients: gradient norms not recorded" in training
    checkpoint = stage(report, "Checkpoint")
    assert checkpoint.summary.startswith("weights.pt (")
    assert ("model weights only (no optimizer state): resuming restarts the optimizer"
            in checkpoint.evidence)
    assert stage(report, "Inference").summary == ("not judged: the eval command failed "
                                                  "(see Evaluation)")
    evaluation = stage(report, "Evaluation")
    assert evaluation.summary == ("eval command failed: exit 1: RuntimeError: metric function "
                                  "exploded: shapes (128, 1) and (64, 1) differ")
    assert evaluation.evidence[-2].startswith("| RuntimeError: metric function exploded")


def test_placeholders_a_missing_checkpoint_and_a_noisy_eval(project: Path) -> None:
    # The budget comes only through {max_steps}; the eval command takes no {checkpoint}.
    report = l1(project, "env -u SPML_MAX_STEPS python train_ok.py --max-steps {max_steps} "
                "--save none", "python eval_noisy.py")

    assert statuses(report) == ["PASS", "PASS", "PASS", "FAIL", "FAIL", "PASS"]
    assert stage(report, "Training").summary.startswith(f"{MAX_STEPS} steps")
    checkpoint = stage(report, "Checkpoint")
    assert checkpoint.summary == ("no checkpoint written: nothing new matches "
                                  f"{project.parent / 'logs' / 'checkpoints'}/*")
    inference = stage(report, "Inference")
    assert inference.summary.startswith("inference is not deterministic: val_mse ")
    assert inference.evidence[0].startswith("pass 1: val_mse=0.")


def test_any_shell_command_works_and_no_eval_command_skips_both(project: Path) -> None:
    train = ('echo "total_steps: {max_steps}"; i=1; while [ $i -le 8 ]; do '
             'echo "step $i | loss: $((20 - i)).5"; i=$((i + 1)); done')
    report = l1(project, train, max_steps=8)

    assert statuses(report) == ["PASS", "PASS", "PASS", "FAIL", "SKIP", "SKIP"]
    assert stage(report, "Training").summary.startswith("8 steps, ")
    assert "loss: loss 18.5 -> 13.5" in evidence(stage(report, "Training"))
    assert stage(report, "Inference").summary == "no eval_command"
    assert stage(report, "Evaluation").summary == "no eval_command"


def test_the_bundled_example_passes_l1_in_command_mode(tmp_path: Path) -> None:
    example = Path(shutil.copytree(EXAMPLE, tmp_path / "example",
                                   ignore=shutil.ignore_patterns("outputs", "__pycache__")))
    report = l1(example, "python train.py", "python evaluate.py {checkpoint}", max_steps=60)

    assert report.passed, report.text()
    assert stage(report, "Training").summary.startswith("60 steps, ")
    assert "60 records from SPML_METRICS_FILE" in evidence(stage(report, "Training"))
    assert "keys: state_dict, params, n_features" in evidence(stage(report, "Checkpoint"))
    assert (example / "outputs" / "model.pt").is_file()  # its own checkpoint, as before


def test_a_pickle_that_runs_code_does_not_load(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    before = snapshot(str(tmp_path / "*.pt"))
    path.write_bytes(pickle.dumps(Evil()))
    result, found = checkpoint_stage(str(tmp_path / "*.pt"), before, log_dir=tmp_path / "logs",
                                     time_limit_s=60.0)

    assert found == path
    assert result.status == "FAIL"
    assert result.summary.startswith("evil.pt (")
    assert "does not load with torch.load(weights_only=True): UnpicklingError" in result.summary
    assert not marker.exists()


def test_a_checkpoint_older_than_the_run_does_not_count(tmp_path: Path) -> None:
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "old.pt").write_bytes(b"stale")
    pattern = str(tmp_path / "outputs" / "*.pt")

    result, found = checkpoint_stage(pattern, snapshot(pattern), log_dir=tmp_path,
                                     time_limit_s=60.0)

    assert found is None
    assert result.summary == f"no checkpoint written: nothing new matches {pattern}"
    assert "1 older matching file(s) predate the run" in result.evidence


class _T:
    """Stands in for a tensor in the pure judgement tests (no torch import needed)."""


def _is_t(value: object) -> bool:
    return isinstance(value, _T)


@pytest.mark.parametrize(("optimizer", "status", "line"), [
    ({"state": {}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999)}]}, "FAIL",
     "'optimizer' has an empty 'state' (save it after at least one optimizer step)"),
    ({"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0}]}, "PASS",
     "'optimizer' keeps no state by design (SGD without momentum)"),
    ({"state": {0: {"exp_avg": _T()}}, "param_groups": [{"betas": (0.9, 0.999)}]}, "PASS",
     "optimizer state under 'optimizer': 1 parameter entries"),
])
def test_the_optimizer_entry_must_hold_state(optimizer: dict, status: str, line: str) -> None:
    facts = describe({"model": {"w": _T()}, "optimizer": optimizer}, _is_t)
    result = judge_checkpoint(Path("ckpt.pt"), 2048, facts)

    assert result.status == status
    assert line in result.evidence
    if status == "FAIL":
        assert result.summary == ("checkpoint has no optimizer state: a resumed run restarts "
                                  "Adam moments")


def test_a_raw_state_dict_is_model_weights_only() -> None:
    facts = describe({"weight": _T(), "bias": _T()}, _is_t)
    result = judge_checkpoint(Path("w.pt"), 100, facts)

    assert result.status == "PASS"
    assert facts["raw_state_dict"] is True
    assert result.summary == "w.pt (100 B) loads with torch.load(weights_only=True)"


def test_eval_command_needs_a_metric() -> None:
    with pytest.raises(ProtocolError, match="eval_command needs metric"):
        CommandSettings(train_command="python train.py", eval_command="python eval.py")


def test_an_output_flood_is_killed_before_it_fills_the_disk(project: Path, monkeypatch) -> None:
    # Review repro: a run printing without pause wrote 69 GB before the total timeout.
    from spml.toolkit.runtime import command

    monkeypatch.setattr(command, "MAX_OUTPUT_BYTES", 2**20)
    (project / "flood.py").write_text(
        "import sys\nprint('max_steps=5', flush=True)\nline = 'x' * 1000 + '\\n'\n"
        "while True:\n    sys.stdout.write(line)\n")
    report = l1(project, f"{sys.executable} flood.py")
    training = stage(report, "Training")
    assert training.status == "FAIL"
    assert training.summary.startswith("output flood: train.stdout.log passed 1 MiB")
    # killed within a poll (0.2 s) of passing the cap: bounded, not the disk
    assert (project.parent / "logs" / "train.stdout.log").stat().st_size < 512 * 2**20
