"""The engine around the checks: selection, suppression, config, errors, report formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spml.errors import ProtocolError
from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks import CHECKS, UnknownCheck
from spml.toolkit.checks._base import Check
from spml.toolkit.checks.engine import _run_one, analyse, validate_static
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import Project, SourceError
from spml.toolkit.checks.report import render_json, render_markdown, render_text

LOADER = """import torch
from torch.utils.data import DataLoader
device = "cuda"
loader = DataLoader(dataset, batch_size=8){comment}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def ids(report) -> list[str]:
    return [f.id for f in report.findings]


def test_findings_are_sorted_and_carry_every_field(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "b.py", LOADER.format(comment=""))
    write(tmp_path, "a.py", LOADER.format(comment=""))
    report = analyse([Path(".")], ValidateConfig(select=["L0-06"], profile="spml"))
    assert [f.path for f in report.findings] == ["a.py", "b.py"]  # one per DataLoader
    data = json.loads(render_json(report))
    assert set(data["findings"][0]) == {"id", "severity", "path", "line", "col", "message",
                                        "fix"}
    assert data["findings"][0]["severity"] == "critical"
    assert data["findings"][0]["line"] == 4
    assert data["verdict"] == "REQUEST_CHANGES"
    assert data["critical"] == 2
    assert data["findings"][0]["message"] == (
        "DataLoader loads in the main process (num_workers is 0) and without pin_memory=True "
        "in a CUDA project")


@pytest.mark.parametrize(("comment", "suppressed"), [
    ("  # spml: ignore[L0-06]", True), ("  # spml: ignore", True),
    ("  # spml: ignore[L0-09, l0-06]", True), ("  # spml: ignore[L0-09]", False)])
def test_inline_ignore_comment(tmp_path: Path, comment: str, suppressed: bool) -> None:
    path = write(tmp_path, "train.py", LOADER.format(comment=comment))
    report = analyse([path], ValidateConfig(select=["L0-06"]))
    assert (ids(report) == []) is suppressed


def test_select_ignore_and_per_file_ignores_from_pyproject(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[tool.spml.validate]\nselect = ["L0-06", "L0-19"]\n'
          'per-file-ignores = {"legacy/*.py" = ["L0-06"]}\n')
    write(tmp_path, "src/train.py", LOADER.format(comment=""))
    write(tmp_path, "legacy/old.py", LOADER.format(comment=""))
    report = validate_static([tmp_path])
    assert {r.check.id for r in report.results} == {"L0-06", "L0-19"}
    assert {Path(f.path).name for f in report.findings} == {"train.py"}
    only_19 = validate_static([tmp_path], ignore=["L0-06"])
    assert {r.check.id for r in only_19.results} == {"L0-19"}
    assert validate_static([tmp_path], select=["L0-09"]).results[0].check.id == "L0-09"


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[tool.spml.validate]\nselect = ["L0-6"]\n')
    write(tmp_path, "train.py", "x = 1\n")
    with pytest.raises(ProtocolError, match=r"select: 'L0-6' is not a check id"):
        validate_static([tmp_path / "train.py"])
    write(tmp_path, "pyproject.toml", '[tool.spml.validate]\nselcet = ["L0-06"]\n')
    with pytest.raises(ProtocolError, match="selcet: Extra inputs are not permitted"):
        validate_static([tmp_path])


def test_unknown_id_on_the_command_line(tmp_path: Path) -> None:
    write(tmp_path, "train.py", "x = 1\n")
    with pytest.raises(UnknownCheck, match="L0-99"):
        validate_static([tmp_path], select=["L0-99"])


