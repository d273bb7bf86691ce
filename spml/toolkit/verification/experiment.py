"""Verifying an experiment directory: fresh runs of both arms, the checklist, the report.

The steps the `verification` flow orchestrates, each a plain function:

1. `measure_arm`: the baseline commit and the chosen commit, ``runs`` times each, on seeds no
   round and no confirmation used (`VERIFY_SEED0` on), through the loop's own measurement
   machinery (`spml.toolkit.loop.confirm.Bench`: a scratch worktree, per-seed
   `measurement.json` saved after every run). A killed verification starts over: files the
   trained code could have written are never taken as runs (`start_afresh`).
2. `judge`: `verify_arms` with the protocol's minimum effect.
3. `walk_checklist`: SPML's checklist on the evidence (`checklist`).
4. `build_report` + `write_report`: `verification.md` and `verification.png` beside it.

Holdout: where the protocol has one (`holdout:`), each run evaluates with the holdout command,
which alone may read the sealed data (training stays sealed: `spml.toolkit.loop.holdout`);
otherwise with the protocol's own eval command. The report says which data judged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spml.errors import ProtocolError
from spml.toolkit.files import write_atomic
from spml.toolkit.loop.confirm import Bench, read_confirmation
from spml.toolkit.loop.holdout import holdout_session
from spml.toolkit.loop.measurement import Measurement, load_measurement, save_measurement
from spml.toolkit.loop.session import LoopSession
from spml.toolkit.verification.checklist import (
    Item,
    anomalies,
    controls_held,
    core_separation,
    criteria_met,
    reproducible,
    vp_completed,
)
from spml.toolkit.verification.plot import PLOT_FILENAME, plot_verification
from spml.toolkit.verification.report import REPORT_FILENAME, Report
from spml.toolkit.verification.statistics import Method, Verification, VerifyRule, verify_arms
from spml.toolkit.verification.subject import Subject

VERIFY_SEED0 = 20_000   # above the rounds' seeds (< 20) and the confirmation's (10_000 on)
DEFAULT_RUNS = 5
SIDES = ("baseline", "chosen")
LEDGER_FILES = ("experiences.md", "experiences.png")


def check_settings(runs: int, confidence: float, method: str) -> None:
    """Refuse bad settings before anything runs.

    Raises:
        ProtocolError: fewer than 2 runs, a confidence outside (0.5, 1), an unknown method.
    """
    if runs < 2:
        raise ProtocolError(f"runs must be >= 2 (one run per arm has no noise estimate), got "
                            f"{runs}")
    if method not in ("welch", "bootstrap"):
        raise ProtocolError(f"method must be welch or bootstrap, got {method!r}")
    try:
        VerifyRule("maximize", 0.0, confidence)  # its own check of the confidence
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def verify_dir(subject: Subject) -> Path:
    """Where the verification's runs and logs live."""
    return subject.session.experiment.state_dir / "verify"


def _bench(subject: Subject) -> Bench:
    session = subject.session
    if getattr(session.protocol, "holdout", None) is not None:
        session = holdout_session(session)
    return Bench(session, "verify", verify_dir(subject))


def start_afresh(subject: Subject) -> None:
    """Forget the runs an earlier verification saved: without a sandbox the trained code can
    write that folder (during the loop, before a kill, from a process that outlived its run),
    so a file found there is no evidence. A killed verification starts over."""
    for stale in verify_dir(subject).glob("*.json"):
        stale.unlink()


def measure_arm(subject: Subject, side: str, runs: int) -> Measurement:
    """Train and evaluate one arm's commit on ``runs`` fresh seeds (saved run by run, for the
    tampering check and to read)."""
    commit = subject.baseline_commit if side == "baseline" else subject.chosen_commit
    seeds = [VERIFY_SEED0 + i for i in range(runs)]
    return _bench(subject).measure(side, commit, seeds, None)


def guard_saved(subject: Subject, arms: dict[str, Measurement]) -> list[str]:
    """Compare each arm's saved file with what this process measured; a file the trained code
    rewrote is put back and named."""
    tampered = []
    for side, measured in arms.items():
        on_disk = load_measurement(verify_dir(subject), f"{side}.json")
        if on_disk != measured:
            save_measurement(verify_dir(subject), measured, f"{side}.json")
            tampered.append(f"the {side} arm's saved runs were rewritten while the code ran "
                            "(put back from the supervisor's copy)")
    return tampered


def remove_bench(subject: Subject) -> None:
    """Delete the scratch worktree of the fresh runs."""
    _bench(subject).remove()


def judge(subject: Subject, arms: dict[str, Measurement], confidence: float,
          method: Method) -> Verification:
    """The statistical verdict on the two arms (unchanged code or an unmeasured arm:
    no comparison, and the reason why)."""
    rule = VerifyRule(subject.direction, subject.min_effect, confidence, method)
    if not subject.changed:
        return _no_comparison("ineffective", rule, arms, "the loop kept no change: its best "
                              "is the baseline commit itself")
    failed = [side for side in SIDES if arms[side].cause or not arms[side].values]
    if failed:
        side = failed[0]
        seed = VERIFY_SEED0 + len(arms[side].seeds)
        cause = arms[side].cause or "no value printed"
        return _no_comparison("inconclusive", rule, arms, f"the {side} arm's run on seed "
                              f"{seed} failed ({cause}); fix that before judging", None)
    return verify_arms(arms["baseline"].values, arms["chosen"].values, rule)


