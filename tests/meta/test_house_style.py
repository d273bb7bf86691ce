"""House rules that a reviewer would otherwise check by hand (see shared style guide)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "spml"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body[1:] if ast.get_docstring(node) else node.body
            if body:
                length = body[-1].end_lineno - body[0].lineno + 1
                assert length <= MAX_FUNCTION_LINES, f"{node.name} has {length} lines"


def test_toolkit_and_protocols_never_import_prefect() -> None:
    for layer in ("toolkit", "protocols"):
        for path in (PACKAGE / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n.split(".")[0] in ("prefect", "typer") for n in names), path


def test_protocols_import_nothing_above_them() -> None:
    for path in (PACKAGE / "protocols").rglob("*.py"):
        source = path.read_text()
        for upper in ("spml.toolkit", "spml.tasks", "spml.flows", "spml.cli"):
            assert upper not in source, f"{path.name} imports {upper}"


def test_every_task_sets_a_cache_policy() -> None:
    for path in (PACKAGE / "tasks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "task":
                        keywords = {k.arg for k in deco.keywords}
                        assert "cache_policy" in keywords, f"{path.name}:{node.name}"


def test_flows_only_orchestrate() -> None:
    for path in (PACKAGE / "flows").rglob("*.py"):
        source = path.read_text()
        for banned in ("subprocess", "open(", "import re\n", "os.system"):
            assert banned not in source, f"{path.name} uses {banned!r}"


def _imported(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


def test_cli_never_imports_tasks() -> None:
    # The CLI reaches Prefect through flows only; errors it needs live in spml.errors.
    for path in (PACKAGE / "cli").rglob("*.py"):
        assert not any(n.startswith("spml.tasks") for n in _imported(path)), path.name


def test_watchdog_never_imports_the_loop_engine() -> None:
    for path in (PACKAGE / "toolkit" / "watchdog").rglob("*.py"):
        assert not any(n.startswith("spml.toolkit.loop") for n in _imported(path)), path.name


def test_no_flat_module_where_a_package_exists() -> None:
    # Issue 9's move: git*/process/metrics/loop modules live in their packages only.
    toolkit = PACKAGE / "toolkit"
    flat = sorted(p.name for p in toolkit.glob("*.py")
                  if p.stem.startswith("git") or (toolkit / p.stem).is_dir())
    assert flat == [], flat
