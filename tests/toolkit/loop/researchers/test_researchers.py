"""Researchers: the Optuna sampler (real SQLite studies) and the command researcher (real
processes)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from spml.errors import ProtocolError
from spml.protocols.researchers import CommandResearcherSpec, OptunaResearcherSpec
from spml.toolkit.loop.researchers import Proposal, ResearchContext, make_researcher
from spml.toolkit.loop.researchers.command import MAX_STRATEGY_CHARS, CommandResearcher
from spml.toolkit.loop.researchers.optuna_search import (
    STUDY_NAME,
    OptunaResearcher,
    read_params,
    write_params,
)

SPACE: dict[str, Any] = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "width": {"type": "int", "low": 8, "high": 64, "step": 8},
    "act": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
}


def _spec(params_file: str = "params.yaml", **overrides: Any) -> OptunaResearcherSpec:
    fields = {"kind": "optuna", "params_file": params_file, "sampler": "tpe", "seed": 0,
              "space": SPACE, **overrides}
    return OptunaResearcherSpec.model_validate(fields)


def _context(tmp_path: Path, round_no: int, timeout_s: float = 20.0,
             workdir: Path | None = None) -> ResearchContext:
    work = workdir or tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    round_dir = tmp_path / "state" / "rounds" / f"{round_no:04d}"
    round_dir.mkdir(parents=True, exist_ok=True)
    brief = round_dir / "brief.md"
    brief.write_text(f"# brief for round {round_no}\n")
    return ResearchContext(round_no=round_no, workdir=work, brief_path=brief,
                           strategy_path=round_dir / "strategy.txt", log_dir=round_dir / "logs",
                           timeout_s=timeout_s)


class OptunaSetup:
    """A work dir with a params file and the study's SQLite file, as a real loop lays them out."""

    def __init__(self, tmp_path: Path, params_file: str = "params.yaml",
                 direction: str = "minimize", **spec: Any) -> None:
        self.tmp_path = tmp_path
        self.work = tmp_path / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.params_path = self.work / params_file
        self.db = tmp_path / "state" / "optuna.db"
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.spec = _spec(params_file, **spec)
        self.direction = direction

    def researcher(self) -> OptunaResearcher:
        """A fresh instance, as built by a (restarted) supervisor."""
        return OptunaResearcher(self.spec, storage_path=self.db, direction=self.direction,
                                workdir=self.work)

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{self.db}")

    def propose(self, round_no: int, researcher: OptunaResearcher | None = None) -> Proposal:
        return (researcher or self.researcher()).propose(
            _context(self.tmp_path, round_no, workdir=self.work))

    def params(self) -> dict[str, Any]:
        return read_params(self.params_path)


def _states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


# --- optuna: proposing ---------------------------------------------------------------------


def test_propose_writes_the_space_into_yaml_and_keeps_other_keys(tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path)
    setup.params_path.write_text("epochs: 3\nlr: 0.5\nname: run-a\n")

    proposal = setup.propose(1)

    params = yaml.safe_load(setup.params_path.read_text())
    assert proposal.ok
    assert proposal.cause == ""
    assert params["epochs"] == 3
    assert params["name"] == "run-a"
    assert set(params) == {"epochs", "lr", "name", "width", "act", "dropout"}
    assert params["lr"] != 0.5
    assert "optuna tpe trial 0" in proposal.strategy
    assert f"width={params['width']}" in proposal.strategy
    assert f"act={params['act']}" in proposal.strategy


def test_propose_writes_json_params(tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path, params_file="conf.json")
    setup.params_path.write_text(json.dumps({"batch": 32, "width": 1}))

    setup.propose(1)

    params = json.loads(setup.params_path.read_text())
    assert params["batch"] == 32
    assert params["width"] in range(8, 65, 8)
    assert set(params) == {"batch", "lr", "width", "act", "dropout"}


def test_propose_creates_a_missing_params_file(tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path)

    setup.propose(1)

    assert set(setup.params()) == set(SPACE)


