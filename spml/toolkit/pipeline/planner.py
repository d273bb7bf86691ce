"""The plan stage's content: a design doc -> SPML's subtasks (§1.7).

Subtasks split by functional unit, each with its code and tests. With evaluation in scope the
minimum split is SPML's: the model core, the evaluator core (one core for both entry modes)
and the training pipeline ``[INTEGRATION]`` (the trainer decides when to evaluate, the
evaluator how). Without evaluation: the model core and the pipeline. File names come from the
project's L1 commands where it has them (`python train.py` -> ``train.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spml.errors import ProtocolError
from spml.protocols.design import DESIGN_SUFFIX, DesignDoc
from spml.protocols.plan import PlanDoc, SubtaskDraft, render_plan

_SKIP = {".git", ".spml", "plans", "outputs", "__pycache__", "tests"}
_SUBTASK_REF = re.compile(r"\bSubtask (\d+)\b")
_SUBTASK_HEADING = re.compile(r"(?im)^#+\s*(?:\[[ x]\]\s*(?:REVISED\s+|NEW\s+)?|REMOVED:\s*)?"
                              r"Subtask\s+\d+\b")


@dataclass(frozen=True)
class Files:
    """Where the code goes (from the L1 commands, else SPML's defaults)."""

    train: str = "train.py"
    evaluate: str = "evaluate.py"
    model: str = "model.py"


def plan_header(design: DesignDoc, exp_label: str) -> dict[str, str]:
    """The plan's header fields, from the design."""
    scope = design.validation_scope
    baselines = {k: v for k, v in scope.baselines.model_dump().items() if v is not None}
    return {
        "Goal": f"Build and validate the training pipeline that tests: {_flat(design.hypothesis)}",
        "Experiment directory": exp_label,
        "Hypothesis": _flat(design.hypothesis),
        "Validation scope": (f"L0 (profile spml) + L1 (data flow {scope.data_flow}, training "
                             f"volume {scope.training_volume:g}s, visualisation "
                             f"{scope.visualization}); baselines: "
                             f"{_pairs(baselines) or 'none (anomaly detection only)'}"),
        "Evaluation design": _evaluation_line(design),
        "Architecture": _flat(design.architecture),
    }


def _evaluation_line(design: DesignDoc) -> str:
    ev = design.evaluation
    if not ev.required:
        return "none (no evaluation in scope)"
    return _flat(f"{', '.join(ev.metrics)} ({ev.direction}), {ev.cadence}, {ev.scope}, entry "
                 f"modes {' + '.join(ev.entry_modes)}; observability: {ev.observability}; "
                 f"failure handling: {ev.failure_handling}")


def scaffold_text(exp_dir: Path) -> str:
    """SPML's Shared Scaffold: what exists (do not touch) and what needs setting up."""
    existing = sorted(p.name + ("/" if p.is_dir() else "") for p in exp_dir.iterdir()
                      if p.name not in _SKIP and not p.name.startswith("."))
    return ("Existing infra (don't touch, advise if problems): "
            f"{', '.join(existing) or 'nothing yet'}.\n"
            "Needs setup: a `tests/` folder for each subtask's tests; `outputs/` ignored by git.")


def plan_subtasks(design: DesignDoc, files: Files, criteria_line: str,
                  l1_steps: int | None) -> list[SubtaskDraft]:
    """SPML's minimum split for this design."""
    subtasks = [_model_core(design, files)]
    if design.evaluation.required:
        subtasks.append(_evaluator_core(design, files))
    subtasks.append(_integration(design, files, criteria_line, l1_steps, len(subtasks)))
    return subtasks


def _model_core(design: DesignDoc, files: Files) -> SubtaskDraft:
    return SubtaskDraft("Model core", {
        "Role": "the model and its data path: build the network, validate its settings, "
                "load the data",
        "Implementation": f"`{files.model}`: {_flat(design.architecture)}",
        "Unit Tests": "- `tests/test_model.py` — output shape, depth follows the settings, "
                      "invalid settings refused, the shipped data loads",
        "Expected Conclusion": "implemented + its unit tests passing",
    }, steps=_code_steps("tests/test_model.py"))


def _evaluator_core(design: DesignDoc, files: Files) -> SubtaskDraft:
    ev = design.evaluation
    return SubtaskDraft("Evaluator core", {
        "Role": _flat(f"compute {', '.join(ev.metrics)} ({ev.scope}) through one core shared "
                      f"by the entry modes {' and '.join(ev.entry_modes)}"),
        "Implementation": f"`{files.evaluate}`: the core function both modes call, the "
                          "checkpoint-mode command printing `name=value`, and the failure "
                          f"handling: {_flat(ev.failure_handling)}",
        "Unit Tests": "- `tests/test_evaluate.py` — the core's value on known inputs, "
                      "empty and non-finite inputs fail loudly, a missing checkpoint is named",
        "Expected Conclusion": "implemented + its unit tests passing",
    }, steps=_code_steps("tests/test_evaluate.py"))


def _integration(design: DesignDoc, files: Files, criteria_line: str, l1_steps: int | None,
                 components: int) -> SubtaskDraft:
    ev = design.evaluation
    named = ", ".join(f"Subtask {n}" for n in range(1, components + 1))
    tests = ("- `tests/test_pipeline.py` — tiny-shape data -> model -> loss -> backward -> "
             "step moves the weights")
    fields = {
        "Role": "assemble the components into the delivered training script",
        "Components": f"{named} (the trainer decides when to evaluate, the evaluator how)",
        "Implementation": f"`{files.train}`: fixed seeds, a human-readable log file (loss, "
                          "grad norm, lr, step time per logged step), console progress, a "
                          "checkpoint, the SPML_* limits (max steps, time, epochs)",
        "Integration Tests": tests,
        "Validation Pyramid": (f"L0 (profile spml) then L1 (command mode"
                               f"{f', {l1_steps} steps' if l1_steps else ''}, data flow "
                               f"{design.validation_scope.data_flow}); {criteria_line}"),
        "Expected Conclusion": "L0 and L1 pass; the evidence cites each criterion as "
                               "`metric: actual (expected: threshold)`",
    }
    if ev.required:
        fields["Integration Tests"] += ("; the eval cadence fires in memory; each entry mode "
                                        "reports its mode")
        fields["Evaluation Contract"] = "\n".join([
            f"- cadence: {_flat(ev.cadence)}", f"- scope: {_flat(ev.scope)}",
            f"- entry_modes: {', '.join(ev.entry_modes)}",
            f"- shared_core: `{files.evaluate}` (Subtask 2)",
            f"- progress: {_flat(ev.observability)}",
            f"- failure_handling: {_flat(ev.failure_handling)}"])
    return SubtaskDraft("Training pipeline", fields, True, [
        "Write the integration tests; see them fail.", f"Assemble `{files.train}`.",
        "See the integration tests pass.", "L0: `spml validate static . --profile spml`.",
        "L1: `spml validate runtime .` (limited steps).",
        "Record the conclusion with L1's numbers.", "Commit."])


def _code_steps(test_file: str) -> list[str]:
    return [f"Write `{test_file}`; see it fail.", "Implement.", "See the tests pass.",
            "Record the conclusion.", "Commit."]


def criteria_summary(design: DesignDoc) -> str:
    """``metrics: val_mse <= 0.05; performance: ...`` for the Validation Pyramid field."""
    crit = design.review_criteria
    parts = [f"{dim}: {', '.join(c.describe() for c in items)}"
             for dim, items in (("metrics", crit.metrics), ("performance", crit.performance))
             if items]
    return "; ".join(parts) or "criteria: see the design's review_criteria"


def files_from_runtime(settings: dict[str, Any] | None) -> Files:
    """Script names from ``[tool.spml.validate.runtime]`` commands, where given."""
    from spml.toolkit.pipeline.handoff import script_of

    settings = settings or {}
    train = script_of(str(settings.get("train-command") or ""))
    evaluate = script_of(str(settings.get("eval-command") or ""))
    return Files(train=train or "train.py", evaluate=evaluate or "evaluate.py")


def _flat(text: str) -> str:
    """A design's free text on one line (a plan field holds no blank line or block)."""
    return " ".join(str(text).split())


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())


