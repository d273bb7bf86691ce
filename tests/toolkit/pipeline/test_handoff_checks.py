"""Handoff pre-checks against real runs: the tiny CPU torch project in
tests/fixtures/handoff/good (in a real git repository) passes every check, and each check
fails on its own variant of it. The good project's L1 run is shared; a variant whose change
does not touch what L1 judges reuses that report (only the time-limit probe runs again)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import git

from spml.errors import GitStateError, ProtocolError
from spml.toolkit.pipeline.handoff_checks import (
    CHECK_NAMES,
    HandoffCheck,
    HandoffReport,
    HandoffSettings,
    run_handoff_checks,
)

GOOD = Path(__file__).resolve().parents[2] / "fixtures" / "handoff" / "good"
TIME_LIMIT_LINES = ("            if time.monotonic() - started >= time_limit:\n"
                    "                break\n")


def settings(**overrides: object) -> HandoffSettings:
    fields: dict[str, object] = {
        "train_command": "python train.py", "eval_command": "python evaluate.py {checkpoint}",
        "metric": "val_mse", "fixed_files": ["train.py", "evaluate.py", "model.py"],
        "time_limit_s": 0.5}
    return HandoffSettings(**{**fields, **overrides})  # type: ignore[arg-type]


def make_experiment(base: Path, edit: Callable[[Path], None] | None = None) -> Path:
    """The good project as experiments/toy of a fresh repository, edited, committed."""
    repo = base / "repo"
    exp = repo / "experiments" / "toy"
    shutil.copytree(GOOD, exp)
    (exp / "gitignore").rename(exp / ".gitignore")  # kept unnamed so it ignores nothing here
    if edit is not None:
        edit(exp)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=Test", "-c", "user.email=test@example.invalid", "commit",
        "-q", "-m", "experiment")
    return exp


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def check(report: HandoffReport, name: str) -> HandoffCheck:
    return next(c for c in report.checks if c.name == name)


def failing(report: HandoffReport) -> list[str]:
    print(report.text())  # shown by pytest when a test fails
    return [c.name for c in report.failures]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> HandoffReport:
    """The good project's report, L1 run included (shared: L1 is the slow part)."""
    exp = make_experiment(tmp_path_factory.mktemp("good"))
    return run_handoff_checks(exp, settings(), log_dir=exp.parents[2] / "logs")


def variant(tmp_path: Path, good: HandoffReport, edit: Callable[[Path], None] | None = None,
            **overrides: object) -> HandoffReport:
    """A variant's report, reusing the good project's L1 report."""
    exp = make_experiment(tmp_path, edit)
    return run_handoff_checks(exp, settings(**overrides), good.l1, log_dir=tmp_path / "logs")


def test_good_project_passes_every_check(good: HandoffReport) -> None:
    assert failing(good) == []
    assert good.passed
    assert good.l1 is not None
    assert good.l1.passed
    assert tuple(c.name for c in good.checks) == CHECK_NAMES
    lines = good.text().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"PASS {name}" for name in CHECK_NAMES]
    assert "outputs/train.log" in check(good, "file_logging").detail
    assert "L1 training run" in check(good, "fast_first_step").detail
    data = json.loads(json.dumps(good.as_dict()))
    assert data["passed"] is True
    assert data["l1"]["passed"] is True
    assert [c["name"] for c in data["checks"]] == list(CHECK_NAMES)


