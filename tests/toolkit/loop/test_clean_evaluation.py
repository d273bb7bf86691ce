"""The evaluation's clean room (`spml.toolkit.loop.evaluation`), attacked by a researcher.

The attack, as a new user tried it: variable code imported by the fixed training compiles a
fake ``json`` module into a sourceless ``json.pyc`` beside the fixed evaluation (``*.pyc`` is
git-ignored), so ``import json`` in the evaluation loads the fake and reports a perfect loss.
Real git repositories, real subprocesses, the loop engine without Prefect.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import drive, git, model_protocol, tiny_experiment

from spml.toolkit.loop.evaluation import is_importable, read_metric_file

TRAIN = "import model\nmodel.train()\n"
EVALUATE = ("import json\nwith open('outputs/result.json') as fh:\n"
            "    print(f\"loss={json.load(fh)['loss']}\")\n")
HONEST_MODEL = ("import json, os\ndef train():\n    os.makedirs('outputs', exist_ok=True)\n"
                "    json.dump({'loss': X}, open('outputs/result.json', 'w'))\n")
FORGING_MODEL = HONEST_MODEL + '''
import py_compile, tempfile
def _forge():
    source = tempfile.mkdtemp() + "/json.py"
    with open(source, "w") as fh:
        fh.write("def load(fh):\\n    return {'loss': 0.0}\\n")
    py_compile.compile(source, cfile="json.pyc")  # sourceless, beside evaluate.py
_forge()
'''
RESEARCHER = '''import os, pathlib, sys
work = pathlib.Path(os.environ["SPML_WORKDIR"])
(work / "model.py").write_text(pathlib.Path(sys.argv[1]).read_text())
pathlib.Path(os.environ["SPML_STRATEGY_FILE"]).write_text("a faster model\\n")
'''


def _experiment(tmp_path: Path, candidate: str, eval_command: str = "") -> Path:
    (tmp_path / "candidate.py").write_text(candidate.replace("X", "4.0"))
    (tmp_path / "researcher.py").write_text(RESEARCHER)
    return tiny_experiment(tmp_path / "repo", {
        "train.py": TRAIN, "evaluate.py": EVALUATE, "model.py": HONEST_MODEL.replace("X", "9.0"),
        ".gitignore": "outputs/\n*.pyc\n__pycache__/\n"}, model_protocol(tmp_path, eval_command))


def test_a_sourceless_pyc_shadowing_the_evaluation_is_never_committed(tmp_path):
    exp = _experiment(tmp_path, FORGING_MODEL)
    ledger = drive(exp)
    row = ledger.rows[1]
    assert (row.compliance, row.verdict) == ("fail", "rolled_back")
    assert "training wrote importable file json.pyc" in row.note + row.insight
    assert row.result is None  # the forged loss never reached the ledger
    assert ledger.kept_rounds() == [0]
    # kept only as a rolled-back attempt (refs/spml/attempts), never on a branch
    assert "round 1" not in git(exp, "log", "--branches", "--format=%s")
    assert "compliance: training wrote importable file json.pyc" in git(
        exp, "log", "--all", "--format=%s")


def test_an_honest_change_still_counts(tmp_path):
    exp = _experiment(tmp_path, HONEST_MODEL)
    ledger = drive(exp)
    assert ledger.kept_rounds() == [0, 1]
    assert ledger.best_value == pytest.approx(4.0)


METRIC_FILE_EVAL = ("import json, os\nloss = json.load(open('outputs/result.json'))['loss']\n"
                    "json.dump({'loss': loss}, open(os.environ['SPML_METRIC_FILE'], 'w'))\n"
                    "print('loss=0.0')  # what variable code could print: not read\n")


def test_the_metric_file_wins_over_stdout(tmp_path):
    exp = _experiment(tmp_path, HONEST_MODEL, f"{sys.executable} evaluate_file.py")
    (exp / "evaluate_file.py").write_text(METRIC_FILE_EVAL)
    git(exp.parent, "add", "-A")
    git(exp.parent, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "eval")
    ledger = drive(exp)  # stdout says 0.0 every time; the file says 9 then 4
    assert [row.result for row in ledger.rows] == [pytest.approx(9.0), pytest.approx(4.0)]


PRINTING_MODEL = HONEST_MODEL + "print('loss=0.0')  # in the evaluation too, once imported\n"
IMPORTING_EVAL = "import model  # variable code runs inside the evaluation\n" + METRIC_FILE_EVAL


def test_a_metric_line_printed_by_variable_code_in_the_evaluation_is_not_read(tmp_path, caplog):
    exp = _experiment(tmp_path, PRINTING_MODEL, f"{sys.executable} evaluate_file.py")
    (exp / "evaluate_file.py").write_text(IMPORTING_EVAL)
    git(exp.parent, "add", "-A")
    git(exp.parent, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "eval")
    ledger = drive(exp)
    assert "imports variable file(s) model.py" in caplog.text  # warned before the rounds
    assert [row.result for row in ledger.rows] == [pytest.approx(9.0), pytest.approx(4.0)]
    assert "loss=0.0" in (exp / ".spml/autoresearch/rounds/0001/eval-0.stdout.log").read_text()


@pytest.mark.parametrize(("path", "importable"), [
    ("exp/json.pyc", True), ("exp/fast.so", True), ("exp/x.pth", True),
    ("exp/__pycache__/model.cpython-311.pyc", True), ("exp/sitecustomize.py", True),
    ("exp/outputs/result.json", False), ("exp/ckpt.pt", False)])
def test_what_counts_as_importable(path, importable):
    assert is_importable(path) is importable


def test_read_metric_file(tmp_path):
    path = tmp_path / "m.json"
    assert read_metric_file(path) is None
    path.write_text('{"loss": 1.5, "acc": 1}')
    assert read_metric_file(path) == {"loss": 1.5, "acc": 1.0}
    for bad, reason in (("[1]", "holds a list"), ('{"loss": NaN}', "not a finite number"),
                        ('{"loss": true}', "not a finite number"), ("{", "not JSON")):
        path.write_text(bad)
        with pytest.raises(ValueError, match=reason):
            read_metric_file(path)


SCRATCH_EVAL = ("import json, os\nloss = json.load(open('outputs/result.json'))['loss']\n"
                "print(f'loss={100.0 if os.path.exists(\"scratch.tmp\") else loss}')\n")


@pytest.mark.parametrize(("outputs", "baseline"), [([], 100.0), (["outputs/*"], 9.0)])
def test_declared_outputs_are_all_the_evaluation_sees(tmp_path, outputs, baseline):
    exp = _experiment(tmp_path, HONEST_MODEL, f"{sys.executable} evaluate_scratch.py")
    (exp / "evaluate_scratch.py").write_text(SCRATCH_EVAL)
    (exp / "train.py").write_text(TRAIN + "open('scratch.tmp', 'w').write('left over')\n")
    (exp / ".gitignore").write_text("outputs/\n*.pyc\n__pycache__/\n*.tmp\n")
    protocol = (exp / "autoresearch-protocol.md").read_text()
    (exp / "autoresearch-protocol.md").write_text(protocol.replace(
        "  time_limit: 10\n", f"  time_limit: 10\n  outputs: {outputs}\n"))
    git(exp.parent, "add", "-A")
    git(exp.parent, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "scratch")
    ledger = drive(exp, max_rounds=0)
    assert ledger.rows[0].result == pytest.approx(baseline)


def test_the_preflight_warns_when_the_evaluation_imports_variable_code(tmp_path, caplog):
    from spml.toolkit.loop.evaluation import evaluation_imports

    exp = _experiment(tmp_path, HONEST_MODEL, f"{sys.executable} evaluate_model.py")
    (exp / "evaluate_model.py").write_text(
        "from helpers import score\nprint(f\"loss={score()}\")\n")
    (exp / "helpers").mkdir()
    (exp / "helpers" / "__init__.py").write_text("from .metrics import score\n")
    (exp / "helpers" / "metrics.py").write_text("import model\ndef score():\n    return 1\n")
    assert evaluation_imports(exp, f"{sys.executable} evaluate_model.py") == [
        "helpers/__init__.py", "helpers/metrics.py", "model.py"]
    assert evaluation_imports(exp, f"{sys.executable} evaluate.py") == []
    git(exp.parent, "add", "-A")
    git(exp.parent, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "eval")
    with caplog.at_level("WARNING"):
        drive(exp, max_rounds=0)
    assert "the fixed evaluation imports variable file(s) model.py" in caplog.text


def test_a_metric_file_that_is_a_link_is_refused(tmp_path):
    (tmp_path / "elsewhere.json").write_text('{"loss": 0.0}')
    link = tmp_path / "metrics.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ValueError, match="symbolic link"):
        read_metric_file(link)
    link.unlink()
    link.hardlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ValueError, match="hard link"):
        read_metric_file(link)
