"""The develop engine: SPML's fix loop (5 consecutive failures at one level -> a person
decides), and the implementer command it calls. Levels here are real functions over files in
a temp dir; the implementer is a real subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spml.errors import ProtocolError
from spml.protocols.plan import parse_plan
from spml.toolkit.pipeline.develop import (
    IMPLEMENT,
    FixRequest,
    Stuck,
    check_implementer_command,
    develop_subtask,
    prompt_text,
    run_implementer,
)
from spml.toolkit.pipeline.levels import LevelResult

PLAN = Path(__file__).resolve().parents[2] / "fixtures" / "plan" / "good-plan.md"


@pytest.fixture
def subtask():
    return parse_plan(PLAN.read_text(encoding="utf-8")).subtasks[0]


def level(name: str, state: dict[str, int], passes_at: int | None):
    """A level that fails until the implementer has run ``passes_at`` times."""
    def run() -> LevelResult:
        state[f"ran-{name}"] = state.get(f"ran-{name}", 0) + 1
        ok = passes_at is not None and state["fixes"] >= passes_at
        return LevelResult(name, ok, "ok" if ok else f"{name} broken", f"{name} report")
    return run


def implementer(state: dict[str, int], calls: list[FixRequest]):
    def implement(request: FixRequest) -> None:
        calls.append(request)
        state["fixes"] += 1
    return implement


def test_a_level_that_keeps_failing_asks_the_person_after_five_failures(subtask):
    state, calls, asked = {"fixes": 0}, [], []
    outcome = develop_subtask(subtask, [("tests", level("tests", state, None))],
                              implementer(state, calls), lambda s: asked.append(s) or "stop")
    assert outcome.status == "stopped"
    assert len(asked) == 1
    assert asked[0].failures == 5
    assert asked[0].level == "tests"
    # the first call implements, then one fix after each of the first four failures
    assert [c.level for c in calls] == [IMPLEMENT, "tests", "tests", "tests", "tests"]
    assert state["ran-tests"] == 5
    assert calls[1].report == "tests report"
    assert calls[1].attempt == 2


def test_retry_starts_the_count_over_and_skip_leaves_the_subtask(subtask):
    state, calls, asked = {"fixes": 0}, [], []
    answers = iter(["retry", "skip"])
    outcome = develop_subtask(subtask, [("L0", level("L0", state, None))],
                              implementer(state, calls),
                              lambda s: asked.append(s) or next(answers))
    assert outcome.status == "skipped"
    assert outcome.stuck is asked[-1]
    assert [s.failures for s in asked] == [5, 5]
    assert state["ran-L0"] == 10


def test_the_fix_loop_passes_once_the_implementer_fixes_it(subtask):
    state, calls = {"fixes": 0}, []
    levels = [("tests", level("tests", state, 1)), ("L0", level("L0", state, 3))]
    outcome = develop_subtask(subtask, levels, implementer(state, calls),
                              lambda s: pytest.fail(f"asked: {s.message()}"))
    assert outcome.status == "done"
    assert outcome.fixes == 2
    assert [c.level for c in calls] == [IMPLEMENT, "L0", "L0"]
    # every level runs again after a fix: a fix for L0 must not break the tests
    assert state["ran-tests"] == 3
    assert state["ran-L0"] == 3


def scripted(name: str, verdicts: list[bool]):
    results = iter(verdicts)

    def run() -> LevelResult:
        ok = next(results)
        return LevelResult(name, ok, "ok" if ok else f"{name} broken", "r")
    return run


def test_counts_are_per_level_and_a_pass_resets_them(subtask):
    # L0 fails 4x, passes while L1 fails once, fails 4x more, then both pass: never 5 in a row
    l0 = scripted("L0", [False] * 4 + [True] + [False] * 4 + [True])
    l1 = scripted("L1", [False, True])
    outcome = develop_subtask(subtask, [("L0", l0), ("L1", l1)],
                              implementer({"fixes": 0}, []),
                              lambda s: pytest.fail(f"asked: {s.message()}"))
    assert outcome.status == "done"
    assert outcome.fixes == 9


def test_without_an_implementer_the_first_failure_goes_to_the_person(subtask):
    state, asked = {"fixes": 0}, []
    outcome = develop_subtask(subtask, [("tests", level("tests", state, None))], None,
                              lambda s: asked.append(s) or "stop")
    assert outcome.status == "stopped"
    assert state["ran-tests"] == 1
    assert "no implementer" in asked[0].message()


def test_the_implementer_command_gets_its_placeholders_and_the_prompt(tmp_path, subtask):
    script = tmp_path / "agent.py"
    script.write_text("import sys, pathlib\n"
                      "print(' '.join(sys.argv[1:]))\n"
                      "print(pathlib.Path(sys.argv[1]).read_text())\n")
    request = FixRequest(subtask, "L0", 3, "L0-20 [critical] step time never written")
    command = check_implementer_command(
        f"{sys.executable} {script} {{prompt_file}} {{subtask}} {{level}} {{attempt}} {{workdir}}")
    result = run_implementer(command, tmp_path, request, prompt_text(request, {}),
                             tmp_path / "log")
    out = result.stdout_text()
    assert result.ok
    assert f"{subtask.number} L0 3 {tmp_path}" in out
    assert "L0-20 [critical] step time never written" in out
    assert "## L0 report" in out


def test_an_unknown_placeholder_is_refused():
    with pytest.raises(ProtocolError, match=r"\{prompt_file\}.*problem: 'agent'"):
        check_implementer_command("run {agent}")


def test_the_stuck_message_names_subtask_level_and_count(subtask):
    last = LevelResult("L1", False, "FAIL (4/6 stages)", "report")
    message = Stuck(subtask, "L1", 5, last, True).message()
    assert f"Subtask {subtask.number}" in message
    assert "L1: FAIL (4/6 stages)" in message
    assert "5 consecutive failures" in message