def _no_comparison(verdict: Any, rule: VerifyRule, arms: dict[str, Measurement],
                   why: str, estimate: float | None = 0.0) -> Verification:
    counts = [len(arms[side].values) if side in arms else 0 for side in SIDES]
    return Verification(verdict, estimate, None, None, *counts, "none", rule.confidence,
                        rule.min_effect, why)


def walk_checklist(subject: Subject, arms: dict[str, Measurement],
                   environment: dict[str, Any], tampered: list[str] | None = None) -> list[Item]:
    """SPML's checklist (`checklist`), in its order."""
    session = subject.session
    exp_rel = session.experiment.exp_rel
    repo = session.workspace.repo
    outputs = [_repo_path(exp_rel, name) for name in
               (*LEDGER_FILES, REPORT_FILENAME, PLOT_FILENAME)]
    return [
        vp_completed(subject.exp_dir),
        controls_held(repo, subject.baseline_commit, subject.chosen_commit, exp_rel=exp_rel,
                      variable=session.protocol.editable_files, fixed=session.fixed_globs),
        core_separation(repo, subject.chosen_commit, exp_rel),
        reproducible(repo, {"baseline": subject.baseline_commit,
                            "chosen": subject.chosen_commit}, environment, outputs),
        anomalies(arms, loop_history(subject), tampered or []),
        criteria_met(subject.criteria, arms["chosen"]),
    ]


def _repo_path(exp_rel: str, name: str) -> str:
    return name if exp_rel == "." else f"{exp_rel}/{name}"


def loop_history(subject: Subject) -> list[str]:
    """The loop's own anomalies: rounds that broke a rule or measured no value."""
    found = []
    for row in subject.ledger.rows:
        if row.is_override:
            continue
        if row.compliance == "fail":
            found.append(f"round {row.round} broke a rule ({row.note or row.verdict})")
        elif row.result is None and row.round > 0:
            found.append(f"round {row.round} measured no value ({row.result_text or 'crash'})")
    return found


def build_report(subject: Subject, arms: dict[str, Measurement], stats: Verification,
                 items: list[Item], environment: dict[str, Any]) -> Report:
    """The report of a verification (not yet written)."""
    runs = {side: [(seed.seed, seed.metrics[subject.metric]) for seed in arms[side].seeds
                   if subject.metric in seed.metrics] for side in SIDES if side in arms}
    commits = {"baseline": subject.baseline_commit, "chosen": subject.chosen_commit}
    return Report(stats, subject.metric, subject.direction, commits, runs, items,
                  evidence_lines(subject, environment), PLOT_FILENAME)


def _data_line(session: LoopSession) -> str:
    holdout = getattr(session.protocol, "holdout", None)
    if holdout is not None:
        return (f"data: the sealed holdout {', '.join(holdout.paths)}, evaluated by "
                f"`{holdout.command}` (no round could read it)")
    return (f"data: the protocol's eval command `{session.protocol.eval.command}` (no sealed "
            "holdout is configured)")


def evidence_lines(subject: Subject, environment: dict[str, Any]) -> list[str]:
    """What the verdict was reached on, beyond the fresh runs."""
    ledger, session = subject.ledger, subject.session
    kept = [r for r in ledger.kept_rounds() if r > 0]
    lines = [f"loop: {session.kind.title}, {ledger.rounds_done} round(s), {len(kept)} kept "
             f"({', '.join(map(str, kept)) or 'none'}), status {ledger.status}",
             _data_line(session),
             f"seeds: {VERIFY_SEED0} on (no round or confirmation used them)"]
    confirmation = read_confirmation(session)
    if confirmation:
        lines.append(f"the loop's own confirmation: {confirmation}")
    if subject.design_path is not None:
        lines.append(f"design: plans/{subject.design_path.name}")
    lines += [f"VP report: {path}" for path in vp_reports(subject.exp_dir)]
    lines.append(f"environment: python {environment.get('python')}, torch "
                 f"{environment.get('torch')}, cuda {environment.get('cuda')}, GPUs "
                 f"{environment.get('gpus')}")
    return lines


def vp_reports(exp_dir: Path) -> list[str]:
    """The Validation Pyramid's saved reports (develop's and the handoff's L1 runs)."""
    found = sorted(exp_dir.glob(".spml/develop/l1-subtask-*")) + \
        sorted(exp_dir.glob(".spml/handoff/l1"))
    return [str(path.relative_to(exp_dir)) for path in found if path.is_dir()]


def write_report(subject: Subject, report: Report) -> list[str]:
    """Write `verification.md` and `verification.png` into the experiment directory; the
    paths to commit (with the ledger, so the record is whole), relative to it."""
    title = f"{report.verdict}: {report.stats.lines()[1]}"
    plot_verification(subject.ledger, report.arms, subject.metric, title,
                      subject.exp_dir / PLOT_FILENAME)
    write_atomic(subject.exp_dir / REPORT_FILENAME, report.markdown())
    present = [name for name in LEDGER_FILES if (subject.exp_dir / name).is_file()]
    return [REPORT_FILENAME, PLOT_FILENAME, *present]