def test_proposed_values_respect_the_space(tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path, sampler="random")
    researcher = setup.researcher()
    seen: list[dict[str, Any]] = []

    for round_no in range(1, 9):
        setup.propose(round_no, researcher)
        researcher.observe(round_no, float(round_no), committed=False)
        seen.append(setup.params())

    for params in seen:
        assert isinstance(params["lr"], float)
        assert 1e-4 <= params["lr"] <= 1e-1
        assert isinstance(params["width"], int)
        assert params["width"] in range(8, 65, 8)
        assert params["act"] in {"relu", "tanh", "gelu"}
        assert any(math.isclose(params["dropout"], step / 10) for step in range(6))
    # A log-uniform draw spreads over the decades, not only the top one.
    assert min(p["lr"] for p in seen) < 1e-2
    assert len({p["width"] for p in seen}) > 1


def test_a_seeded_study_proposes_new_values_every_round(tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path)
    proposals = []
    for round_no in (1, 2, 3):
        setup.propose(round_no)
        proposals.append(setup.params())
        setup.researcher().observe(round_no, 1.0 / round_no, committed=True)

    assert proposals[0] != proposals[1] != proposals[2]
    assert proposals[0]["lr"] != proposals[1]["lr"]


def test_the_same_seed_replays_the_same_search(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        setup = OptunaSetup(tmp_path / name)
        for round_no in (1, 2):
            setup.propose(round_no)
            setup.researcher().observe(round_no, 0.5, committed=False)
        runs.append(setup.params())

    assert runs[0] == runs[1]


def test_a_restarted_supervisor_continues_the_same_study(tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path)
    first = setup.researcher()
    setup.propose(1, first)
    first.observe(1, 0.3, committed=True)
    del first  # the supervisor dies; only the SQLite file remains

    second = setup.researcher()
    setup.propose(2, second)
    second.observe(2, 0.2, committed=True)

    study = setup.study()
    assert len(study.trials) == 2
    assert _states(study) == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert [t.user_attrs["round"] for t in study.trials] == [1, 2]
    assert [t.value for t in study.trials] == [0.3, 0.2]
    assert study.direction == optuna.study.StudyDirection.MINIMIZE


def test_maximize_direction_is_kept_in_the_study(tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path, direction="maximize")
    setup.propose(1)

    assert setup.study().direction == optuna.study.StudyDirection.MAXIMIZE


# --- optuna: observing ---------------------------------------------------------------------


def test_observe_completes_only_the_rounds_trial(tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path)
    setup.propose(1)

    setup.researcher().observe(2, 0.1, committed=True)  # another round: nothing to tell
    assert _states(setup.study()) == [TrialState.RUNNING]

    setup.researcher().observe(1, 0.25, committed=False)
    trial = setup.study().trials[0]
    assert trial.state == TrialState.COMPLETE
    assert trial.value == 0.25
    assert trial.params == {k: v for k, v in setup.params().items() if k in SPACE}


@pytest.mark.parametrize("value", [None, math.nan])
def test_an_unmeasured_round_fails_its_trial(tmp_path: Path, value: float | None) -> None:
    setup = OptunaSetup(tmp_path)
    setup.propose(1)

    setup.researcher().observe(1, value, committed=False)

    assert _states(setup.study()) == [TrialState.FAIL]


def test_abandon_fails_the_rounds_trial_and_the_redo_gets_a_new_one(tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path)
    setup.propose(1)

    setup.researcher().abandon(1)
    setup.propose(1)
    setup.researcher().observe(1, 0.4, committed=True)

    study = setup.study()
    assert _states(study) == [TrialState.FAIL, TrialState.COMPLETE]
    assert [t.user_attrs["round"] for t in study.trials] == [1, 1]


def test_a_trial_left_running_by_a_dead_supervisor_is_failed_on_the_next_propose(
        tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path)
    setup.propose(3)  # asked, then the supervisor was killed before telling it

    setup.propose(3)

    assert _states(setup.study()) == [TrialState.FAIL, TrialState.RUNNING]


def test_baseline_seeds_the_study_when_the_params_fit_the_space(tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path)
    setup.params_path.write_text("lr: 0.001\nwidth: 32\nact: tanh\ndropout: 0.2\nepochs: 5\n")

    setup.researcher().observe(0, 0.75, committed=True)
    setup.researcher().observe(0, 0.5, committed=True)  # a replayed round 0 adds nothing

    trials = setup.study().trials
    assert len(trials) == 1
    assert trials[0].state == TrialState.COMPLETE
    assert trials[0].value == 0.75
    assert trials[0].params == {"lr": 0.001, "width": 32, "act": "tanh", "dropout": 0.2}
    assert trials[0].user_attrs == {"round": 0}
    # The next proposal is trial 1 of the same study.
    assert "trial 1" in setup.propose(1).strategy


@pytest.mark.parametrize("params_text", [
    "lr: 0.5\nwidth: 32\nact: tanh\ndropout: 0.2\n",        # lr above the space
    "lr: 0.001\nwidth: 30\nact: tanh\ndropout: 0.2\n",      # width off the step grid
    "lr: 0.001\nwidth: 32\nact: swish\ndropout: 0.2\n",     # not a choice
    "lr: 0.001\nwidth: 32\nact: tanh\n",                    # a parameter missing
    "lr: [0.001]\nwidth: 32\nact: tanh\ndropout: 0.2\n",    # not a number
    "- lr\n- width\n",                                      # not a mapping at all
    None,                                                   # no params file
])
def test_baseline_outside_the_space_seeds_nothing(tmp_path: Path,
                                                  params_text: str | None) -> None:
    setup = OptunaSetup(tmp_path)
    if params_text is not None:
        setup.params_path.write_text(params_text)

    setup.researcher().observe(0, 0.75, committed=True)

    assert setup.study().trials == []


def test_unmeasured_baseline_seeds_nothing(tmp_path: Path) -> None:
    setup = OptunaSetup(tmp_path)
    setup.params_path.write_text("lr: 0.001\nwidth: 32\nact: tanh\ndropout: 0.2\n")

    setup.researcher().observe(0, None, committed=False)

    assert setup.study().trials == []


# --- params files --------------------------------------------------------------------------


def test_read_and_write_params(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    assert read_params(path) == {}
    path.write_text("")
    assert read_params(path) == {}

    write_params(path, {"b": 1.5})
    write_params(path, {"a": "x", "b": 2})

    assert read_params(path) == {"b": 2, "a": "x"}


@pytest.mark.parametrize(("name", "text", "words"), [
    ("p.yaml", "- 1\n- 2\n", "must hold a mapping of parameters, got list"),
    ("p.json", "[1, 2]", "must hold a mapping of parameters, got list"),
    ("p.yaml", "a: [1\nb: 2\n", "p.yaml must be valid YAML"),
    ("p.json", "{'a': 1}", "p.json must be valid JSON"),
])
def test_unreadable_params_file_is_a_protocol_error(tmp_path: Path, name: str, text: str,
                                                    words: str) -> None:
    path = tmp_path / name
    path.write_text(text)

    with pytest.raises(ProtocolError, match=words):
        read_params(path)


def test_factory_builds_the_researcher_the_protocol_asks_for(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    optuna_researcher = make_researcher(_spec(), state_dir=tmp_path / "state",
                                        direction="minimize", workdir=tmp_path)
    command = make_researcher(CommandResearcherSpec(kind="command", command="true"),
                              state_dir=tmp_path / "state", direction="minimize",
                              workdir=tmp_path)

    assert isinstance(optuna_researcher, OptunaResearcher)
    assert isinstance(command, CommandResearcher)
    optuna_researcher.propose(_context(tmp_path, 1, workdir=tmp_path))
    assert (tmp_path / "state" / "optuna.db").is_file()
    assert set(read_params(tmp_path / "params.yaml")) == set(SPACE)


# --- command researcher --------------------------------------------------------------------


def _command(command: str, timeout: float | None = None) -> CommandResearcher:
    return CommandResearcher(CommandResearcherSpec(kind="command", command=command,
                                                   timeout=timeout))


def _py(code: str) -> str:
    """A shell command running ``code`` with this interpreter."""
    return f"{sys.executable} -c '{code}'"


def test_placeholders_are_substituted_and_shell_quoted(tmp_path: Path) -> None:
    # A path with a space and a quote must stay ONE argument.
    ctx = _context(tmp_path, 4, workdir=tmp_path / "my work's dir")
    researcher = _command(
        f"{sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "
        "{prompt_file} {round} {workdir} > args.json")

    proposal = researcher.propose(ctx)

    assert proposal.ok, proposal.cause
    args = json.loads((ctx.workdir / "args.json").read_text())
    assert args == [str(ctx.brief_path), "4", str(ctx.workdir)]


def test_environment_and_working_directory(tmp_path: Path) -> None:
    ctx = _context(tmp_path, 2)
    proposal = _command('printf "%s\\n" "$SPML_PROMPT_FILE" "$SPML_ROUND" "$SPML_STRATEGY_FILE" '
                        '"$SPML_WORKDIR" "$(pwd -P)" > env.txt').propose(ctx)

    assert proposal.ok, proposal.cause
    assert (ctx.workdir / "env.txt").read_text().splitlines() == [
        str(ctx.brief_path), "2", str(ctx.strategy_path), str(ctx.workdir),
        str(ctx.workdir.resolve())]
    assert proposal.duration_s > 0


def test_extra_environment_from_the_context_is_passed(tmp_path: Path) -> None:
    ctx = _context(tmp_path, 1)
    ctx = ResearchContext(**{**ctx.__dict__, "env": {"SPML_TIME_LIMIT": "5"}})

    proposal = _command('echo "limit $SPML_TIME_LIMIT"').propose(ctx)

    assert proposal.strategy == "limit 5"


def test_strategy_comes_from_the_strategy_file_first(tmp_path: Path) -> None:
    ctx = _context(tmp_path, 1)
    ctx.strategy_path.write_text("stale strategy of an earlier attempt\n")

    proposal = _command('printf "raise lr\\n  to 1e-3\\n" > "$SPML_STRATEGY_FILE"; '
                        'echo "last stdout line"').propose(ctx)

    assert proposal.ok
    assert proposal.strategy == "raise lr to 1e-3"


def test_strategy_falls_back_to_the_last_stdout_line(tmp_path: Path) -> None:
    ctx = _context(tmp_path, 1)
    ctx.strategy_path.write_text("stale strategy of an earlier attempt\n")

    proposal = _command('echo first; echo "  widen the MLP  "; echo; echo "   "').propose(ctx)

    assert proposal.strategy == "widen the MLP"
    assert not ctx.strategy_path.exists()


def test_no_strategy_at_all(tmp_path: Path) -> None:
    assert _command("true").propose(_context(tmp_path, 1)).strategy == "(no strategy given)"


def test_long_strategy_is_truncated(tmp_path: Path) -> None:
    ctx = _context(tmp_path, 1)

    proposal = _command(_py('print("x" * 1000)')).propose(ctx)

    assert proposal.strategy == "x" * MAX_STRATEGY_CHARS


def test_huge_sparse_strategy_file_is_read_bounded(tmp_path: Path) -> None:
    ctx = _context(tmp_path, 1)

    proposal = _command('truncate -s 3G "$SPML_STRATEGY_FILE"').propose(ctx)

    assert proposal.ok
    assert len(proposal.strategy) <= MAX_STRATEGY_CHARS


def test_non_zero_exit_fails_the_proposal_and_names_the_exit(tmp_path: Path) -> None:
    ctx = _context(tmp_path, 1)

    proposal = _command('echo "tried something"; echo "agent quota exceeded" >&2; '
                        "exit 3").propose(ctx)

    assert proposal.ok is False
    assert proposal.strategy == "tried something"
    assert proposal.cause.startswith("researcher crashed: exit 3")
    assert "agent quota exceeded" in proposal.cause


def test_timeout_fails_the_proposal(tmp_path: Path) -> None:
    ctx = _context(tmp_path, 1, timeout_s=0.5)

    proposal = _command('echo "still thinking"; sleep 30').propose(ctx)

    assert proposal.ok is False
    assert proposal.cause == "researcher timed out after 0.5s (process group killed)"
    assert proposal.strategy == "still thinking"
    assert proposal.duration_s < 10


def test_command_researcher_observe_and_abandon_change_nothing(tmp_path: Path) -> None:
    researcher = _command("true")

    researcher.observe(1, 0.5, committed=True)
    researcher.abandon(1)

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["tpe", "cmaes"])
def test_startup_trials_reach_the_sampler(kind: str) -> None:
    from spml.toolkit.loop.researchers.optuna_search import _sampler

    spec = OptunaResearcherSpec.model_validate(
        {"kind": "optuna", "params_file": "p.yaml", "sampler": kind, "startup_trials": 3,
         "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}}})
    assert _sampler(spec, n_trials=0)._n_startup_trials == 3
