"""The plan gate: what a plan must hold before the executor runs any subtask (SPML §1.7-1.8).

`check_plan` returns one row per problem (empty = the plan passes), each naming the subtask
(number and title) or the header field, its line, what is wrong and the fix::

      - Subtask 3 'Training pipeline [INTEGRATION]' (line 40): **Evaluation Contract:** has no
        cadence — add '- cadence: every N steps' (final-epoch-only evaluation is not acceptable)

Rules: the title and the six header fields are present and non-empty; at least one active
subtask; exactly one `[INTEGRATION]` subtask, after every code subtask; each code subtask has
Role, Implementation, Unit Tests (naming a test file) and Expected Conclusion; the integration
subtask has Role, Components (naming active subtasks), Implementation, Integration Tests
(naming a test file), Validation Pyramid (L0 and L1) and Expected Conclusion. A plan that
trains with evaluation (its Evaluation design is not 'none', or it has an Evaluation Contract)
also needs an evaluator code subtask, an Evaluation Contract on the integration subtask with
cadence (`every N steps`), scope, both entry modes, shared_core, progress and failure handling
for both modes, and Integration Tests that check the cadence firing and the mode reporting.
"""

from __future__ import annotations

import re

from spml.protocols.plan import HEADER_FIELDS, PlanDoc, Subtask

CODE_FIELDS = ("Role", "Implementation", "Unit Tests", "Expected Conclusion")
INTEGRATION_FIELDS = ("Role", "Components", "Implementation", "Integration Tests",
                      "Validation Pyramid", "Expected Conclusion")
CONTRACT = "Evaluation Contract"

_HEADER_HINTS = {
    "Goal": "<what the experiment delivers, one sentence>",
    "Experiment directory": "<path, e.g. experiments/mlp>",
    "Hypothesis": "Doing <X> is expected to cause <Y>",
    "Validation scope": "L0 (profile spml) + L1 (<real|mock overfit> data, <duration>), "
                        "baselines: <none|...>",
    "Evaluation design": "every N steps, full validation, checkpoint + in-memory entry modes, "
                         "<observability>, <failure handling> (or 'none')",
    "Architecture": "<2-3 sentences>",
}
_FIELD_HINTS = {
    "Role": "'**Role:** <what this unit does in the experiment>'",
    "Implementation": "'**Implementation:** `<file>.py` — <what it holds>'",
    "Unit Tests": "'**Unit Tests:**' with lines such as '- `tests/test_<unit>.py` — <what it "
                  "checks>'",
    "Integration Tests": "'**Integration Tests:**' with lines such as '- `tests/test_pipeline.py`"
                         " — tiny-shape data->model->loss->backward->step'",
    "Components": "'**Components:** Subtask 1 (<name>), Subtask 2 (<name>)'",
    "Validation Pyramid": "'**Validation Pyramid:** L0 (profile spml) then L1 (command mode, "
                          "<duration>); metrics: <metric> <op> <threshold>'",
    "Expected Conclusion": "'**Expected Conclusion:** implemented + N unit tests passing' "
                           "(integration: 'L0 + L1 pass; <metric> reported')",
    CONTRACT: "'**Evaluation Contract:**' with the lines '- cadence: every N steps', '- scope: "
              "full validation', '- entry_modes: checkpoint, in_memory', '- shared_core: "
              "<file>:<function> (Subtask N)', '- progress: ...', '- failure_handling: "
              "checkpoint: ...; in_memory: ...'",
}
_CONTRACT_HINTS = {
    "cadence": "add '- cadence: every N steps' (final-epoch-only evaluation is not acceptable)",
    "scope": "add '- scope: full validation' (or the subset evaluated)",
    "entry_modes": "add '- entry_modes: checkpoint, in_memory'",
    "shared_core": "add '- shared_core: <file>:<function> (Subtask N)': one evaluation core "
                   "for both entry modes",
    "progress": "add '- progress: phase start/end messages, a progress bar, a result and "
                "efficiency summary'",
    "failure_handling": "add '- failure_handling: checkpoint: <missing or unreadable "
                        "checkpoint, restore failure>; in_memory: <empty val loader, "
                        "non-finite metric, stalls>'",
}
_NO_EVALUATION = re.compile(r"^\s*(?:none|not in scope|n/?a|no evaluation)\b", re.I)
_CADENCE = re.compile(r"^\s*every\s+(\d[\d,_]*)(k?)\s+(?:\w+\s+)?(?:steps?|iterations?|iters?|"
                      r"batches|updates)\b", re.I)
