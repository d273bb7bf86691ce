"""Every check against its fixture pair: ``bad`` gives exactly ``bad.expected``, ``good``
gives nothing (and the check applied). Regenerate with SPML_UPDATE_FIXTURES=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spml.protocols.validate import ValidateConfig
from spml.toolkit.checks.engine import NO_LOOP, analyse

FIXTURES = Path(__file__).parents[2] / "fixtures" / "checks"
FOLDERS = sorted(p for p in FIXTURES.iterdir() if p.is_dir())


def _target(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.py", folder / stem):
        if candidate.exists():
            return candidate
    return None


def _run(folder: Path, stem: str, monkeypatch: pytest.MonkeyPatch):
    target = _target(folder, stem)
    assert target is not None, f"{folder.name}: no {stem}.py or {stem}/"
    monkeypatch.chdir(folder)
    report = analyse([target.relative_to(folder)], ValidateConfig(select=[folder.name]))
    (result,) = report.results
    return result


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_bad_gives_exactly_the_expected_findings(folder: Path, monkeypatch) -> None:
    result = _run(folder, "bad", monkeypatch)
    text = "".join(f.text() + "\n" for f in result.findings)
    expected = folder / "bad.expected"
    if os.environ.get("SPML_UPDATE_FIXTURES") == "1":
        expected.write_text(text)
    assert result.status == "FAIL", result.reason
    assert text == expected.read_text()


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_good_applies_and_gives_nothing(folder: Path, monkeypatch) -> None:
    result = _run(folder, "good", monkeypatch)
    assert result.status == "PASS", (result.status, result.reason,
                                     [f.text() for f in result.findings])


@pytest.mark.parametrize("folder", [f for f in FOLDERS if _target(f, "na")], ids=lambda p: p.name)
def test_not_applicable_is_reported_as_na(folder: Path, monkeypatch) -> None:
    result = _run(folder, "na", monkeypatch)
    # A check that needs the training loop, on code without one, checked nothing: UNCHECKED.
    assert result.status == ("UNCHECKED" if result.reason == NO_LOOP else "N/A")
    assert result.reason
    assert not result.findings
