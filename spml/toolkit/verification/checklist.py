"""SPML's verification checklist, each item a function of recorded evidence (reference §6).

| item | passes when |
|---|---|
| VP completed | every plan subtask is done and ``[INTEGRATION]`` carries its conclusion |
| controls held | the diff baseline..chosen touches only the protocol's variable files |
| core separation | no core module of the chosen commit imports test or validation code |
| reproducible | both commits are on a branch or tag and the runs' environment is recorded |
| anomalies reviewed | no fresh run failed, printed a non-finite value or a forbidden pattern |
| review criteria | the chosen arm's means meet the numeric review criteria |

An item is ``pass``, ``fail`` or ``unknown`` (the evidence does not exist: a loop set up without
the pipeline has no plan). A failed integrity item (all but the review criteria) overrules an
``effective`` statistical verdict: the gain is not evidence. Unmet review criteria do not: the
change is real, the goal is not reached, and the report says both.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import git

from spml.protocols.plan import load_plan
from spml.protocols.review_criteria import SUPERVISOR_MEASURED, ReviewCriteria
from spml.toolkit.loop.compliance import changed_path_violations
from spml.toolkit.loop.measurement import Measurement
from spml.toolkit.pipeline.conclusion import evidence_rows
from spml.toolkit.pipeline.handoff_checks import imports_of_test_code, is_test_code
from spml.toolkit.pipeline.planner import find_plan

Status = Literal["pass", "fail", "unknown"]
_DIFF_KINDS = {"M": "modified", "A": "added", "D": "deleted", "T": "typechange"}
MAX_LISTED = 5


@dataclass(frozen=True)
class Item:
    """One checklist line."""

    name: str
    status: Status
    detail: str
    integrity: bool = True   # a failure makes the measured gain worthless as evidence


def _listed(items: Sequence[str]) -> str:
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return "; ".join(items[:MAX_LISTED]) + more


def vp_completed(exp_dir: Path) -> Item:
    """The Validation Pyramid's record: the plan's subtasks and its integration conclusion."""
    name = "VP completed"
    plan_path = find_plan(exp_dir)
    if plan_path is None:
        return Item(name, "unknown", "no plan in plans/: the loop was set up without the "
                                     "pipeline, so no Validation Pyramid is recorded")
    plan = load_plan(plan_path)
    open_ = [f"Subtask {s.number} is {s.status}" for s in plan.subtasks if s.status != "done"]
    integration = plan.integration
    if integration is None:
        open_.append("the plan has no [INTEGRATION] subtask")
    elif not integration.conclusion:
        open_.append(f"[INTEGRATION] (Subtask {integration.number}) has no conclusion")
    if open_:
        return Item(name, "fail", f"{plan_path.name}: {_listed(open_)}")
    result = integration.conclusion.get("Result", "?") if integration else "?"
    return Item(name, "pass", f"{plan_path.name}: {len(plan.subtasks)} subtasks done; "
                              f"[INTEGRATION] concluded ({result})")


def controls_held(repo: git.Repo, baseline: str, chosen: str, *, exp_rel: str,
                  variable: Sequence[str], fixed: Sequence[str]) -> Item:
    """Only the independent variables' files changed between the two commits."""
    name = "controls held"
    out = repo.git.diff("--no-renames", "--name-status", "-z", baseline, chosen)
    fields = [f for f in out.split("\0") if f]
    changes = [(path, _DIFF_KINDS.get(code[0], "modified"))
               for code, path in zip(fields[::2], fields[1::2], strict=False)]
    bad = changed_path_violations(changes, exp_rel=exp_rel, variable=variable, fixed=fixed)
    if bad:
        return Item(name, "fail", _listed([v.reason for v in bad]))
    touched = sorted({path.rsplit("/", 1)[-1] for path, _ in changes})
    return Item(name, "pass", f"{len(changes)} file(s) changed, all variable: "
                              f"{_listed(touched) or 'none'}")


def core_separation(repo: git.Repo, chosen: str, exp_rel: str) -> Item:
    """No core module of ``chosen`` imports test or validation code."""
    name = "core separation"
    tree = repo.commit(chosen).tree
    root = tree if exp_rel == "." else tree / exp_rel
    sources = [(blob.path if exp_rel == "." else blob.path[len(exp_rel) + 1:],
                blob.data_stream.read()) for blob in root.traverse()
               if blob.type == "blob" and blob.path.endswith(".py")]
    core = [(path, data) for path, data in sources if not is_test_code(path)]
    found = [f"{where} imports {module}" for where, module in imports_of_test_code(core)]
    if found:
        return Item(name, "fail", _listed(found) + " — move what core code needs into a core "
                                                   "module")
    return Item(name, "pass", f"{len(core)} core module(s) import no test or validation code")