# An entry that says there is none ("none", "n/a", "skipped", "not supported") is not one.
_NONE = re.compile(r"^\s*(?:none|n/?a|no|-+|never|skip(?:ped)?|not (?:supported|applicable|"
                   r"needed|planned))\b", re.I)
_NEGATED_MODE = re.compile(r"\b(?:only|not supported|unsupported|no)\b", re.I)
_SKIPPED_LEVEL = re.compile(r"\b(L0|L1)\b[^;,.]*\bskip", re.I)
_END_ONLY = re.compile(r"final[ _-]epoch|last[ _-]epoch|end of training|after training", re.I)
_MODES = {"checkpoint": re.compile(r"checkpoint", re.I),
          "in_memory": re.compile(r"in[ _-]?memory", re.I)}
_ENTRY = re.compile(r"^(?P<indent>\s*)(?:[-*+]\s*)?(?P<key>[A-Za-z][A-Za-z _-]*?)\s*:\s*"
                    r"(?P<value>.*)$")
_LABEL_PREFIX = re.compile(r"^\*\*[^*]*\*\*\s*:?\s*")
_SUBTASK_REF = re.compile(r"\bSubtask\s+(\d+)", re.I)


def check_plan(doc: PlanDoc) -> list[str]:
    """Every problem that stops the executor from running ``doc``; empty = the plan passes."""
    rows = _header_rows(doc) + _subtask_rows(doc)
    for sub in doc.subtasks:
        rows += _integration_field_rows(doc, sub) if sub.integration else _code_rows(sub)
    if doc.subtasks and evaluation_in_scope(doc):  # with no subtask, that is the one problem
        rows += _evaluation_rows(doc)
    return rows


def evaluation_in_scope(doc: PlanDoc) -> bool:
    """Whether the plan trains with evaluation: its Evaluation design is not 'none' / 'not in
    scope' (a missing one counts as in scope), or a subtask has an Evaluation Contract."""
    design = doc.header.get("Evaluation design")
    contract = any(CONTRACT in sub.fields for sub in doc.subtasks)
    return contract or design is None or not _NO_EVALUATION.match(design)


def _who(sub: Subtask) -> str:
    return f"Subtask {sub.number} '{sub.title}'"


def _header_rows(doc: PlanDoc) -> list[str]:
    rows = []
    if not doc.title:
        rows.append("  - title (line 1): the plan has no '# <title>' line — add '# <experiment> "
                    "Implementation Plan' as its first line")
    top = doc.title_line or 1
    for label in HEADER_FIELDS:
        add = f"'**{label}:** {_HEADER_HINTS[label]}'"
        if label not in doc.header:
            rows.append(f"  - header **{label}:** (line {top}): is missing — add {add} "
                        "below the title")
        elif not doc.header[label].strip():
            rows.append(f"  - header **{label}:** (line {doc.header_lines[label]}): is empty — "
                        f"write {add}")
    return rows


def _subtask_rows(doc: PlanDoc) -> list[str]:
    """At least one active subtask; exactly one integration subtask, after the code ones."""
    if not doc.subtasks:
        return [f"  - plan (line {doc.title_line or 1}): has no active subtask — add "
                "'## [ ] Subtask 1: <title>' sections: the code subtasks, then one "
                f"'## [ ] Subtask N: <title> [INTEGRATION]'"]
    integrations = [sub for sub in doc.subtasks if sub.integration]
    if not integrations:
        last = doc.subtasks[-1]
        return [f"  - plan (line {last.line}): no subtask title ends with [INTEGRATION] — mark "
                "the one subtask that assembles the delivered training script, e.g. '## [ ] "
                "Subtask N: Training pipeline [INTEGRATION]'"]
    if len(integrations) > 1:
        named = ", ".join(f"{_who(sub)} (line {sub.line})" for sub in integrations)
        return [f"  - plan (line {integrations[1].line}): {len(integrations)} subtasks are "
                f"marked [INTEGRATION]: {named} — keep exactly one; the others are code "
                "subtasks it consumes"]
    integration = integrations[0]
    return [f"  - {_who(sub)} (line {sub.line}): comes after the [INTEGRATION] subtask "
            f"({_who(integration)}, line {integration.line}) — move it above: the integration "
            "subtask assembles every code subtask, so it comes last"
            for sub in doc.subtasks if not sub.integration and sub.line > integration.line]


