"""docs/checks.md is generated from the checks' docstrings and must be current."""

from pathlib import Path

from spml.toolkit.checks import CHECKS
from spml.toolkit.checks.docs import render_catalogue

DOCS = Path(__file__).parents[3] / "docs" / "checks.md"


def test_docs_page_is_current() -> None:
    assert DOCS.read_text() == render_catalogue(), "run: python scripts/gen_check_docs.py"


def test_every_check_has_a_section_with_its_examples() -> None:
    page = render_catalogue()
    for check in CHECKS:
        section = page.split(f"## {check.id} {check.name}\n", 1)[1].split("\n## L0-", 1)[0]
        assert "### Example" in section
        assert "### Use instead" in section
