"""The `brainstorm` flow: answers -> a checked, committed design doc (SPML's ml-brainstorming).

The answers come from a brief (the CLI's `--from brief.yaml` or the flow's ``brief``
parameter), from the terminal (the CLI asks and passes them in), or, when a deployment runs
without a brief, from the Prefect UI: the flow pauses with a form of SPML's questions
(`pause_flow_run(wait_for_input=...)`) and goes on when a person submits it.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field, create_model

from spml.errors import ProtocolError
from spml.protocols.design import check_design
from spml.protocols.frontmatter import error_report
from spml.tasks.pipeline import collect_context_task, commit_task, publish, write_design_task
from spml.toolkit.pipeline.questions import QUESTIONS, applicable, nest_answers

UI_INPUT_TIMEOUT_S = 24 * 3600  # a person answers within a day, or the run fails


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
                    source: str = "the brief") -> dict[str, Any]:
    """Write (or revise) the design doc of ``experiment_dir``, self-review it with
    `design check`, and commit it (`experiment: design — <topic>`).

    Raises:
        ProtocolError: the answers or the written design fail their checks (one line each;
            the design is left uncommitted for the person to fix).
    """
    logger = get_run_logger()
    if brief is None:
        logger.info("no brief: waiting for the design questions to be answered in the UI")
        form = pause_flow_run(wait_for_input=DesignInput, timeout=UI_INPUT_TIMEOUT_S)
        brief, source = answers_from_ui(form.model_dump()), "the UI form"
    context = collect_context_task(experiment_dir)
    written = write_design_task(experiment_dir, brief, context, source)
    rows = check_design(written.path)
    if rows:
        raise ProtocolError(error_report(f"{written.path.name} fails its self-review "
                                         "(`spml design check`)", rows))
    topic = str(brief.get("topic", ""))
    message = (f"experiment: revise design — {', '.join(written.changed)}" if written.revised
               else f"experiment: design — {topic}")
    commit = commit_task(experiment_dir, message) if not written.revised or written.changed \
        else None
    publish("design", f"# Design: {topic}\n\n`{written.path.name}`\n\n" + written.path.read_text(
        encoding="utf-8"), f"design {'revised' if written.revised else 'written'}: {topic}")
    logger.info("design %s: %s", "revised" if written.revised else "written", written.path)
    return {"design": str(written.path), "revised": written.revised,
            "changed": written.changed, "commit": commit}