def test_missing_training_script_fails_standalone(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    report = run_handoff_checks(exp, settings(train_command="python missing.py"),
                                log_dir=tmp_path / "logs")  # L1 runs here: it fails at once
    assert "standalone" in failing(report)
    standalone = check(report, "standalone")
    assert "missing.py is not a file" in standalone.detail
    assert "L1 training did not pass" in standalone.detail
    assert report.text().splitlines()[:2] == [f"FAIL standalone: {standalone.detail}",
                                              f"  fix: {standalone.fix}"]


def test_core_code_importing_tests_fails_standalone(tmp_path: Path,
                                                    good: HandoffReport) -> None:
    report = variant(tmp_path, good, lambda exp: replace_in(
        exp / "train.py", "from model import",
        "from tests.helpers import TOLERANCE\nfrom model import"))
    assert failing(report) == ["standalone"]
    standalone = check(report, "standalone")
    line = GOOD.joinpath("train.py").read_text().splitlines().index(
        "from model import make_data, make_model") + 1  # the import went in above it
    assert f"train.py:{line} imports tests.helpers" in standalone.detail
    assert "must not import tests" in standalone.fix


def test_no_log_file_fails_file_logging(tmp_path: Path, good: HandoffReport) -> None:
    report = variant(tmp_path, good, lambda exp: replace_in(
        exp / "train.py", 'LOG_PATH = OUTPUTS / "train.log"', "LOG_PATH = Path(os.devnull)"))
    assert failing(report) == ["file_logging"]
    assert "no file matching **/*.log" in check(report, "file_logging").detail


def test_unseeded_torch_fails_seeds_fixed(tmp_path: Path, good: HandoffReport) -> None:
    report = variant(tmp_path, good, lambda exp: replace_in(
        exp / "train.py", '    torch.manual_seed(int(os.environ.get("SPML_SEED", "0")))\n', ""))
    assert failing(report) == ["seeds_fixed"]
    seeds = check(report, "seeds_fixed")
    assert "never seeded" in seeds.detail
    assert "torch.manual_seed" in seeds.fix


def test_unignored_outputs_fail_gitignore_outputs(tmp_path: Path, good: HandoffReport) -> None:
    report = variant(tmp_path, good, lambda exp: (exp / ".gitignore").write_text(
        "__pycache__/\n"))
    assert failing(report) == ["gitignore_outputs"]
    outputs = check(report, "gitignore_outputs")
    assert "outputs/model.pt" in outputs.detail
    assert "outputs/train.log" in outputs.detail
    assert "add outputs/ to" in outputs.fix


def test_ignored_pyc_fails_gitignore_importable(tmp_path: Path, good: HandoffReport) -> None:
    report = variant(tmp_path, good, lambda exp: (exp / ".gitignore").write_text(
        "outputs/\n__pycache__/\n*.pyc\n"))
    assert failing(report) == ["gitignore_importable"]
    importable = check(report, "gitignore_importable")
    assert "train.pyc (by experiments/toy/.gitignore:3:*.pyc)" in importable.detail
    assert "experiments/toy/.gitignore:3:*.pyc" in importable.fix
    assert "__pycache__/" in importable.fix


def test_ignored_extension_beside_a_fixed_module_fails_gitignore_importable(
        tmp_path: Path, good: HandoffReport) -> None:
    def ops_library(exp: Path) -> None:
        (exp / "lib").mkdir()
        (exp / "lib" / "ops.py").write_text("SCALE = 1.0\n")
        with (exp / ".gitignore").open("a") as gitignore:
            gitignore.write("lib/*.so\n")

    report = variant(tmp_path, good, ops_library,
                     fixed_files=["train.py", "evaluate.py", "model.py", "lib/*.py"])
    assert failing(report) == ["gitignore_importable"]
    importable = check(report, "gitignore_importable")
    assert "lib/ops.cpython-" in importable.detail
    assert "experiments/toy/.gitignore:3:lib/*.so" in importable.fix


def test_random_eval_fails_deterministic_eval(tmp_path: Path) -> None:
    def noisy(exp: Path) -> None:
        replace_in(exp / "evaluate.py", 'print(f"val_mse={mse:.8g}")',
                   'print(f"val_mse={mse + int.from_bytes(os.urandom(4), \'big\'):.8g}")')
        replace_in(exp / "evaluate.py", "import sys", "import os\nimport sys")

    exp = make_experiment(tmp_path, noisy)
    report = run_handoff_checks(exp, settings(), log_dir=tmp_path / "logs")  # L1 runs here
    assert failing(report) == ["deterministic_eval"]
    deterministic = check(report, "deterministic_eval")
    assert "not deterministic" in deterministic.detail
    assert "eval mode" in deterministic.fix


def test_no_eval_command_fails_deterministic_eval(tmp_path: Path, good: HandoffReport) -> None:
    report = variant(tmp_path, good, eval_command=None, metric=None)
    assert failing(report) == ["deterministic_eval"]
    assert "set eval_command" in check(report, "deterministic_eval").fix


def test_slow_first_step_fails_fast_first_step(tmp_path: Path, good: HandoffReport) -> None:
    report = variant(tmp_path, good, first_step_limit_s=0.01)
    assert failing(report) == ["fast_first_step"]
    assert "limit 0.01 s" in check(report, "fast_first_step").detail


def test_ignoring_the_time_limit_fails_time_limit_honoured(tmp_path: Path,
                                                           good: HandoffReport) -> None:
    report = variant(tmp_path, good, lambda exp: replace_in(exp / "train.py", TIME_LIMIT_LINES,
                                                            ""), grace_s=6.0)
    # a grace that a loaded machine's slow start (imports, first log line) fits into
    assert failing(report) == ["time_limit_honoured"]
    honoured = check(report, "time_limit_honoured")
    assert "killed after exceeding 6.5s time limit" in honoured.detail
    assert "output tail: " in honoured.detail
    assert "step=" in honoured.detail
    assert "SPML_TIME_LIMIT" in honoured.fix


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ProtocolError, match="metric"):
        settings(metric=None)
    with pytest.raises(ProtocolError, match="time_limit_s"):
        settings(time_limit_s=0)
    with pytest.raises(ProtocolError, match="epoch_limit"):
        settings(epoch_limit=0)


def test_experiment_outside_git_is_refused(tmp_path: Path) -> None:
    exp = Path(shutil.copytree(GOOD, tmp_path / "toy"))
    with pytest.raises(GitStateError, match="git init"):
        run_handoff_checks(exp, settings())


def test_a_run_that_ignores_the_limit_but_ends_within_the_grace_still_fails(
        tmp_path: Path, good: HandoffReport) -> None:
    own_budget = ("            if time.monotonic() - started >= 4.0:  # its own budget\n"
                  "                break\n")
    report = variant(tmp_path, good, lambda exp: replace_in(exp / "train.py", TIME_LIMIT_LINES,
                                                            own_budget))
    assert failing(report) == ["time_limit_honoured"]
    detail = check(report, "time_limit_honoured").detail
    assert "after its first step, more than the limit + 2 s" in detail