def _missing_field_rows(sub: Subtask, labels: tuple[str, ...]) -> list[str]:
    rows = []
    for label in labels:
        if label not in sub.fields:
            rows.append(f"  - {_who(sub)} (line {sub.line}): **{label}:** is missing — add "
                        f"{_FIELD_HINTS[label]}")
        elif not sub.fields[label].strip():
            rows.append(f"  - {_who(sub)} (line {sub.field_lines[label]}): **{label}:** is "
                        f"empty — write {_FIELD_HINTS[label]}")
    return rows


def _test_target_rows(sub: Subtask, label: str) -> list[str]:
    if not sub.fields.get(label, "").strip() or sub.tests:
        return []
    return [f"  - {_who(sub)} (line {sub.field_lines[label]}): **{label}:** names no test "
            f"file — name each as a backticked path, e.g. '- `tests/test_<unit>.py` — <what it "
            "checks>' (or a node id `tests/test_<unit>.py::test_<case>`)"]


def _code_rows(sub: Subtask) -> list[str]:
    return _missing_field_rows(sub, CODE_FIELDS) + _test_target_rows(sub, "Unit Tests")


def _integration_field_rows(doc: PlanDoc, sub: Subtask) -> list[str]:
    rows = _missing_field_rows(sub, INTEGRATION_FIELDS)
    rows += _test_target_rows(sub, "Integration Tests")
    rows += _component_rows(doc, sub)
    pyramid = sub.fields.get("Validation Pyramid", "")
    for level in ("L0", "L1"):
        if pyramid.strip() and not re.search(rf"\b{level}\b", pyramid, re.I):
            rows.append(f"  - {_who(sub)} (line {sub.field_lines['Validation Pyramid']}): "
                        f"**Validation Pyramid:** does not mention {level} — write 'L0 (profile "
                        "spml) then L1 (command mode, <duration>)': both levels are mandatory "
                        "for the integration subtask")
    for skipped in dict.fromkeys(m.upper() for m in _SKIPPED_LEVEL.findall(pyramid)):
        rows.append(f"  - {_who(sub)} (line {sub.field_lines['Validation Pyramid']}): "
                    f"**Validation Pyramid:** skips {skipped} — L0 and L1 are mandatory for "
                    "the integration subtask; neither may be skipped")
    return rows


def _component_rows(doc: PlanDoc, sub: Subtask) -> list[str]:
    text = sub.fields.get("Components", "")
    if not text.strip():
        return []
    where = f"  - {_who(sub)} (line {sub.field_lines['Components']}): **Components:**"
    numbers = [int(n) for n in _SUBTASK_REF.findall(text)]
    if not numbers:
        return [f"{where} names no subtask — write {_FIELD_HINTS['Components']}"]
    active = {s.number for s in doc.subtasks}
    removed = {r.number: r.line for r in doc.removed}
    listed = ", ".join(f"Subtask {s.number}" for s in doc.subtasks if not s.integration)
    rows = []
    for number in dict.fromkeys(numbers):
        if number in removed:
            rows.append(f"{where} names Subtask {number}, which is REMOVED (line "
                        f"{removed[number]}) — drop it from Components or restore the subtask")
        elif number not in active:
            rows.append(f"{where} names Subtask {number}, which does not exist — name only the "
                        f"plan's subtasks ({listed or 'none yet'})")
    return rows


def _evaluation_rows(doc: PlanDoc) -> list[str]:
    rows = []
    if not any(re.search(r"(?<!no )evaluat", sub.title.lower())
               for sub in doc.subtasks if not sub.integration):
        line = doc.header_lines.get("Evaluation design", doc.title_line or 1)
        rows.append(f"  - plan (line {line}): evaluation is in scope but no code subtask "
                    "evaluates (none has 'evaluat' in its title) — add a code subtask such as "
                    "'Evaluator core': one evaluation core for the checkpoint and in-memory "
                    "entry modes (with no evaluation in scope, write '**Evaluation design:** "
                    "none' and drop any Evaluation Contract)")
    integration = doc.integration
    if integration is None or sum(sub.integration for sub in doc.subtasks) > 1:
        return rows  # the integration rows above already say what to fix first
    if CONTRACT not in integration.fields:
        return [*rows, f"  - {_who(integration)} (line {integration.line}): **{CONTRACT}:** is "
                       f"missing (evaluation is in scope) — add {_FIELD_HINTS[CONTRACT]}"]
    return rows + _contract_rows(doc, integration) + _runtime_test_rows(integration)