def test_unparsable_and_missing_input_are_clear_errors(tmp_path: Path) -> None:
    write(tmp_path, "broken.py", "def f(:\n")
    with pytest.raises(SourceError, match=r"broken\.py:1:\d+: syntax error"):
        analyse([tmp_path])
    with pytest.raises(SourceError, match="no such file"):
        analyse([tmp_path / "missing.py"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no Python files"):
        analyse([empty])


def test_virtualenvs_and_hidden_folders_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "train.py", "x = 1\n")
    write(tmp_path, ".venv/lib/site.py", "x = 1\n")
    write(tmp_path, ".hidden/x.py", "x = 1\n")
    assert [Path(f).name for f in analyse([tmp_path]).files] == ["train.py"]


def test_not_applicable_checks_are_reported_not_found(tmp_path: Path) -> None:
    path = write(tmp_path, "util.py", "def add(a, b):\n    return a + b\n")
    report = analyse([path], ValidateConfig(select=["L0-06", "L0-19"]))
    # No DataLoader: L0-06 does not apply. No training loop: L0-19 checked nothing, which is
    # said as such (UNCHECKED), never read as a pass.
    assert [r.status for r in report.results] == ["N/A", "UNCHECKED"]
    assert report.findings == []
    assert (report.training_loop, report.verdict) == (False, "COMMENT")
    text = render_text(report)
    assert "[N/A]   L0-06 dataloader-workers (warning) — no DataLoader" in text
    assert "[UNCHECKED] L0-19 loss-not-written (warning) — could not run" in text
    assert "1 checks could not run (L0-19)" in text
    data = json.loads(render_json(report))
    assert (data["training_loop"], data["unchecked"]) == (False, ["L0-19"])
    assert [c["status"] for c in data["checks"]] == ["N/A", "UNCHECKED"]


class Exploding(Check):
    id = "L0-98"
    name = "exploding"
    severity = "warning"
    message = "never"
    fix = "never"

    def run(self, facts):
        raise KeyError("boom")


def test_a_crashing_check_is_an_error_not_a_pass(tmp_path: Path) -> None:
    path = write(tmp_path, "t.py", "x = 1\n")
    facts = Facts(Project.load([path]))
    result = _run_one(Exploding(), facts, ValidateConfig(), None)
    assert result.status == "ERROR"
    assert "KeyError" in result.reason


def test_text_and_markdown_summaries(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "train.py", LOADER.format(comment=""))
    report = analyse([Path("train.py")], ValidateConfig(profile="spml"))
    text = render_text(report)
    first = ("train.py:4:10 L0-06 [critical] DataLoader loads in the main process (num_workers "
             "is 0) and without pin_memory=True in a CUDA project")
    assert f"{first}\n  fix: Pass" in text
    finding_lines = [line for line in text.splitlines() if line.startswith("train.py:")]
    assert finding_lines == sorted(finding_lines, key=lambda x: tuple(
        int(n) for n in x.split(" ")[0].split(":")[1:3]))
    lines = text.splitlines()
    summary = lines[lines.index(next(x for x in lines if x.startswith("ML Static"))):]
    statuses = [line.split()[0] for line in summary[1:len(CHECKS) + 1]]
    assert statuses == sorted(statuses, key=["[ERROR]", "[FAIL]", "[UNCHECKED]", "[PASS]",
                                             "[N/A]"].index)
    assert summary[-1] == "Verdict: REQUEST_CHANGES"
    markdown = render_markdown(report)
    assert markdown.startswith("# L0 static checks: REQUEST_CHANGES")
    assert "| `train.py:4:10` | L0-06 | critical |" in markdown


def test_imported_local_modules_are_analysed_and_reported_on(tmp_path: Path,
                                                            monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "data.py", LOADER.format(comment=""))
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/steps.py", "def train_step(m, x):\n    loss = m(x)\n"
          "    loss.backward()\n    return loss.item()\n")
    write(tmp_path, "train.py", "from data import loader\nfrom pkg.steps import train_step\n"
          "for x in loader:\n    loss = train_step(model, x)\n    print(loss)\n")
    project = Project.load([Path("train.py")])
    assert [(Path(f.display).as_posix(), f.context) for f in project.files] == [
        ("data.py", True), ("pkg/__init__.py", True), ("pkg/steps.py", True),
        ("train.py", False)]
    report = analyse([Path("train.py")], ValidateConfig(select=["L0-06", "L0-19"]))
    assert report.files == ["train.py"]
    assert report.context_files == 3
    # L0-19 follows the loss out of pkg/steps.py back into train.py's print, and the
    # DataLoader train.py imports from data.py is reported there: a pre-commit run on a
    # staged train.py must not PASS the loader it uses.
    assert [(f.id, f.path, f.line) for f in report.findings] == [
        ("L0-06", "data.py", 4), ("L0-19", "train.py", 5)]
    assert "+ 3 they import" in render_text(report)


