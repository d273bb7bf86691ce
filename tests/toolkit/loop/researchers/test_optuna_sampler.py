"""The optuna researcher's sampler choice (`sampler: auto`) and its warm start: real Optuna,
real SQLite studies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from spml.protocols.researchers import OptunaResearcherSpec
from spml.toolkit.loop.researchers import ResearchContext
from spml.toolkit.loop.researchers.optuna_search import (
    GP_MAX_PARAMS,
    STUDY_NAME,
    OptunaResearcher,
    _sampler,
    chosen_sampler,
    read_params,
)

NUMERIC: dict[str, Any] = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "width": {"type": "int", "low": 8, "high": 64, "step": 8},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
}
WITH_CATEGORY: dict[str, Any] = {**NUMERIC, "act": {"type": "categorical",
                                                    "choices": ["relu", "tanh"]}}


def _wide(n: int) -> dict[str, Any]:
    return {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(n)}


def _spec(space: dict[str, Any], **fields: Any) -> OptunaResearcherSpec:
    return OptunaResearcherSpec.model_validate(
        {"kind": "optuna", "params_file": "params.yaml", "seed": 0, "space": space, **fields})


def _score(params: dict[str, Any]) -> float:
    """A deterministic value per proposal, so a wrongly told trial shows."""
    return round(sum(float(v) for v in params.values() if not isinstance(v, str)), 6)


class Loop:
    """A work dir and a study file; every call builds a new researcher, as a restarted
    supervisor would."""

    def __init__(self, tmp_path: Path, spec: OptunaResearcherSpec) -> None:
        self.tmp_path, self.spec = tmp_path, spec
        self.work = tmp_path / "work"
        self.work.mkdir(parents=True)
        self.db = tmp_path / "optuna.db"

    def researcher(self) -> OptunaResearcher:
        return OptunaResearcher(self.spec, storage_path=self.db, direction="minimize",
                                workdir=self.work)

    def params(self) -> dict[str, Any]:
        return read_params(self.work / self.spec.params_file)

    def propose(self, round_no: int) -> str:
        round_dir = self.tmp_path / "rounds" / str(round_no)
        round_dir.mkdir(parents=True)
        ctx = ResearchContext(round_no=round_no, workdir=self.work,
                              brief_path=round_dir / "brief.md",
                              strategy_path=round_dir / "strategy.txt",
                              log_dir=round_dir / "logs", timeout_s=20.0)
        proposal = self.researcher().propose(ctx)
        assert proposal.ok
        return proposal.strategy

    def round(self, round_no: int) -> tuple[dict[str, Any], float]:
        """Propose, score what was written, tell the score; the params and the score."""
        self.propose(round_no)
        params = {k: v for k, v in self.params().items() if k in self.spec.space}
        value = _score(params)
        self.researcher().observe(round_no, value, committed=False)
        return params, value

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{self.db}")


# --- the rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(("space", "expected"), [
    (NUMERIC, "gp"),
    ({"lr": NUMERIC["lr"]}, "gp"),
    (_wide(GP_MAX_PARAMS), "gp"),
    (_wide(GP_MAX_PARAMS + 1), "tpe"),   # too many dimensions for a GP fit from a few rounds
    (WITH_CATEGORY, "tpe"),              # a categorical parameter
])
def test_auto_picks_gp_for_a_small_numeric_space_and_tpe_otherwise(
        space: dict[str, Any], expected: str) -> None:
    assert chosen_sampler(_spec(space)) == expected
    assert chosen_sampler(_spec(space, sampler="auto")) == expected


@pytest.mark.parametrize(("space", "named"), [
    (NUMERIC, "tpe"), (NUMERIC, "random"), (NUMERIC, "cmaes"), (WITH_CATEGORY, "gp"),
])
def test_a_named_sampler_overrides_auto(space: dict[str, Any], named: str) -> None:
    assert chosen_sampler(_spec(space, sampler=named)) == named


def test_the_default_is_auto_and_its_description_states_the_limit() -> None:
    field = OptunaResearcherSpec.model_fields["sampler"]
    assert field.default == "auto"
    assert field.description is not None
    assert f"at most {GP_MAX_PARAMS}" in field.description


@pytest.mark.parametrize(("space", "fields", "expected"), [
    (NUMERIC, {}, optuna.samplers.GPSampler),
    (WITH_CATEGORY, {}, optuna.samplers.TPESampler),
    (NUMERIC, {"sampler": "tpe"}, optuna.samplers.TPESampler),
    (NUMERIC, {"sampler": "random"}, optuna.samplers.RandomSampler),
])
def test_the_built_sampler_follows_the_choice(space: dict[str, Any], fields: dict[str, Any],
                                              expected: type) -> None:
    assert type(_sampler(_spec(space, **fields), n_trials=0)) is expected


def test_startup_trials_reach_the_gp_sampler() -> None:
    sampler = _sampler(_spec(NUMERIC, startup_trials=3), n_trials=0)
    assert isinstance(sampler, optuna.samplers.GPSampler)
    assert sampler._n_startup_trials == 3


@pytest.mark.parametrize(("space", "fields", "shown"), [
    (NUMERIC, {}, "gp"),
    (WITH_CATEGORY, {}, "tpe"),
    (NUMERIC, {"sampler": "random"}, "random"),
])
def test_the_strategy_names_the_sampler_used(tmp_path: Path, space: dict[str, Any],
                                             fields: dict[str, Any], shown: str) -> None:
    loop = Loop(tmp_path, _spec(space, **fields))
    strategy = loop.propose(1)
    assert strategy.endswith(f"(optuna {shown} trial 0)")
    assert "auto" not in strategy


# --- warm start ----------------------------------------------------------------------------


def test_baseline_and_every_measured_round_are_complete_trials_with_the_told_values(
        tmp_path: Path) -> None:
    # startup_trials=2: rounds 2.. are asked from the fitted GP, through the SQLite round trip.
    loop = Loop(tmp_path, _spec(NUMERIC, startup_trials=2))
    baseline = {"lr": 0.01, "width": 32, "dropout": 0.1}
    (loop.work / "params.yaml").write_text("lr: 0.01\nwidth: 32\ndropout: 0.1\nepochs: 3\n")
    loop.researcher().observe(0, 0.9, committed=True)
    told = [(baseline, 0.9)] + [loop.round(r) for r in range(1, 5)]

    trials = loop.study().trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    assert [t.user_attrs["round"] for t in trials] == list(range(5))
    assert [(t.params, t.value) for t in trials] == told
    assert loop.params()["epochs"] == 3  # keys outside the space are left alone


def test_a_resumed_researcher_keeps_proposing_new_values(tmp_path: Path) -> None:
    loop = Loop(tmp_path, _spec(NUMERIC, startup_trials=2))
    seen = [loop.round(r)[0] for r in range(1, 5)]

    # Every round used a new researcher on the same storage: one study, trial numbers go on,
    # and neither the random start nor the GP replays an earlier draw.
    assert [t.number for t in loop.study().trials] == list(range(4))
    assert "(optuna gp trial 4)" in loop.propose(5)
    seen.append(loop.params())
    assert len({tuple(sorted(p.items())) for p in seen}) == len(seen)


def test_a_lost_study_is_not_invented_and_the_search_starts_over(tmp_path: Path) -> None:
    loop = Loop(tmp_path, _spec(NUMERIC))
    loop.round(1)
    loop.propose(2)
    loop.db.unlink()  # lost with round 2's trial open

    loop.researcher().observe(2, 0.5, committed=True)  # nothing to tell: no crash
    assert loop.study().trials == []
    assert "(optuna gp trial 0)" in loop.propose(3)


def test_two_seeds_do_not_share_draws(tmp_path: Path) -> None:
    # Each round's sampler seed comes from (seed, trial count); with `seed + trial count`,
    # seed 1's first draw would be seed 0's second.
    first = Loop(tmp_path / "a", _spec(NUMERIC, sampler="random", seed=0))
    second = Loop(tmp_path / "b", _spec(NUMERIC, sampler="random", seed=1))
    first.round(1)
    first.propose(2)
    second.propose(1)
    assert first.params() != second.params()