def reproducible(repo: git.Repo, commits: dict[str, str], environment: dict[str, Any],
                 outputs: Sequence[str]) -> Item:
    """Both measured commits can be checked out again (each is on a branch or tag) and the
    environment the runs used is recorded. Uncommitted files of the person's checkout are
    named but do not fail the item: the runs used the commits, not the checkout.
    ``outputs`` are paths spml itself writes there (never named)."""
    name = "reproducible"
    lost = [f"{side} commit {sha[:12]} is on no branch or tag (a clone cannot check it out)"
            for side, sha in commits.items() if not _on_a_ref(repo, sha)]
    if not environment.get("python"):
        lost.append("the Python version is not recorded")
    if lost:
        return Item(name, "fail", "; ".join(lost))
    git_state = environment.get("git") or {}
    dirty = [p for p in git_state.get("uncommitted", []) if p not in outputs]
    torch = f", torch {environment['torch']}" if environment.get("torch") else ""
    note = f"; uncommitted in the checkout (not measured): {_listed(dirty)}" if dirty else ""
    shown = ", ".join(f"{side} {sha[:12]}" for side, sha in commits.items())
    return Item(name, "pass", f"{shown} on branches; python {environment['python']}{torch}"
                              f"{note}")


def _on_a_ref(repo: git.Repo, sha: str) -> bool:
    try:
        return bool(repo.git.for_each_ref("--contains", sha, "--count=1", "refs/heads",
                                          "refs/tags"))
    except git.GitCommandError:  # not a commit of this repository at all
        return False


def anomalies(arms: dict[str, Measurement], history: Sequence[str],
              tampered: Sequence[str] = ()) -> Item:
    """Every fresh run ended, printed finite numbers and no forbidden pattern, and nothing
    rewrote the saved runs (``tampered``); the loop's own anomalies (``history``: crashed
    rounds, violations) are listed as reviewed."""
    name = "anomalies reviewed"
    found = list(tampered)
    runs = {id(m): (side, m) for side, m in arms.items()}.values()  # one arm may be both
    for side, measured in runs:
        if measured.cause:
            found.append(f"{side} run failed: {measured.cause}")
        for seed in measured.seeds:
            where = f"{side} seed {seed.seed}"
            found += [f"{where}: non-finite {key}" for key in seed.nonfinite_keys]
            found += [f"{where}: {hits}x forbidden pattern {pattern!r}"
                      for pattern, hits in seed.pattern_hits.items() if hits]
            found += [f"{where}: check {check} failed ({result.cause})"
                      for check, result in seed.custom.items() if not result.passed]
    loop = f"; loop history: {_listed(list(history))}" if history else "; loop history: clean"
    if found:
        return Item(name, "fail", _listed(found) + loop)
    count = sum(len(m.seeds) for _, m in runs)
    return Item(name, "pass", f"{count} fresh run(s) clean{loop}")


def criteria_met(criteria: ReviewCriteria | None, chosen: Measurement) -> Item:
    """The chosen arm's per-seed means against the numeric review criteria."""
    name = "review criteria"
    means = {key: statistics.fmean(chosen.samples("metrics", key))
             for key in {k for seed in chosen.seeds for k in seed.metrics}}
    for key in SUPERVISOR_MEASURED:  # the supervisor's own clock, for performance criteria
        timed = [t for t in chosen.samples("measured", key) if t is not None]
        if timed:
            means.setdefault(key, statistics.fmean(timed))
    rows = evidence_rows(criteria, means)
    if not rows:
        return Item(name, "unknown", "no numeric review criteria to check", integrity=False)
    shown = [f"{c.name} {_number(v)} (needs {c.op} {c.threshold:g})" for c, v in rows]
    unmet = [text for (c, v), text in zip(rows, shown, strict=True)
             if v is None or not c.met_by(v)]
    if unmet:
        return Item(name, "fail", "unmet: " + _listed(unmet), integrity=False)
    return Item(name, "pass", _listed(shown), integrity=False)


def _number(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.6g}"
