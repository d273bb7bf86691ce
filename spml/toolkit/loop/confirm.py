"""When the loop ends: the final best and the baseline, measured again on fresh seeds.

A loop that picks the best of many candidates overestimates it (the kept versions are those
whose runs happened to come out high). The confirmation runs the best commit and the baseline
commit ``acceptance.confirm_runs`` times each, on seeds no round used (`CONFIRM_SEED0` on), in a
scratch worktree (the loop's own worktree and branch are never moved), and reports the
difference with its interval at ``acceptance.confidence`` (two-sided). Each run is saved as it
ends (`.spml/<kind>/confirm/{best,baseline}.json`), so a supervisor killed meanwhile resumes
the confirmation where it stopped, and a loop that ends again on the same two versions reuses it.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from spml.protocols.experiences import Status
from spml.toolkit.git.workspace import GitSnapshot, Workspace
from spml.toolkit.loop.begin import SNAPSHOT_FILENAME
from spml.toolkit.loop.evidence import Noise, Rule, compare, estimate
from spml.toolkit.loop.handedits import load_ledger
from spml.toolkit.loop.incumbent import experiment_noise, measured_runs
from spml.toolkit.loop.measure import Site, run_seeds
from spml.toolkit.loop.measurement import Measurement, load_measurement
from spml.toolkit.loop.session import LoopSession

log = logging.getLogger(__name__)
CONFIRM_SEED0 = 10_000   # far above any round's seeds (repeats <= 20)
CONFIRMED_ENDINGS: tuple[Status, ...] = ("completed", "target_reached", "stopped")
_SIDES = ("best", "baseline")


def confirm_dir(session: LoopSession) -> Path:
    """Where the confirmation's runs and logs live."""
    return session.experiment.state_dir / "confirm"


def wants_confirmation(session: LoopSession, status: str) -> bool:
    """Auto Research's default acceptance confirms a loop that ended on its own or on request
    (not one interrupted by a signal: that one resumes later)."""
    acceptance = getattr(session.protocol, "acceptance", None)
    return (session.kind.name == "autoresearch" and acceptance is not None
            and acceptance.confirm_runs > 0 and status in CONFIRMED_ENDINGS)


def confirm_result(session: LoopSession, status: str) -> str:
    """Measure (or reuse) the confirmation; return its sentence ('' when there is none)."""
    if not wants_confirmation(session, status):
        return ""
    ledger = load_ledger(session.experiment)
    best, base = session.workspace.head(), baseline_commit(session)
    if ledger.best is None or ledger.best.round == 0 or base is None or base == best:
        return ""
    commits = {"best": best, "baseline": base}
    # Both sides' saved runs are read before anything runs: the trained code of one side could
    # otherwise write the other side's file (from here on, only this process's copy counts).
    saved = {side: _saved_side(session, side) for side in _SIDES}
    seeds = [CONFIRM_SEED0 + i for i in range(session.protocol.acceptance.confirm_runs)]
    bench = Bench(session, "confirm", confirm_dir(session))
    measured = {side: bench.measure(side, commits[side], seeds, saved[side]) for side in _SIDES}
    bench.remove()
    return confirmation_text(session, measured["best"], measured["baseline"])


def read_confirmation(session: LoopSession) -> str:
    """The sentence of a confirmation already measured for HEAD and this ledger's baseline (no
    runs), or ''."""
    best, base = (_saved_side(session, side) for side in _SIDES)
    base_commit = baseline_commit(session)
    if best is None or base is None or base_commit is None or \
            best.tree != session.workspace.head_tree() or \
            base.tree != session.workspace.repo.commit(base_commit).tree.hexsha:
        return ""
    return confirmation_text(session, best, base)


def _saved_side(session: LoopSession, side: str) -> Measurement | None:
    return load_measurement(confirm_dir(session), f"{side}.json")


def confirmation_text(session: LoopSession, best: Measurement, base: Measurement) -> str:
    """`best 0.0047 ± 0.0001 (n=5) vs baseline 0.241 ± 0.002 (n=5) on fresh seeds: gain ...`."""
    if not best.values or not base.values:
        failed = best if not best.values else base
        return f"could not be measured: {failed.cause or 'no value'}"
    acceptance = session.protocol.acceptance
    noise = Noise.pooled([best.values, base.values])
    if noise.df == 0:  # one run a side: the loop's own estimate of the noise
        runs = measured_runs(session.experiment, load_ledger(session.experiment).rounds_done + 1)
        noise = experiment_noise(runs, session.protocol.metric)
    # looks=2 makes compare's one-sided bound at 1-(1-c)/2: the two-sided c interval.
    rule = Rule(maximize=session.protocol.direction == "maximize",
                confidence=acceptance.confidence, looks=2)
    result = compare(best.values, base.values, noise, rule)
    verdict = "confirmed" if result.low > 0 else "NOT confirmed (the interval includes no gain)"
    return (f"best {estimate(best.values)} vs baseline {estimate(base.values)}: gain "
            f"{result.gain:+.4g}, {acceptance.confidence:.0%} interval [{result.low:+.4g}, "
            f"{result.high:+.4g}], {verdict}")


def baseline_commit(session: LoopSession) -> str | None:
    """The commit round 0 measured (saved in its git snapshot)."""
    path = session.experiment.round_dir(0) / SNAPSHOT_FILENAME
    try:
        return GitSnapshot.from_json(path.read_text(encoding="utf-8")).head or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Bench:
    """Runs of other commits than the loop's HEAD: a scratch worktree on its own branch
    (``<kind>-<purpose>``; the loop's branch never moves), logging into ``log_dir``."""

    session: LoopSession
    purpose: str       # "confirm", "verify"
    log_dir: Path

    def measure(self, side: str, commit: str, seeds: list[int],
                saved: Measurement | None) -> Measurement:
        """Train and evaluate ``commit`` on ``seeds`` (logs ``<side>-train-<seed>...``, runs
        saved in ``<side>.json``), continuing ``saved`` when it measured the same tree."""
        bench = self._checkout(commit)
        tree = bench.head_tree()
        session = self.session
        site = Site(bench, session.experiment.exp_rel, session.max_rounds, self.log_dir,
                    prefix=f"{side}-", filename=f"{side}.json")
        start = saved if saved is not None and saved.tree == tree and not saved.cause else \
            Measurement(round=site.round_no, tree=tree, primary=session.protocol.metric)
        # only the seeds asked for now (a rerun with fewer runs reports fewer)
        start = start.model_copy(update={"seeds": tuple(s for s in start.seeds
                                                        if s.seed in seeds)})
        done = {seed.seed for seed in start.seeds}
        return run_seeds(session, site, start, [s for s in seeds if s not in done],
                         checked=lambda: [])

    def _names(self) -> tuple[Path, str]:
        stage = f"{self.session.kind.name}-{self.purpose}"
        experiment = self.session.experiment
        return experiment.worktree_dir(stage), experiment.branch(stage)

    def _checkout(self, commit: str) -> Workspace:
        path, branch = self._names()
        bench = Workspace.open_or_create(self.session.experiment.repo_root, path, branch, commit)
        bench.rollback(commit)
        return bench

    def remove(self) -> None:
        """Delete the worktree and its branch (a leftover costs disk, never the result)."""
        path, branch = self._names()
        repo = self.session.workspace.repo
        try:
            repo.git.worktree("remove", "--force", str(path))
            repo.git.branch("-D", branch)
        except Exception as exc:  # noqa: BLE001 - leftovers cost disk, never the result
            log.warning("could not remove the %s worktree %s: %s", self.purpose, path, exc)
            shutil.rmtree(path, ignore_errors=True)
