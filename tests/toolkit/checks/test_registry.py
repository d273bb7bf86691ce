"""The check catalogue's contract: ids, severities, docs, one module per check, fixtures."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from spml.toolkit.checks import CHECKS, RETIRED, UnknownCheck, check_by_id
from spml.toolkit.checks._base import DOC_SECTIONS, Check

FIXTURES = Path(__file__).parents[2] / "fixtures" / "checks"
# SPML's nine mandatory checks (reference section 2.3); the rest of 1-25 are advisory.
MANDATORY = {"L0-01", "L0-02", "L0-03", "L0-04", "L0-05", "L0-06", "L0-19", "L0-20", "L0-24"}


def test_ids_are_unique_well_formed_and_never_retired() -> None:
    ids = [c.id for c in CHECKS]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"L0-\d{2}", i) for i in ids)
    assert not set(ids) & set(RETIRED)
    assert ids == sorted(ids), "keep the registry in id order"


def test_spml_numbering_is_complete_and_severities_follow_its_tiers() -> None:
    spml_ids = {f"L0-{n:02d}" for n in range(1, 26)}
    ours = {c.id: c for c in CHECKS}
    assert spml_ids <= set(ours)
    for check_id in spml_ids:
        expected = "critical" if check_id in MANDATORY else "warning"
        assert ours[check_id].severity == expected, check_id


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.id)
def test_check_is_documented_and_shaped(check: type[Check]) -> None:
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", check.name)
    assert check.message
    assert len(check.message) <= 100
    assert not check.message.endswith(".")
    assert check.fix
    assert check.condition
    sections = check.doc_sections()
    for section in DOC_SECTIONS:
        assert sections.get(section), f"{check.id} docstring lacks '## {section}'"
    assert check.doc().splitlines()[0].startswith("Checks ")


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.id)
def test_one_check_per_module(check: type[Check]) -> None:
    module = importlib.import_module(check.__module__)
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, Check) and c is not Check and c.__module__ == module.__name__]
    assert classes == [check]


def test_every_check_has_a_fixture_folder_and_every_folder_a_check() -> None:
    folders = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    assert folders == {c.id for c in CHECKS}


def test_unknown_id_names_the_known_ones() -> None:
    with pytest.raises(UnknownCheck, match="known ids: L0-"):
        check_by_id("L0-99")
    assert check_by_id("l0-06").id == "L0-06"
