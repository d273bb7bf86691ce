"""L0 on real code (issue 10): public PyTorch training projects copied verbatim, and planted bugs.

``tests/fixtures/projects/corpus/<project>/clean/`` holds unmodified files of a public,
permissively licensed training project (``<project>/SOURCE.md``: upstream URL, commit, licence).
``<project>/bugs/<name>/bug.patch`` is ONE edit of ``clean/`` that plants a correctness bug (the
test applies it to a copy of ``clean/``); its one-line ``BUG.md`` reads ``<check id>
<path>:<line>[-<line>] — <what was changed>``, the place where the default profile should
report the bug.

* Clean projects: the default profile's critical findings are pinned (today none: every
  project is believed correct and the analyser agrees; a false positive would be listed here
  with the reason). A new critical finding on real, working code is a diff to review.
* Planted bugs: the expected id must come out as critical, in the named file, inside the named
  lines. A bug the analyser misses today is ``xfail(strict=True)`` with the reason, so the
  gap stays documented and the test turns red when the gap is closed (then drop the mark).
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks.engine import Report, analyse

CORPUS = Path(__file__).parents[2] / "fixtures" / "projects" / "corpus"
PROJECTS = sorted(p.name for p in CORPUS.iterdir() if (p / "clean").is_dir())
BUGS = sorted(f"{b.parent.parent.name}/{b.name}" for b in CORPUS.glob("*/bugs/*")
              if (b / "bug.patch").is_file())

# Critical findings (default profile) on each clean project, as "path:line ID". All reviewed
# by reading the code; a false positive would carry a "# FP: <reason>" comment.
CLEAN_CRITICAL: dict[str, list[str]] = {
    "accelerate_nlp": [],
    "examples_dcgan": [],
    "examples_imagenet": [],
    "examples_mnist": [],
    "examples_word_lm": [],
    "mingpt": [],
    "nanochat": [],
    "nanogpt": [],
    "timm_train": [],
}

# Whether the analyser finds a training loop (if not, L0-22/26/27/32 are UNCHECKED). Every
# project of the corpus has one found today (timm: backward through a closure in the loop body).
NO_TRAINING_LOOP: set[str] = set()

# Planted bugs the analyser does not report today, and why.
MISSED: dict[str, str] = {}

BUG_LINE = re.compile(r"^(L0-\d\d) (\S+?):(\d+)(?:-(\d+))? ")


def bug_dir(bug: str) -> Path:
    project, _, name = bug.partition("/")
    return CORPUS / project / "bugs" / name


def buggy_copy(bug: str, tmp_path: Path) -> Path:
    """``clean/`` with the bug's patch applied, in a fresh folder."""
    copy = tmp_path / bug.replace("/", "-")
    shutil.copytree(CORPUS / bug.partition("/")[0] / "clean", copy)
    subprocess.run(["git", "apply", "--unsafe-paths", str(bug_dir(bug) / "bug.patch")],
                   cwd=copy, check=True, capture_output=True)
    return copy


def run(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Report:
    monkeypatch.chdir(folder)  # finding paths relative to the project, as in BUG.md
    report = analyse([Path(".")], ValidateConfig(profile="default"))
    assert not report.errors, [(r.check.id, r.reason) for r in report.errors]
    return report


def critical(report: Report) -> list[str]:
    return [f"{f.path}:{f.line} {f.id}" for f in report.findings if f.severity == "critical"]


def test_corpus_is_complete() -> None:
    assert len(PROJECTS) >= 6
    assert sorted(CLEAN_CRITICAL) == PROJECTS
    assert set(MISSED) <= set(BUGS), set(MISSED) - set(BUGS)
    for project in PROJECTS:
        assert (CORPUS / project / "SOURCE.md").is_file(), project
    planted = {BUG_LINE.match((bug_dir(b) / "BUG.md").read_text()).group(1) for b in BUGS}
    # one planted bug (at least) per critical check of the default profile
    assert {"L0-01", "L0-02", "L0-04", "L0-05", "L0-27", "L0-28", "L0-32"} <= planted


@pytest.mark.parametrize("project", PROJECTS)
def test_clean_project_critical_findings_are_pinned(project: str, monkeypatch) -> None:
    report = run(CORPUS / project / "clean", monkeypatch)
    assert critical(report) == CLEAN_CRITICAL[project]
    assert report.training_loop == (project not in NO_TRAINING_LOOP)


@pytest.mark.parametrize("bug", BUGS)
def test_bug_copy_is_one_edit_of_clean(bug: str, tmp_path: Path) -> None:
    clean, copy = CORPUS / bug.partition("/")[0] / "clean", buggy_copy(bug, tmp_path)
    files = {p.relative_to(clean) for p in clean.rglob("*.py")}
    assert {p.relative_to(copy) for p in copy.rglob("*.py")} == files
    changed = [f for f in files if (clean / f).read_text() != (copy / f).read_text()]
    assert len(changed) == 1, changed
    before = (clean / changed[0]).read_text().splitlines()
    after = (copy / changed[0]).read_text().splitlines()
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    edits = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    assert 1 <= len(edits) <= 2, edits  # one change, or one moved block (delete + insert)


@pytest.mark.parametrize("bug", [pytest.param(b, marks=pytest.mark.xfail(
    strict=True, reason=MISSED[b])) if b in MISSED else b for b in BUGS])
def test_planted_bug_is_reported_as_critical(bug: str, monkeypatch, tmp_path: Path) -> None:
    match = BUG_LINE.match((bug_dir(bug) / "BUG.md").read_text())
    assert match, "BUG.md must start with '<id> <path>:<line>[-<line>] '"
    check_id, path, first, last = match.group(1), match.group(2), int(match.group(3)), \
        int(match.group(4) or match.group(3))
    report = run(buggy_copy(bug, tmp_path), monkeypatch)
    same_id = [f for f in report.findings if f.id == check_id]
    hits = [f for f in same_id if f.severity == "critical" and f.path == path
            and first <= f.line <= last]
    assert hits, f"expected {check_id} at {path}:{first}-{last}, got " \
                 f"{[f'{f.path}:{f.line} {f.severity}' for f in same_id]}"
