"""experiment-context.md: the watchdog's sections change, everything else stays byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from spml.toolkit.watchdog.context import ContextFile

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
STAMP = "2026-01-02T03:04:05+00:00"
USER_DOC = """---
train_command: python train.py
log_file: logs/train.log
---
# Experiment Context

## Experiment Design

Plain prose the watchdog must not touch.
```text
## Diagnosis History   <- inside a code fence: not a heading
```

## Training Configuration

- launch: `python train.py --resume`
"""


def _context(tmp_path: Path, text: str | None = None) -> ContextFile:
    path = tmp_path / "experiment-context.md"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    return ContextFile(path, clock=lambda: NOW)


def test_missing_file_is_created_with_a_title_and_the_status(tmp_path: Path) -> None:
    context = _context(tmp_path)

    context.set_status("running", attempts=1, restarts=0, last_step=None)

    assert context.path.read_text() == (
        "# Experiment Context\n\n## Watchdog Status\n\n- state: running\n- attempts: 1\n"
        f"- restarts: 0\n- updated: {STAMP}\n"
    )


def test_user_content_and_front_matter_are_kept_verbatim(tmp_path: Path) -> None:
    context = _context(tmp_path, USER_DOC)

    context.set_status("running", attempts=1)
    context.add_diagnosis(10, "exit 137", "environment", ["oom_kill +1"], "restart", None)
    context.add_evaluation(10, "step=10 loss=2.0", 3.0)
    context.add_alert("loss spike")

    text = context.path.read_text()
    assert text.startswith(USER_DOC)
    added = text[len(USER_DOC):]
    titles = [line for line in added.splitlines() if line.startswith("## ")]
    assert titles == ["## Watchdog Status", "## Diagnosis History", "## Evaluation History",
                      "## Alerts"]


def test_status_is_replaced_in_place_and_read_back(tmp_path: Path) -> None:
    context = _context(tmp_path, USER_DOC)
    context.set_status("running", attempts=1, restarts=0)
    context.add_alert("first")

    context.set_status("completed", attempts=2, restarts=1, last_step=500,
                       last_checkpoint="ckpt/step_500.pt")

    text = context.path.read_text()
    assert text.count("## Watchdog Status") == 1
    assert "state: running" not in text
    assert "## Alerts\n\n- " + STAMP + " — first\n" in text  # the next section is untouched
    assert context.read_status() == {
        "state": "completed", "attempts": "2", "restarts": "1", "last_step": "500",
        "last_checkpoint": "ckpt/step_500.pt", "updated": STAMP,
    }


def test_status_between_user_sections_keeps_them_apart(tmp_path: Path) -> None:
    doc = "# Experiment Context\n\n## Watchdog Status\n\n- state: running\n\n## Notes\n\nmine\n"
    context = _context(tmp_path, doc)

    context.set_status("stopped_crash_loop", restarts=3)

    assert context.path.read_text() == (
        "# Experiment Context\n\n## Watchdog Status\n\n- state: stopped_crash_loop\n"
        f"- restarts: 3\n- updated: {STAMP}\n\n## Notes\n\nmine\n"
    )


def test_unknown_state_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="state must be one of"):
        _context(tmp_path).set_status("crashed")


def test_diagnosis_entry_layout(tmp_path: Path) -> None:
    context = _context(tmp_path)

    number = context.add_diagnosis(
        1200, "exit 137 after 2h", "environment",
        ["oom_kill count +1", "Traceback (most recent call last):\n## line 2"],
        "restart in 30s", "ckpt/step_1200.pt")

    assert number == 1
    assert context.path.read_text().endswith(
        "## Diagnosis History\n\n### Issue #1 — step 1200\n\n"
        f"- Time: {STAMP}\n- Symptom: exit 137 after 2h\n- Classification: environment\n"
        "- Evidence:\n  - oom_kill count +1\n  - Traceback (most recent call last):\n"
        "    ## line 2\n- Action: restart in 30s\n- Checkpoint: ckpt/step_1200.pt\n"
    )


def test_numbering_continues_from_the_file(tmp_path: Path) -> None:
    context = _context(tmp_path, USER_DOC)
    assert context.add_diagnosis(None, "a", "other", [], "reported", None) == 1
    assert context.add_diagnosis(5, "b", "environment", [], "restart", None) == 2

    restarted = _context(tmp_path)  # a new watchdog process on the same file
    number = restarted.add_diagnosis(9, "c", "environment", [], "restart", "ck.pt")

    text = restarted.path.read_text()
    assert number == 3
    assert "### Issue #1 — step unknown\n" in text
    assert "- Evidence:\n  - none\n" in text
    assert text.index("### Issue #2") < text.index("### Issue #3")
    # The heading inside the user's code fence was not taken for the section.
    assert text.count("\n## Diagnosis History\n") == 1


def test_numbering_uses_the_highest_number_present(tmp_path: Path) -> None:
    doc = ("# Experiment Context\n\n## Diagnosis History\n\n### Issue #7 — step 3\n\n- x\n\n"
           "## Evaluation History\n\n### Eval #4 — checkpoint step=2\n")
    context = _context(tmp_path, doc)

    assert context.add_diagnosis(4, "s", "other", [], "reported", None) == 8
    assert context.add_evaluation(6, "step=6 acc=0.5", 1.0) == 5


def test_evaluation_entries_and_skips(tmp_path: Path) -> None:
    context = _context(tmp_path)

    context.add_evaluation(100, "step=100 val_loss=2.31", 61.24,
                           skipped=["ckpt/step_90.pt: eval busy"])
    context.add_evaluation(200, "step=200 status=FAILED error=boom", 5)

    assert context.path.read_text().endswith(
        "## Evaluation History\n\n### Eval #1 — checkpoint step=100\n\n"
        f"- Time: {STAMP}\n- Summary: step=100 val_loss=2.31\n- Duration: 61.2 s\n"
        "- Skipped: 1\n  - ckpt/step_90.pt: eval busy\n\n"
        "### Eval #2 — checkpoint step=200\n\n"
        f"- Time: {STAMP}\n- Summary: step=200 status=FAILED error=boom\n"
        "- Duration: 5.0 s\n- Skipped: none\n"
    )


def test_alerts_are_one_line_each(tmp_path: Path) -> None:
    context = _context(tmp_path)

    context.add_alert("loss spike: 9.1 > 3x recent average")
    context.add_alert("MFU drop\n25% below baseline")

    assert context.path.read_text().endswith(
        f"## Alerts\n\n- {STAMP} — loss spike: 9.1 > 3x recent average\n"
        f"- {STAMP} — MFU drop 25% below baseline\n"
    )


def test_crlf_files_stay_crlf(tmp_path: Path) -> None:
    original = USER_DOC.replace("\n", "\r\n")
    path = tmp_path / "experiment-context.md"
    path.write_bytes(original.encode())
    context = ContextFile(path, clock=lambda: NOW)

    context.add_diagnosis(1, "multi\nline", "other", [], "reported", None)
    context.set_status("stopped_code_failure")

    data = path.read_bytes().decode()
    assert data.startswith(original)
    assert "\n" not in data.replace("\r\n", "")
    assert context.read_status()["state"] == "stopped_code_failure"


def test_read_status_without_file_or_section(tmp_path: Path) -> None:
    assert _context(tmp_path).read_status() == {}
    assert _context(tmp_path, USER_DOC).read_status() == {}


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    context = _context(tmp_path, USER_DOC)

    context.set_status("running")
    context.add_alert("x")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment-context.md"]


def test_a_section_created_later_goes_before_the_ones_it_precedes(tmp_path: Path) -> None:
    context = _context(tmp_path, USER_DOC)
    context.add_alert("first")
    context.add_evaluation(1, "step=1 loss=3", 2.0)

    context.set_status("running")

    added = context.path.read_text()[len(USER_DOC):]
    titles = [line for line in added.splitlines() if line.startswith("## ")]
    assert titles == ["## Watchdog Status", "## Evaluation History", "## Alerts"]
    assert "\n\n\n" not in added


def test_a_diagnosis_names_the_restart_checkpoint_what_was_skipped_and_a_warning(
        tmp_path: Path) -> None:
    context = _context(tmp_path)

    context.add_diagnosis(45, "hang: no heartbeat", "environment", ["no heartbeat"],
                          "restart in 0s", "ckpt/step_20.pt",
                          restart_from="ckpt/step_30.pt (step 30; torch archive: ...)",
                          skipped=["ckpt/step_40.pt: zip central directory unreadable"],
                          warning="something to read")

    assert context.path.read_text().endswith(
        "- Action: restart in 0s\n- Checkpoint: ckpt/step_20.pt\n"
        "- Restart from: ckpt/step_30.pt (step 30; torch archive: ...)\n"
        "- Skipped checkpoints:\n  - ckpt/step_40.pt: zip central directory unreadable\n"
        "- Warning: something to read\n")


def test_update_status_keeps_the_other_fields_and_the_state(tmp_path: Path) -> None:
    context = _context(tmp_path)
    context.set_status("running", attempt=2, resumed_from="ckpt/step_20.pt")

    context.update_status(checkpoint_warning="glob matches nothing")

    assert context.read_status() == {
        "state": "running", "attempt": "2", "resumed_from": "ckpt/step_20.pt",
        "checkpoint_warning": "glob matches nothing", "updated": STAMP}