def _contract_entries(doc: PlanDoc, sub: Subtask) -> dict[str, tuple[int, str]]:
    """The contract's `- key: value` entries: key -> (line, value); a more indented line
    continues the entry above it (a nested list of failure cases, say)."""
    entries: dict[str, tuple[int, str]] = {}
    current, indent = "", -1
    for index, (line, text) in enumerate(doc.field_text(sub, CONTRACT)):
        text = _LABEL_PREFIX.sub("", text) if index == 0 else text
        match = _ENTRY.match(text)
        depth = len(text) - len(text.lstrip())
        if current and (depth > indent or not match):
            start, value = entries[current]
            entries[current] = (start, f"{value} {text.strip()}".strip())
            continue
        if match:
            key = re.sub(r"[ -]+", "_", match["key"].strip().lower())
            current, indent = key, len(match["indent"])
            entries.setdefault(key, (line, match["value"].strip()))
    return entries


def _contract_rows(doc: PlanDoc, sub: Subtask) -> list[str]:
    entries = _contract_entries(doc, sub)
    where = f"  - {_who(sub)} (line {{line}}): **{CONTRACT}:**"
    rows = []
    for key, hint in _CONTRACT_HINTS.items():
        line, value = entries.get(key, (sub.field_lines[CONTRACT], ""))
        if not value:
            state = "has no" if key not in entries else "has an empty"
            rows.append(f"{where.format(line=line)} {state} {key} — {hint}")
        elif problem := _entry_problem(key, value):
            rows.append(f"{where.format(line=line)} {problem}")
    return rows


def _entry_problem(key: str, value: str) -> str | None:
    """What is wrong with a present contract entry, and its fix (None: nothing)."""
    if _NONE.match(value):
        return f"{key} {value!r} says there is none — {_CONTRACT_HINTS[key]}"
    if key == "cadence":
        return _cadence_problem(value)
    if key == "entry_modes" and _NEGATED_MODE.search(value):
        return (f"entry_modes {value!r} restricts or negates a mode — list both: "
                "'- entry_modes: checkpoint, in_memory' (one shared evaluation core)")
    if key in ("entry_modes", "failure_handling"):
        missing = [mode for mode, pattern in _MODES.items() if not pattern.search(value)]
        if missing:
            what = ("names" if key == "entry_modes" else "covers")
            fix = ("list both: '- entry_modes: checkpoint, in_memory' (one shared evaluation "
                   "core)" if key == "entry_modes" else
                   f"say what the {' and '.join(missing)} mode does on failure too")
            return f"{key} {what} no {' or '.join(missing)} mode — {fix}"
    return None


def _cadence_problem(value: str) -> str | None:
    match = _CADENCE.search(value)
    number = int(re.sub(r"[,_]", "", match.group(1))) if match else 0
    if match and number >= 1:
        return None
    if _END_ONLY.search(value):
        return (f"cadence {value!r} evaluates only at the end of training — write '- cadence: "
                "every N steps' (final-epoch-only evaluation is not acceptable)")
    return (f"cadence {value!r} is not a step cadence — write '- cadence: every N steps' "
            "(N >= 1; final-epoch-only evaluation is not acceptable)")


def _runtime_test_rows(sub: Subtask) -> list[str]:
    text = sub.fields.get("Integration Tests", "")
    if not text.strip():
        return []  # the missing field is reported already
    line = sub.field_lines["Integration Tests"]
    where = f"  - {_who(sub)} (line {line}): **Integration Tests:**"
    rows = []
    if not re.search(r"cadence", text, re.I):
        rows.append(f"{where} do not check that the evaluation cadence fires — add a test that "
                    "the evaluation runs at step N (say 'the eval cadence fires at step N')")
    if not re.search(r"\bmodes?\b", text, re.I):
        rows.append(f"{where} do not check that each entry mode reports its mode — add a test "
                    "that the checkpoint and in_memory runs each report their mode")
    return rows
