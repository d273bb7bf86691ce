"""`spml validate`: exit codes 0/1/2, text and JSON output, explain, list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spml.cli import app
from spml.toolkit.checks import CHECKS

runner = CliRunner()
BAD = "from torch.utils.data import DataLoader\nloader = DataLoader(ds, num_workers=0)\n"
GOOD = "from torch.utils.data import DataLoader\nloader = DataLoader(ds, num_workers=4)\n"


def test_exit_1_on_a_critical_finding_with_the_finding_line(tmp_path: Path,
                                                            monkeypatch) -> None:
    (tmp_path / "train.py").write_text(BAD)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # outside the working dir: absolute paths
    result = runner.invoke(app, ["validate", "static", str(tmp_path), "--select", "L0-06",
                                 "--profile", "spml"])
    assert result.exit_code == 1
    assert f"{tmp_path / 'train.py'}:2:10 L0-06 [critical] DataLoader loads" in result.output
    assert "Verdict: REQUEST_CHANGES" in result.output


def test_exit_0_without_critical_findings_and_json_fields(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(GOOD)
    result = runner.invoke(app, ["validate", "static", str(tmp_path), "--format", "json",
                                 "--select", "L0-06,L0-09"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [c["id"] for c in data["checks"]] == ["L0-06", "L0-09"]
    assert data["critical"] == 0


def test_exit_2_on_usage_errors(tmp_path: Path) -> None:
    assert runner.invoke(app, ["validate", "static", str(tmp_path / "nope")]).exit_code == 2
    (tmp_path / "t.py").write_text("x = 1\n")
    unknown = runner.invoke(app, ["validate", "static", str(tmp_path), "--ignore", "L0-77"])
    assert unknown.exit_code == 2
    assert "unknown check id 'L0-77'" in unknown.output
    (tmp_path / "t.py").write_text("def f(:\n")
    broken = runner.invoke(app, ["validate", "static", str(tmp_path)])
    assert broken.exit_code == 2
    assert "syntax error" in broken.output
    assert "Traceback" not in broken.output
    assert runner.invoke(app, ["validate", "static", str(tmp_path), "--format", "xml"]
                         ).exit_code == 2


def test_explain_prints_the_doc_and_list_shows_every_check() -> None:
    result = runner.invoke(app, ["validate", "explain", "l0-06"])
    assert result.exit_code == 0
    assert result.output.startswith(
        "L0-06 dataloader-workers (warning (default profile), critical (spml profile))")
    assert "## Use instead" in result.output
    assert runner.invoke(app, ["validate", "explain", "L0-99"]).exit_code == 2
    listing = runner.invoke(app, ["validate", "list"], terminal_width=200).output
    assert all(check.id in listing for check in CHECKS)
    row = next(line for line in listing.splitlines() if "L0-06" in line)
    assert "warning" in row
    assert "critical" in row
    assert row.index("warning") < row.index("critical")  # default column before spml


def test_the_default_profile_does_not_block_on_policy(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(BAD)
    default = runner.invoke(app, ["validate", "static", str(tmp_path), "--select", "L0-06"])
    assert default.exit_code == 0, default.output
    assert "Verdict: COMMENT" in default.output
    (tmp_path / "pyproject.toml").write_text('[tool.spml.validate]\nprofile = "spml"\n')
    configured = runner.invoke(app, ["validate", "static", str(tmp_path), "--select", "L0-06"])
    assert configured.exit_code == 1
    overridden = runner.invoke(app, ["validate", "static", str(tmp_path), "--select", "L0-06",
                                     "--profile", "default"])
    assert overridden.exit_code == 0


def test_console_script_runs_as_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(BAD)
    done = subprocess.run([sys.executable, "-m", "spml", "validate", "static", "train.py",
                           "--select", "L0-06", "--profile", "spml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.startswith("train.py:2:10 L0-06 ")


def test_pre_commit_hook_analyses_the_whole_project(tmp_path: Path, monkeypatch) -> None:
    import shlex

    import yaml

    (hook,) = yaml.safe_load((Path(__file__).parents[2] / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "spml-validate"
    assert hook["types"] == ["python"]
    assert hook["pass_filenames"] is False
    (tmp_path / "train.py").write_text(BAD)
    monkeypatch.chdir(tmp_path)  # pre-commit runs hooks from the repository root
    argv = [*shlex.split(hook["entry"]), *hook["args"]]
    assert argv[0] == "spml"
    result = runner.invoke(app, [*argv[1:], "--select", "L0-06", "--profile", "spml"])
    assert result.exit_code == 1
    assert "Verdict" not in result.output
    assert result.output.startswith("train.py:2:10 L0-06 ")


ENTRY = Path(__file__).parents[1] / "fixtures" / "l1" / "entry"
EXAMPLE = Path(__file__).parents[2] / "examples" / "regression"


def _entry_project(tmp_path: Path, *modules: str) -> Path:
    import shutil

    for module in ("good", *modules):
        shutil.copy(ENTRY / f"{module}.py", tmp_path / f"{module}.py")
    return tmp_path


def test_runtime_passes_the_bundled_example_with_its_own_config(tmp_path: Path) -> None:
    # examples/regression/pyproject.toml holds [tool.spml.validate.runtime]: the fixed
    # train/eval commands limited through SPML_MAX_STEPS; L0 runs first and has no critical.
    done = subprocess.run([sys.executable, "-m", "spml", "validate", "runtime", str(EXAMPLE),
                           "--max-steps", "30", "--log-dir", str(tmp_path), "--format", "json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is True
    assert [s["status"] for s in report["stages"]] == ["PASS"] * 6
    assert (tmp_path / "checkpoints" / "model.pt").is_file()


def test_runtime_entry_point_pass_and_a_planted_defect(tmp_path: Path) -> None:
    project = _entry_project(tmp_path, "zero_lr")
    good = runner.invoke(app, ["validate", "runtime", str(project), "--entry", "good:l1_entry",
                               "--max-steps", "40"])
    assert good.exit_code == 0, good.output
    assert "RESULT: PASS (6/6 stages)" in good.output
    bad = runner.invoke(app, ["validate", "runtime", str(project), "--entry",
                              "zero_lr:l1_entry", "--max-steps", "40"])
    assert bad.exit_code == 1
    assert "[Training]       FAIL" in bad.output
    assert "parameters did not move: drift 0" in bad.output


def test_runtime_is_refused_when_l0_has_a_critical_finding(tmp_path: Path) -> None:
    project = _entry_project(tmp_path)
    (project / "loader.py").write_text(BAD)
    (project / "pyproject.toml").write_text('[tool.spml.validate]\nprofile = "spml"\n')
    result = runner.invoke(app, ["validate", "runtime", str(project), "--entry",
                                 "good:l1_entry"])
    assert result.exit_code == 1
    assert "L0-06" in result.output
    assert "L1 refused: L0 has 1 critical finding(s)" in result.output
    assert "L1 Runtime Validation Report" not in result.output


def test_runtime_configuration_errors_exit_2(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["validate", "runtime", str(tmp_path)])
    assert missing.exit_code == 2
    assert "L1 is not configured" in missing.output
    (tmp_path / "pyproject.toml").write_text(
        '[tool.spml.validate.runtime]\ntrain-command = "python t.py"\nmax-steps = 0\n')
    bad = runner.invoke(app, ["validate", "runtime", str(tmp_path)])
    assert bad.exit_code == 2
    assert "max-steps" in bad.output or "max_steps" in bad.output
    both = runner.invoke(app, ["validate", "runtime", str(tmp_path), "--entry", "m:f",
                               "--max-steps", "5"])
    assert both.exit_code == 2
    assert "exactly one of entry" in both.output


def test_sigterm_to_spml_stops_the_training_run_it_started(tmp_path: Path) -> None:
    # Review repro: `timeout`, CI cancellation and `docker stop` send SIGTERM; the training
    # group (and its own children) must not outlive spml.
    import signal
    import time

    marker = f"{os.getpid() % 1000 + 1000}.5"  # a sleep length unique to this test run
    (tmp_path / "slow.py").write_text(
        "import subprocess, time\nprint('max_steps=5', flush=True)\n"
        f"subprocess.Popen(['sleep', '{marker}'])\ntime.sleep(600)\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.spml.validate.runtime]\ntrain-command = "python slow.py"\nmax-steps = 5\n')
    proc = subprocess.Popen([sys.executable, "-m", "spml", "validate", "runtime", str(tmp_path),
                             "--no-static"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _running(f"sleep {marker}"):
        time.sleep(0.2)
    assert _running(f"sleep {marker}"), "the training run never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted (signal 15)" in err
    assert not _running(f"sleep {marker}")
    assert not _running(str(tmp_path / "slow.py"))
    assert not _running("python slow.py")


def _running(pattern: str) -> bool:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return bool(found.stdout.strip())


def test_runtime_settings_edge_cases(tmp_path: Path) -> None:
    from spml.errors import ProtocolError
    from spml.protocols.validate import RuntimeSettings
    from spml.toolkit.runtime.run import load_runtime_settings, thresholds_of

    missing = runner.invoke(app, ["validate", "runtime", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "no such folder" in " ".join(missing.output.split())
    settings = RuntimeSettings.model_validate({"entry": "m:f", "thresholds": {
        "inference_passes": 5, "grad_exploding": 1e4}})
    thresholds = thresholds_of(settings)
    assert thresholds.inference_passes == 5
    assert isinstance(thresholds.inference_passes, int)
    assert thresholds.grad_exploding == 1e4
    bad = RuntimeSettings.model_validate({"entry": "m:f", "thresholds": {"inference_passes": 2.5}})
    with pytest.raises(ProtocolError, match="inference_passes must be a whole number"):
        thresholds_of(bad)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.spml.validate.runtime]\nentry = "m:f"\nmax-steps = 7\n')
    assert load_runtime_settings(tmp_path, {"max_steps": 9}).max_steps == 9


def test_one_unparsable_file_is_a_finding_and_the_rest_is_analysed(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(BAD)
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "old.py").write_text("print 'py2'\n")
    result = runner.invoke(app, ["validate", "static", str(tmp_path), "--format", "json",
                                 "--profile", "spml"])
    assert result.exit_code == 1  # train.py was still analysed: its L0-06 finding counts
    data = json.loads(result.output)
    by_id = {f["id"]: f for f in data["findings"]}
    assert by_id["L0-00"]["severity"] == "warning"
    assert by_id["L0-00"]["path"].endswith("legacy/old.py")
    assert "L0-06" in by_id
    skipped = runner.invoke(app, ["validate", "static", str(tmp_path), "--format", "json",
                                  "--exclude", "legacy/"])
    assert "L0-00" not in {f["id"] for f in json.loads(skipped.output)["findings"]}
    (tmp_path / "pyproject.toml").write_text('[tool.spml.validate]\nexclude = ["old.py"]\n')
    configured = runner.invoke(app, ["validate", "static", str(tmp_path), "--format", "json"])
    assert "L0-00" not in {f["id"] for f in json.loads(configured.output)["findings"]}
    # When no file parses, nothing was analysed: that is an error, not a pass.
    (tmp_path / "train.py").write_text("def f(:\n")
    (tmp_path / "pyproject.toml").unlink()
    nothing = runner.invoke(app, ["validate", "static", str(tmp_path)])
    assert nothing.exit_code == 2
    assert "no file under the given paths parses" in " ".join(nothing.output.split())
