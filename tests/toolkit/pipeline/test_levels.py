"""The develop levels on real code: pytest in a subprocess, L0 with SPML's profile."""

from __future__ import annotations

import shutil
from pathlib import Path

from spml.toolkit.pipeline.levels import run_static, run_tests

SOLUTIONS = (Path(__file__).resolve().parents[3] / "examples" / "pipeline" / "implementer"
             / "solutions")


def test_passing_failing_and_missing_tests(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "tests" / "test_calc.py").write_text(
        "from calc import add\n\ndef test_add():\n    assert add(1, 2) == 3\n\n"
        "def test_more():\n    assert add(2, 2) == 4\n")
    passed = run_tests(tmp_path, ["tests/test_calc.py"], tmp_path / "log")
    assert passed.passed
    assert passed.summary == "2 tests passing"
    assert passed.data == {"passed": 2, "targets": ["tests/test_calc.py"]}
    (tmp_path / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    failed = run_tests(tmp_path, ["tests/test_calc.py"], tmp_path / "log")
    assert not failed.passed
    assert failed.summary == "2 failing, 0 passing"
    assert "assert -1 == 3" in failed.report
    missing = run_tests(tmp_path, ["tests/test_other.py"])
    assert not missing.passed
    assert "tests/test_other.py" in missing.summary
    assert not run_tests(tmp_path, []).passed


def test_l0_fails_the_integration_draft_and_passes_the_fix(tmp_path):
    for folder in ("1", "2", "3-draft"):
        shutil.copytree(SOLUTIONS / folder, tmp_path, dirs_exist_ok=True)
    draft = run_static(tmp_path)
    assert not draft.passed
    assert draft.data["critical"] == 1
    assert "L0-20 [critical]" in draft.report
    shutil.copy(SOLUTIONS / "3" / "train.py", tmp_path / "train.py")
    fixed = run_static(tmp_path)
    assert fixed.passed
    assert fixed.summary.startswith("0 critical")


def test_a_failed_l1_carries_spmls_diagnosis_for_the_implementer(tmp_path):
    from spml.toolkit.pipeline.levels import run_runtime

    (tmp_path / "train.py").write_text(
        "import json, os\n"
        "steps = int(os.environ['SPML_MAX_STEPS'])\n"
        "print(f'max_steps={steps}', flush=True)\n"
        "with open(os.environ['SPML_METRICS_FILE'], 'a') as fh:\n"
        "    for step in range(1, steps + 1):\n"
        "        fh.write(json.dumps({'step': step, 'loss': 2.0, 'grad_norm': 1.0}) + '\\n')\n")
    (tmp_path / "pyproject.toml").write_text(
        "[tool.spml.validate.runtime]\ntrain-command = \"python train.py\"\nmax-steps = 20\n")
    result = run_runtime(tmp_path, None, tmp_path / "l1")
    assert not result.passed
    assert "Diagnostics (SPML's trees):" in result.report
    assert "the loss is flat" in result.report
