"""SPML's brainstorming questions, in its order, as data (§1.6).

The same list drives the terminal (`spml design new DIR` asks them one at a time, multiple
choice where the answer is one of a few) and the Prefect UI (the brainstorm flow pauses with a
form built from them). Answers are keyed by the design doc's dotted field paths and nested by
`nest_answers` into the mapping `DesignDoc` validates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spml.protocols.review_criteria import parse_criterion_text


def _words(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _yes(text: str) -> bool:
    return text.strip().lower() in ("y", "yes", "true", "1")


def _criteria(text: str) -> dict[str, Any]:
    return {"metrics": [parse_criterion_text(part) for part in _words(text)]}


@dataclass(frozen=True)
class Question:
    """One question: the field it answers, what is asked, and how the answer is read."""

    key: str
    text: str
    choices: tuple[str, ...] = ()
    default: str | None = None
    read: Callable[[str], Any] = str
    only_if: str | None = None  # a yes/no key that must be answered yes first


QUESTIONS: tuple[Question, ...] = (
    Question("topic", "What is the experiment about (a short title)?"),
    Question("task_type", "Task type?", ("recsys", "llm_pretrain", "llm_finetune", "cv", "rl",
                                         "regression", "other")),
    Question("architecture", "Model and data architecture (2-3 sentences)?"),
    Question("scale", "Scale?", ("cpu", "single_gpu", "multi_gpu", "multi_node"), "single_gpu"),
    Question("evaluation.required", "Is evaluation in scope?", ("yes", "no"), "yes", _yes),
    Question("evaluation.metrics", "Metrics the evaluation prints (comma separated)?",
             read=_words, only_if="evaluation.required"),
    Question("evaluation.direction", "Is the first metric better when larger or smaller?",
             ("maximize", "minimize"), only_if="evaluation.required"),
    Question("evaluation.cadence", "Evaluation cadence (every N steps)?", (), "every 500 steps",
             only_if="evaluation.required"),
    Question("evaluation.scope", "Evaluation scope?", (), "full validation",
             only_if="evaluation.required"),
    Question("evaluation.entry_modes", "Entry modes (comma separated)?", (),
             "checkpoint, in_memory", _words, only_if="evaluation.required"),
    Question("evaluation.observability", "How does a long evaluation show progress?", (),
             "phase start and end lines, a progress bar, a result and efficiency summary",
             only_if="evaluation.required"),
    Question("evaluation.failure_handling", "How does each entry mode handle failures "
             "(missing checkpoint, empty data, non-finite metric)?",
             only_if="evaluation.required"),
    Question("hypothesis", "Hypothesis: 'Doing X is expected to cause Y'?"),
    Question("independent_variables", "Independent variables (comma separated)?", read=_words),
    Question("dependent_variables", "Dependent variables, the metrics (comma separated)?",
             read=_words),
    Question("control_variables", "Control variables, what stays fixed (comma separated)?",
             read=_words),
    Question("validation_scope.data_flow", "L1 data flow?", ("real", "mock_overfit"), "real"),
    Question("validation_scope.training_volume", "L1 training volume?", (), "5min"),
    Question("validation_scope.visualization", "Visualisation tool?",
             ("none", "wandb", "tensorboard", "mlflow"), "none"),
    Question("review_criteria", "Review criteria on the metrics (e.g. 'acc >= 0.9', comma "
             "separated)?", read=_criteria),
)


def applicable(question: Question, answers: dict[str, Any]) -> bool:
    """Whether ``question`` is asked, given the answers so far."""
    return question.only_if is None or bool(answers.get(question.only_if))


def nest_answers(answers: dict[str, Any]) -> dict[str, Any]:
    """``{"evaluation.metrics": [...]}`` -> ``{"evaluation": {"metrics": [...]}}``."""
    nested: dict[str, Any] = {}
    for key, value in answers.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def ask_all(ask: Callable[[Question, str | None], str]) -> dict[str, Any]:
    """Ask every applicable question in order with ``ask`` (one at a time); the nested
    answers. ``ask(question, problem)`` returns the raw text (the default when the person just
    presses Enter); an answer that cannot be read is asked again with the problem."""
    answers: dict[str, Any] = {}
    for question in QUESTIONS:
        if not applicable(question, answers):
            continue
        problem: str | None = None
        while True:
            try:
                answers[question.key] = question.read(ask(question, problem))
                break
            except ValueError as exc:
                problem = str(exc)
    return nest_answers(answers)


def current_answers(design: dict[str, Any]) -> dict[str, str]:
    """An existing design's values as answers (the defaults when it is revised on the
    terminal), by question key."""
    answers: dict[str, str] = {}
    for question in QUESTIONS:
        node: Any = design
        for part in question.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            continue
        if question.key == "review_criteria":
            node = ", ".join(f"{c['name']} {c['op']} {c['threshold']:g}"
                             for c in node.get("metrics", []))
        elif isinstance(node, bool):
            node = "yes" if node else "no"
        elif isinstance(node, list):
            node = ", ".join(map(str, node))
        answers[question.key] = " ".join(str(node).split())
    return answers
