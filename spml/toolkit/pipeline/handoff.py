"""`handoff`: from a validated pipeline to the document a loop runs from (SPML §4, §5.2).

After the pre-checks (`handoff_checks`) pass, the handoff writes one of

* ``experiment-context.md`` for the watchdog (its settings as front matter; the handoff
  summary as a section the watchdog's own writer keeps),
* ``iteration-protocol.md`` for ml-iteration (the design's review criteria verbatim),
* ``autoresearch-protocol.md`` for Auto Research (the design's ``autoresearch`` fields) and the
  loop's ``experiences.md`` (header only: round 0, the baseline, is measured by the loop under
  the protocol's own budget; L1's limited run is no yardstick for it).

`recommend_route` is SPML's rule for the Train branch: ml-iteration when a review criterion is
unmet in the Validation Pyramid's numbers, the watchdog when all are met.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from spml.errors import ProtocolError
from spml.protocols import iteration
from spml.protocols.autoresearch import PROTOCOL_FILENAME, AutoresearchProtocol
from spml.protocols.design import DesignDoc, autoresearch_protocol_fields
from spml.protocols.experiences import Experiences
from spml.protocols.frontmatter import dump_front_matter
from spml.protocols.watchdog import CONTEXT_FILENAME, WatchdogSettings
from spml.toolkit.files import write_atomic
from spml.toolkit.pipeline.conclusion import evidence_rows, l1_values
from spml.toolkit.pipeline.handoff_checks import HandoffSettings
from spml.toolkit.pipeline.stages import runtime_table

Route = Literal["watchdog", "iteration", "autoresearch"]
LEDGER_FILENAME = "experiences.md"


@dataclass(frozen=True)
class Recommendation:
    """Which loop SPML's rule picks, and why."""

    route: Route
    reasons: list[str]


def recommend_route(design: DesignDoc, l1: dict[str, Any]) -> Recommendation:
    """ml-iteration if any numeric review criterion is unmet (or unmeasured) in L1's numbers,
    else the watchdog. Auto Research is the person's choice (offered when the design has an
    ``autoresearch`` section), never this rule's."""
    rows = evidence_rows(design.review_criteria, l1_values(l1))
    unmet = [f"{c.describe()} ({'not measured' if v is None else f'L1: {v:.6g}'})"
             for c, v in rows if v is None or not c.met_by(v)]
    if unmet:
        return Recommendation("iteration", [f"unmet in the Validation Pyramid: {u}"
                                            for u in unmet])
    return Recommendation("watchdog", ["every review criterion is met by L1's numbers"])


def script_of(command: str) -> str | None:
    """The ``*.py`` file a command runs (``python train.py --x`` -> ``train.py``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return next((w for w in words if w.endswith(".py")), None)


def write_autoresearch(exp_dir: Path, design: DesignDoc, train_command: str) -> list[Path]:
    """The protocol from the design's ``autoresearch`` section, and the ledger's header."""
    if design.autoresearch is None:
        raise ProtocolError("the design has no `autoresearch:` section; add one (`spml schema "
                            "design` shows its fields) or hand off to the watchdog or "
                            "ml-iteration instead.")
    fields = autoresearch_protocol_fields(design, train_command)
    protocol = AutoresearchProtocol.model_validate(fields)
    body = _protocol_body(design, "Auto Research")
    path = _write_new(exp_dir / PROTOCOL_FILENAME, fields, body)
    ledger = exp_dir / LEDGER_FILENAME
    if not ledger.exists():
        write_atomic(ledger, Experiences(metric=protocol.metric, max_rounds=protocol.max_rounds,
                                         direction=protocol.direction).render())
    return [path, ledger]


def write_iteration(exp_dir: Path, design: DesignDoc, train_command: str, eval_command: str,
                    fixed: dict[str, Any], researcher: dict[str, Any]) -> list[Path]:
    """``iteration-protocol.md``: the design's review criteria, L1's commands."""
    fields = {"goal": design.hypothesis, "train_command": train_command, "fixed": fixed,
              "eval": {"command": eval_command}, "researcher": researcher,
              "review_criteria": design.review_criteria.model_dump(mode="json",
                                                                   exclude_defaults=True)}
    iteration.IterationProtocol.model_validate(fields)
    return [_write_new(exp_dir / iteration.PROTOCOL_FILENAME, fields,
                       _protocol_body(design, "ml-iteration"))]


def write_watchdog(exp_dir: Path, design: DesignDoc, settings: dict[str, Any],
                   summary: list[str]) -> list[Path]:
    """``experiment-context.md``: watchdog settings as front matter, then the handoff summary
    through the watchdog's own writer (which keeps the front matter and title)."""
    from spml.toolkit.watchdog.context import ContextFile

    WatchdogSettings.model_validate(settings)
    path = exp_dir / CONTEXT_FILENAME
    if not path.exists():
        body = _protocol_body(design, "the watchdog").replace(f"# {design.topic}",
                                                              f"## Experiment: {design.topic}", 1)
        write_atomic(path, f"---\n{dump_front_matter(settings)}---\n\n# Experiment Context\n\n"
                           f"{body}")
    ContextFile(path).set_handoff(summary)
    return [path]