def test_ignore_all_and_test_files_and_venvs(tmp_path: Path) -> None:
    write(tmp_path, "train.py", LOADER.format(comment=""))
    write(tmp_path, "tests/test_model.py", "import torch\nloss.backward()\n")
    write(tmp_path, "env/pyvenv.cfg", "home = /usr\n")
    write(tmp_path, "env/lib/site.py", "x = 1\n")
    report = analyse([tmp_path])
    assert [Path(f).name for f in report.files] == ["train.py"]
    assert analyse([tmp_path], ValidateConfig(ignore=["ALL"])).results == []
    named = analyse([tmp_path / "tests" / "test_model.py"])
    assert [Path(f).name for f in named.files] == ["test_model.py"]


def test_encoding_cookie_bom_and_self_named_base_class(tmp_path: Path) -> None:
    (tmp_path / "latin.py").write_bytes("# -*- coding: latin-1 -*-\nname = 'caf\xe9'\n"
                                        .encode("latin-1"))
    (tmp_path / "bom.py").write_bytes(b"\xef\xbb\xbfx = 1\n")
    # `class SFTTrainer(trl.SFTTrainer)` once made the method lookup loop forever.
    write(tmp_path, "trainer.py", "import trl\nclass SFTTrainer(trl.SFTTrainer):\n    pass\n"
          "trainer = SFTTrainer()\nfor _ in range(3):\n    trainer.train()\n")
    report = analyse([tmp_path])
    assert len(report.files) == 3
    assert not report.errors


def test_the_default_profile_makes_policy_checks_warnings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "train.py", LOADER.format(comment=""))
    default = analyse([Path("train.py")], ValidateConfig(select=["L0-06"]))
    assert {f.severity for f in default.findings} == {"warning"}
    assert (default.critical, default.verdict) == (0, "COMMENT")
    assert "(warning)" in render_text(default)
    spml = analyse([Path("train.py")], ValidateConfig(select=["L0-06"], profile="spml"))
    assert {f.severity for f in spml.findings} == {"critical"}
    assert spml.verdict == "REQUEST_CHANGES"


def test_policy_checks_are_exactly_the_mandatory_practices() -> None:
    policy = {c.id for c in CHECKS if c.policy}
    assert policy == {"L0-03", "L0-06", "L0-19", "L0-20", "L0-24"}
    assert all(c.severity_in("spml") == c.severity for c in CHECKS)
    critical_by_default = {c.id for c in CHECKS if c.severity_in("default") == "critical"}
    assert critical_by_default == {"L0-01", "L0-02", "L0-04", "L0-05", "L0-27", "L0-28",
                                   "L0-32"}


def test_symlink_loops_and_dangling_links_never_crash_the_run(tmp_path: Path) -> None:
    write(tmp_path, "train.py", "x = 1\n")
    (tmp_path / "a.py").symlink_to(tmp_path / "b.py")
    (tmp_path / "b.py").symlink_to(tmp_path / "a.py")
    (tmp_path / "gone.py").symlink_to(tmp_path / "missing.py")
    report = analyse([tmp_path])  # the folder: each bad link is an L0-00 finding of its own
    bad = [f for f in report.findings if f.id == "L0-00"]
    assert sorted(Path(f.path).name for f in bad) == ["a.py", "b.py", "gone.py"]
    # named for what it is, not a syntax error
    assert all(f.message.startswith("file cannot be read, so none of its code was checked ("
                                    "cannot read: ") for f in bad)
    assert all(f.fix.startswith("Remove or repair the link") for f in bad)
    assert "train.py" in {Path(f).name for f in report.files}
    for named in ("a.py", "gone.py"):  # named on the command line: a clear error
        with pytest.raises(SourceError, match="cannot read: a symlink loop or a dangling link"):
            validate_static([tmp_path / named])
