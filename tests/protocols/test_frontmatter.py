"""Front matter: fences, malformed YAML, field lines, and YAML details of the reader/writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from spml.errors import ProtocolError
from spml.protocols.frontmatter import (
    MAX_DURATION_S,
    bounded_duration,
    dump_front_matter,
    parse_duration,
    read_front_matter,
)


def _write(tmp_path: Path, text: str, name: str = "doc.md") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_splits_fields_body_and_records_each_field_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "---\na: 1\nb:\n  c: [x, y]\n  d: text\n---\n\n# Title\nprose\n")

    doc = read_front_matter(path)

    assert doc.data == {"a": 1, "b": {"c": ["x", "y"], "d": "text"}}
    assert doc.body == "# Title\nprose"
    assert doc.lines[("a",)] == 2
    assert doc.lines[("b",)] == 3
    assert doc.lines[("b", "c")] == 4
    assert doc.lines[("b", "c", 1)] == 4
    assert doc.lines[("b", "d")] == 5
    # A missing field maps to its parent, a missing top-level field to the opening fence.
    assert doc.line_of(("b", "missing")) == 3
    assert doc.line_of(("nowhere",)) == 1


def test_missing_file_is_a_protocol_error(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="must exist"):
        read_front_matter(tmp_path / "absent.md")


@pytest.mark.parametrize("text", ["a: 1\n---\nbody\n", "", "# Title\n---\na: 1\n---\n"])
def test_missing_opening_fence_is_refused_at_line_1(tmp_path: Path, text: str) -> None:
    with pytest.raises(ProtocolError, match=r"must start with a '---' line .*\(line 1\)"):
        read_front_matter(_write(tmp_path, text))


def test_missing_closing_fence_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="second '---' line"):
        read_front_matter(_write(tmp_path, "---\na: 1\nb: 2\n"))


def test_indented_dashes_inside_a_block_string_do_not_close_the_front_matter(
        tmp_path: Path) -> None:
    path = _write(tmp_path, "---\nq: |\n  part one\n  ---\n  part two\nn: 3\n---\nbody\n")

    doc = read_front_matter(path)

    assert doc.data == {"q": "part one\n---\npart two\n", "n": 3}
    assert doc.body == "body"


def test_a_byte_order_mark_before_the_fence_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.md"
    path.write_bytes("\ufeff---\na: 1\n---\nbody\n".encode())

    assert read_front_matter(path).data == {"a": 1}


@pytest.mark.parametrize(("yaml_text", "line"), [
    ("a: 1\nb: x: y\n", 3),          # mapping value where none is allowed, on file line 3
    ("a: 1\nb: 2\n  c: 3\n", 4),       # bad indentation, on file line 4
])
def test_malformed_yaml_reports_the_file_line(tmp_path: Path, yaml_text: str, line: int) -> None:
    with pytest.raises(ProtocolError, match=rf"doc\.md \(line {line}\): the YAML front matter "
                                            "is malformed"):
        read_front_matter(_write(tmp_path, f"---\n{yaml_text}---\nbody\n"))


@pytest.mark.parametrize(("yaml_text", "found", "begins"), [
    ("a: 1\nb: [1, 2\nc: 3\n", 4, 3),   # unclosed '[' on line 3, noticed on line 4
    ('a: "x\nb: 2\n', 3, 2),            # unclosed quote on line 2, noticed at the end
])
def test_malformed_yaml_also_names_the_line_where_the_broken_construct_begins(
        tmp_path: Path, yaml_text: str, found: int, begins: int) -> None:
    with pytest.raises(ProtocolError) as info:
        read_front_matter(_write(tmp_path, f"---\n{yaml_text}---\nbody\n"))

    assert f"(line {found}): the YAML front matter is malformed" in str(info.value)
    assert f"begins on line {begins})" in str(info.value)


@pytest.mark.parametrize(("yaml_text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"),
                                                 ("42\n", "int")])
def test_front_matter_that_is_not_a_mapping_is_refused(tmp_path: Path, yaml_text: str,
                                                       kind: str) -> None:
    with pytest.raises(ProtocolError, match=rf"\(line 2\): the front matter must be a mapping "
                                            rf".*got {kind}\."):
        read_front_matter(_write(tmp_path, f"---\n{yaml_text}---\n"))


def test_empty_front_matter_is_an_empty_mapping(tmp_path: Path) -> None:
    doc = read_front_matter(_write(tmp_path, "---\n---\nonly prose\n"))

    assert doc.data == {}
    assert doc.body == "only prose"


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    # YAML 1.1 reads `1e-4` as a string; strict protocol fields would then refuse `low: 1e-4`.
    doc = read_front_matter(_write(tmp_path, "---\na: 1e-4\nb: -2E3\nc: 1.5e+2\nd: '1e-4'\n"
                                             "e: 10\nf: e5\n---\n"))

    assert doc.data == {"a": 1e-4, "b": -2000.0, "c": 150.0, "d": "1e-4", "e": 10, "f": "e5"}
    assert isinstance(doc.data["b"], float)
    assert isinstance(doc.data["e"], int)


def test_dump_front_matter_round_trips_strings_that_look_like_numbers(tmp_path: Path) -> None:
    data = {"q": "1e-4", "x": 1e-4, "n": 3, "s": "caf\u00e9 | a\nb", "none": None,
            "flag": True, "list": ["2e3", 2e3]}

    doc = read_front_matter(_write(tmp_path, f"---\n{dump_front_matter(data)}---\n"))

    assert doc.data == data
    assert isinstance(doc.data["q"], str)
    assert list(doc.data) == list(data)  # key order kept


@pytest.mark.parametrize(("value", "seconds"), [
    ("90s", 90.0), ("90", 90.0), ("5min", 300.0), ("2m", 120.0), ("1.5h", 5400.0),
    (" 3 sec ", 3.0), (45, 45), (2.5, 2.5),
])
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(("value", "words"), [
    (float("inf"), "finite"), (float("-inf"), "finite"), (2592001, "at most 30 days"),
    ("721h", "at most 30 days"), ("1e400", "duration like"),
])
def test_bounded_duration_refuses_what_would_never_limit(value: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        bounded_duration(value)
    assert bounded_duration("720h") == MAX_DURATION_S


@pytest.mark.parametrize("value", ["5 minutes", "-5s", "1d", "min", ""])
def test_parse_duration_refuses_other_strings(value: str) -> None:
    with pytest.raises(ValueError, match="duration like"):
        parse_duration(value)