def _protocol_body(design: DesignDoc, loop: str) -> str:
    return (f"# {design.topic}\n\nHanded off to {loop} by `spml handoff` from the design doc.\n\n"
            f"Hypothesis: {design.hypothesis}\n\nArchitecture: {design.architecture}\n\n"
            f"Controls (never changed): {', '.join(design.control_variables)}\n")


def _write_new(path: Path, fields: dict[str, Any], body: str) -> Path:
    text = f"---\n{dump_front_matter(fields)}---\n\n{body}"
    if path.exists():
        if path.read_text(encoding="utf-8") == text:
            return path  # a re-run of the same handoff
        raise ProtocolError(f"{path.name} already exists and differs from what the design "
                            "gives; edit it by hand, or remove it to hand off again.")
    write_atomic(path, text)
    return path


def handoff_settings(exp: Path, design: DesignDoc) -> HandoffSettings:
    """The pre-checks' settings: L1's commands, the loop's fixed files and budget."""
    runtime = runtime_table(exp) or {}
    train = runtime.get("train-command")
    if not train:
        raise ProtocolError(f"{exp / 'pyproject.toml'}: [tool.spml.validate.runtime] needs "
                            "train-command (the handoff reuses L1's command mode).")
    auto = design.autoresearch or {}
    fixed = auto.get("fixed", {})
    scripts = [s for s in (script_of(str(train)),
                           script_of(str(runtime.get("eval-command") or ""))) if s]
    return HandoffSettings(
        train_command=str(train), eval_command=runtime.get("eval-command"),
        metric=runtime.get("metric"), fixed_files=list(fixed.get("files") or scripts),
        time_limit_s=float(fixed.get("time_limit") or design.validation_scope.training_volume),
        epoch_limit=fixed.get("epoch_limit"), max_steps=int(runtime.get("max-steps", 50)))


def plain_eval_command(settings: HandoffSettings) -> str:
    return (settings.eval_command or "").replace("{checkpoint}", "").strip()


def researcher_spec(command: str | None) -> dict[str, Any]:
    """ml-iteration's researcher as protocol fields (checked now, before any pre-check runs).

    Raises:
        ProtocolError: no command, an unknown placeholder, or a program that is not found.
    """
    import shutil

    from pydantic import ValidationError

    from spml.protocols.researchers import CommandResearcherSpec

    if not command:
        raise ProtocolError("ml-iteration needs a researcher: pass --researcher-command "
                            "'my-agent --prompt {prompt_file}'.")
    try:
        CommandResearcherSpec.model_validate({"kind": "command", "command": command})
    except ValidationError as exc:
        raise ProtocolError(f"--researcher-command: {exc.errors()[0]['msg']}") from None
    program = shlex.split(command)[0] if command.strip() else ""
    if program and shutil.which(program) is None and not Path(program).exists():
        raise ProtocolError(f"--researcher-command: {program!r} is not a program on PATH; "
                            "install it or give its full path.")
    return {"kind": "command", "command": command}


def newest_log(exp: Path, settings: HandoffSettings) -> str:
    logs = sorted(exp.glob(settings.log_glob), key=lambda p: p.stat().st_mtime)
    logs = [p for p in logs if ".spml" not in p.relative_to(exp).parts]
    return logs[-1].relative_to(exp).as_posix() if logs else "outputs/train.log"
