"""Glob dialect of protocol file lists."""

from __future__ import annotations

import pytest

from spml.toolkit.globs import compile_globs, match_path


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.py", "a.py", True),
        ("*.py", "src/a.py", False),  # * does not cross /
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/x/a.py", False),
        ("?.py", "a.py", True),
        ("?.py", "ab.py", False),
        ("src/?/a.py", "src/x/a.py", True),
        ("src/?/a.py", "src//a.py", False),
        ("src/**/*.py", "src/a.py", True),  # ** = zero directories
        ("src/**/*.py", "src/x/y/a.py", True),
        ("src/**/*.py", "srcx/a.py", False),
        ("src/**/*.py", "other/src/a.py", False),
        ("**/*.py", "a.py", True),
        ("**/*.py", "x/y/a.py", True),
        ("**/*.py", "x/y/a.txt", False),
        ("src/**", "src/a/b/c", True),
        ("src/**", "src", False),
        ("**", "anything/at/all", True),
        ("data/", "data/x.csv", True),  # directory pattern
        ("data/", "data/sub/x.csv", True),
        ("data/", "data", False),  # data/ names a directory, not a file
        ("data", "data", True),
        ("data", "data/sub/x.csv", True),  # a prefix directory
        ("data", "database.csv", False),
        ("conf/base", "conf/base/lr.yaml", True),
        ("./train.py", "train.py", True),
        ("train.py", "./train.py", True),
        (".", "any/file", True),
        ("params.yaml", "params.yaml", True),
        ("params.yaml", "params_yaml", False),  # the dot is literal
        ("[ab].py", "a.py", True),
        ("[!ab].py", "c.py", True),
        ("[!ab].py", "a.py", False),
        ("x[/]y", "x/y", False),  # classes never match /
        ("model(1).py", "model(1).py", True),  # regex metacharacters are literal
        ("a[.py", "a[.py", True),  # an unclosed [ is literal
        ("*", "dir/file", False),
        ("", "", False),
    ],
)
def test_match_path(pattern: str, path: str, expected: bool) -> None:
    assert match_path(path, [pattern]) is expected


def test_compile_globs_any_of_several() -> None:
    matches = compile_globs(["*.yaml", "model/**"])
    assert matches("params.yaml")
    assert matches("model/net/layers.py")
    assert not matches("train.py")


def test_compile_globs_empty_list_matches_nothing() -> None:
    assert not compile_globs([])("a.py")


def test_match_path_accepts_a_single_string() -> None:
    assert match_path("src/x/a.py", "src/**/*.py")