def find_plan(exp_dir: Path) -> Path | None:
    """The experiment's plan: the one ``plans/*.md`` (not a design doc) with a subtask heading,
    or the one named after the design whatever it holds; a person's notes file beside it is
    not a plan. A file that cannot be read as UTF-8 counts (its error is shown, it is never
    overwritten)."""
    plans_dir = exp_dir / "plans"
    designs = [p for p in plans_dir.glob(f"*{DESIGN_SUFFIX}")]
    expected = {plan_filename(d) for d in designs}
    plans = sorted(p for p in plans_dir.glob("*.md") if not p.name.endswith(DESIGN_SUFFIX)
                   and (p.name in expected or _has_subtasks(p)))
    if len(plans) > 1:
        names = ", ".join(p.name for p in plans)
        raise ProtocolError(f"{plans_dir} holds several plans ({names}); SPML keeps one "
                            "plan per experiment. Merge them into one and remove the others.")
    return plans[0] if plans else None


def _has_subtasks(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return True  # unreadable: treat as the plan, so its error shows and nothing overwrites it
    except OSError:
        return False
    return bool(_SUBTASK_HEADING.search(text))


def plan_filename(design_path: Path) -> str:
    """``2026-12-05-mlp-regression-design.md`` -> ``2026-12-05-mlp-regression.md``."""
    return design_path.name.removesuffix(DESIGN_SUFFIX) + ".md"


def new_plan_text(exp_dir: Path, exp_label: str, design: DesignDoc,
                  runtime: dict[str, Any] | None) -> str:
    """A fresh plan for ``design`` (SPML's minimum split)."""
    drafts = plan_subtasks(design, files_from_runtime(runtime), criteria_summary(design),
                           _l1_steps(runtime))
    return render_plan(f"{design.topic}: implementation plan", plan_header(design, exp_label),
                       scaffold_text(exp_dir), drafts)


def revise_plan(plan: PlanDoc, exp_label: str, old: DesignDoc, new: DesignDoc,
                runtime: dict[str, Any] | None) -> tuple[PlanDoc, list[str]]:
    """``plan`` brought in line with the change from design ``old`` to ``new``, in place, with
    SPML's markers; the changes.

    Only what the design change moves is touched: a field whose derived value differs between
    the two designs is revised (``[ ] REVISED``), a subtask the new design adds is ``[ ] NEW``,
    one it drops is ``REMOVED``. Everything a person wrote or added (their own subtasks, edits
    to fields the change does not touch, prose) stays. Revising any code subtask re-flags the
    integration subtask, so L0 and L1 run again (SPML §1.8).
    """
    files, steps = files_from_runtime(runtime), _l1_steps(runtime)
    before = plan_subtasks(old, files, criteria_summary(old), steps)
    after = plan_subtasks(new, files, criteria_summary(new), steps)
    changes: list[str] = []
    old_header = plan_header(old, exp_label)
    for label, value in plan_header(new, exp_label).items():
        if old_header.get(label) != value:
            plan = plan.update_header(label, value)
            changes.append(f"header {label}")
    old_by_title = {_bare(d.title): d for d in before}
    numbers: dict[int, int] = {}  # a draft's position -> its number in this plan
    for position, draft in enumerate(after, 1):
        plan, number, change = _revise_one(plan, draft, old_by_title.pop(_bare(draft.title), None),
                                           numbers)
        if number is not None:
            numbers[position] = number
        changes.extend(change)
    for gone in old_by_title.values():
        existing = _by_title(plan, gone.title)
        if existing is not None:
            plan = plan.remove(existing.number, "no longer in the design")
            changes.append(f"removed Subtask {existing.number}")
    return _reflag_integration(plan, changes), changes


def _revise_one(plan: PlanDoc, draft: SubtaskDraft, old: SubtaskDraft | None,
                numbers: dict[int, int]) -> tuple[PlanDoc, int | None, list[str]]:
    draft = _renumbered(draft, numbers)
    existing = _by_title(plan, draft.title)
    if existing is None:
        if old is not None:  # the person removed or renamed it: their decision stands
            return plan, None, []
        plan = plan.add_subtask(draft.title, draft.fields, draft.integration, draft.steps)
        added = max(plan.subtasks, key=lambda s: s.number)
        return plan, added.number, [f"new Subtask {added.number} ({draft.title})"]
    if old is None:
        return plan, existing.number, []
    old = _renumbered(old, numbers)
    moved: dict[str, str | None] = {k: v for k, v in draft.fields.items()
                                    if old.fields.get(k) != v}
    moved.update({k: None for k in old.fields if k not in draft.fields
                  and k in existing.fields})
    if not moved:
        return plan, existing.number, []
    plan = plan.revise(existing.number, moved)
    return plan, existing.number, [f"revised Subtask {existing.number} ({', '.join(moved)})"]


def _by_title(plan: PlanDoc, title: str) -> Any:
    return next((s for s in plan.subtasks if _bare(s.title) == _bare(title)), None)


def _reflag_integration(plan: PlanDoc, changes: list[str]) -> PlanDoc:
    touched = any(s.status in ("revised", "new") and not s.integration for s in plan.subtasks)
    integration = plan.integration
    if touched and integration is not None and integration.status == "done":
        changes.append(f"re-flagged Subtask {integration.number} (a component changed)")
        return plan.mark(integration.number, "revised")
    return plan


def _renumbered(draft: SubtaskDraft, numbers: dict[int, int]) -> SubtaskDraft:
    """``draft`` with "Subtask N" (N = a position in the fresh split) read as the number that
    subtask has in the revised plan (a plan that removed and added subtasks numbers them apart)."""
    def renumber(text: str) -> str:
        return _SUBTASK_REF.sub(lambda m: f"Subtask {numbers.get(int(m[1]), int(m[1]))}", text)

    fields = {label: renumber(value) for label, value in draft.fields.items()}
    return SubtaskDraft(draft.title, fields, draft.integration, draft.steps)


def _bare(title: str) -> str:
    return title.replace("[INTEGRATION]", "").strip().casefold()


def _l1_steps(runtime: dict[str, Any] | None) -> int | None:
    steps = (runtime or {}).get("max-steps")
    return int(steps) if isinstance(steps, int) else None
