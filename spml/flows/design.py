"""The `brainstorm` flow: answers -> a checked, committed design doc (SPML's ml-brainstorming).

The answers come from a brief (the CLI's `--from brief.yaml` or the flow's ``brief``
parameter), from the terminal (the CLI asks and passes them in), or, when a deployment runs
without a brief, from the Prefect UI: the flow pauses with a form of SPML's questions
(`pause_flow_run(wait_for_input=...)`) and goes on when a person submits it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field, create_model

from spml.errors import ProtocolError
from spml.protocols.design import load_design
from spml.tasks.pipeline import collect_context_task, commit_task, publish, write_design_task
from spml.toolkit.git.setup import find_repo
from spml.toolkit.pipeline.brainstorm import Merge
from spml.toolkit.pipeline.questions import QUESTIONS, applicable, nest_answers

UI_INPUT_TIMEOUT_S = 24 * 3600  # a person answers within a day, or the run fails
FORM_ATTEMPTS = 5


def _ui_field(question: Any) -> tuple[Any, Any]:
    kind: Any = Literal[question.choices] if question.choices else str  # type: ignore[valid-type]
    default = question.default if question.default is not None else ...
    return kind, Field(default, description=question.text)


DesignInput: type[RunInput] = create_model(  # type: ignore[call-overload]
    "DesignInput", __base__=RunInput,
    **{q.key.replace(".", "__"): _ui_field(q) for q in QUESTIONS})


def answers_from_ui(values: dict[str, Any]) -> dict[str, Any]:
    """The form's values read like terminal answers (lists split, yes/no read)."""
    answers: dict[str, Any] = {}
    for question in QUESTIONS:
        raw = values.get(question.key.replace(".", "__"))
        if raw is not None and applicable(question, answers):
            answers[question.key] = question.read(str(raw))
    return nest_answers(answers)


@flow(name="brainstorm")
def brainstorm_flow(experiment_dir: str, brief: dict[str, Any] | None = None,
                    source: str = "the brief", merge: Merge = "fields") -> dict[str, Any]:
    """Write (or revise) the design doc of ``experiment_dir`` after it passes its self-review
    (`design check`), and commit it alone (`experiment: design — <topic>`).

    Args:
        brief: the answers; None pauses the run for SPML's questions as a form in the UI.
        merge: "fields" (a brief: its fields replace the design's) or "deep" (typed answers:
            nested values replace nested values; fields not asked are kept).

    Raises:
        ProtocolError: the answers, or the design they make, fail their checks (one line
            each; nothing is written).
    """
    logger = get_run_logger()
    exp = Path(experiment_dir).resolve()
    find_repo(exp)  # the design is committed: refuse before writing anything
    if brief is None:
        brief, source, merge = _answers_from_the_form(logger), "the UI form", "deep"
    context = collect_context_task(str(exp))
    written = write_design_task(str(exp), brief, context, source, merge)
    topic = load_design(written.path).topic
    message = (f"experiment: revise design — {', '.join(written.changed)}" if written.revised
               else f"experiment: design — {topic}")
    path = written.path.relative_to(exp).as_posix()
    commit = commit_task(str(exp), message, [path]) if not written.revised or written.changed \
        else None
    publish("design", f"# Design: {topic}\n\n`{written.path.name}`\n\n" + written.path.read_text(
        encoding="utf-8"), f"design {'revised' if written.revised else 'written'}: {topic}")
    logger.info("design %s: %s", "revised" if written.revised else "written", written.path)
    return {"design": str(written.path), "revised": written.revised,
            "changed": written.changed, "commit": commit}


def _answers_from_the_form(logger: Any) -> dict[str, Any]:
    """Pause for the form until its answers read (a typo asks again, with the problem)."""
    description, values = "Answer SPML's design questions.", {}
    for _ in range(FORM_ATTEMPTS):
        logger.info("waiting for the design questions to be answered in the UI")
        form = pause_flow_run(wait_for_input=DesignInput.with_initial_data(
            description=description, **values), timeout=UI_INPUT_TIMEOUT_S)
        values = form.model_dump(exclude={"metadata"})
        try:
            return answers_from_ui(values)
        except ValueError as exc:
            description = f"Please fix: {exc}"
            logger.warning("the form's answers do not read: %s", exc)
    raise ProtocolError(f"the design form was answered {FORM_ATTEMPTS} times without a "
                        f"readable answer; last problem: {description}")
