"""Regenerate docs/checks.md from the L0 checks' docstrings (tests fail when it is stale)."""

from pathlib import Path

from spml.toolkit.checks.docs import render_catalogue

TARGET = Path(__file__).resolve().parents[1] / "docs" / "checks.md"

if __name__ == "__main__":
    TARGET.write_text(render_catalogue())
    print(f"wrote {TARGET}")  # noqa: T201
