"""`kind: optuna`: a classical researcher that proposes parameter values with an Optuna sampler.

The study lives in SQLite under the experiment's `.spml/`, so a resumed loop continues the same
study. Each round asks one trial (tagged with its round number), writes the values into the
params file, and the measured value (the mean over the round's seeds) is told back when the round
is decided. The baseline is the study's first trial, so a rebuilt sampler is warm-started with
every round measured so far. `sampler: auto` picks GP or TPE from the space (`chosen_sampler`).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from spml.errors import ProtocolError
from spml.protocols.researchers import FloatParam, IntParam, OptunaResearcherSpec, ParamSpec
from spml.toolkit.loop.researchers.base import Proposal, ResearchContext

STUDY_NAME = "autoresearch"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def distribution_of(spec: ParamSpec) -> BaseDistribution:
    """The Optuna distribution for one protocol parameter."""
    if isinstance(spec, FloatParam):
        return FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, IntParam):
        return IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    return CategoricalDistribution(spec.choices)


# `sampler: auto` takes GP up to this many parameters. A GP fits one length scale per parameter
# from the few dozen rounds a loop runs, so beyond a handful of dimensions its model is guesswork
# and TPE's per-parameter densities do as well. Its cost (cubic in trials) is not what binds:
# an ask took < 0.2 s with 8 parameters and 200 trials (Optuna 5.1, 2 CPU cores).
GP_MAX_PARAMS = 8
GP_STARTUP_TRIALS = 5  # random trials (the baseline included) before GP models the space


def chosen_sampler(spec: OptunaResearcherSpec) -> str:
    """The sampler a round uses: the named one, or for `auto` gp on a small numeric space
    (floats and ints only, at most GP_MAX_PARAMS) and tpe otherwise."""
    if spec.sampler != "auto":
        return spec.sampler
    # A GP sees a category only as equal to another or not; TPE models each one's density.
    numeric = all(isinstance(p, FloatParam | IntParam) for p in spec.space.values())
    return "gp" if numeric and len(spec.space) <= GP_MAX_PARAMS else "tpe"


def _sampler(spec: OptunaResearcherSpec, n_trials: int) -> optuna.samplers.BaseSampler:
    seed = None if spec.seed is None else _round_seed(spec.seed, n_trials)
    startup = {} if spec.startup_trials is None else {"n_startup_trials": spec.startup_trials}
    name = chosen_sampler(spec)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **startup)
    if name == "gp":
        # Optuna's 10 random trials (the baseline counts as one) would leave a 12-round loop
        # 3 model-based rounds; 5 measured better (benchmarks/search_efficiency.py).
        return _gp_sampler(seed, startup or {"n_startup_trials": GP_STARTUP_TRIALS})
    return optuna.samplers.TPESampler(seed=seed, **startup)


def _round_seed(seed: int, n_trials: int) -> int:
    # Each round builds a fresh sampler (the process may have been restarted in between), so a
    # fixed seed would replay the same random draw every round: derive one per trial count.
    # Not `seed + n_trials`: then seed 1 would replay seed 0's draws one round later.
    digest = hashlib.blake2b(f"{seed}/{n_trials}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _gp_sampler(seed: int | None, startup: dict[str, int]) -> optuna.samplers.BaseSampler:
    # Optuna 4.x marks GPSampler experimental and would warn once per round: the warning says
    # nothing a user can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # deterministic_objective stays False: a round's value is noisy (seeds, hardware), so
        # the GP fits a noise term instead of interpolating every measurement exactly.
        return optuna.samplers.GPSampler(seed=seed, **startup)


class OptunaResearcher:
    """Proposes values for the protocol's `space` and writes them into `params_file`."""

    def __init__(self, spec: OptunaResearcherSpec, *, storage_path: Path, direction: str,
                 workdir: Path) -> None:
        self._spec = spec
        self._storage = f"sqlite:///{storage_path}"
        self._direction = direction
        self._params_path = workdir / spec.params_file
        self._distributions = {name: distribution_of(p) for name, p in spec.space.items()}

    def _study(self) -> optuna.Study:
        study = optuna.create_study(study_name=STUDY_NAME, storage=self._storage,
                                    direction=self._direction, load_if_exists=True)
        study.sampler = _sampler(self._spec, len(study.trials))
        return study

    def propose(self, ctx: ResearchContext) -> Proposal:
        """Ask one trial and write its values into the params file."""
        started = time.monotonic()
        study = self._study()
        self._fail_running(study, keep=ctx.batch)
        # The batch's siblings asked before this one are RUNNING: TPE's constant liar (on by
        # default) and the GP sampler's running-trial mode propose away from them, and the
        # sampler's seed follows the trial count, so concurrent trials never share a seed.
        trial = study.ask(self._distributions)
        trial.set_user_attr("round", ctx.round_no)
        params = {name: trial.params[name] for name in self._spec.space}
        write_params(self._params_path, params)
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
        strategy = f"{shown} (optuna {chosen_sampler(self._spec)} trial {trial.number})"
        return Proposal(True, strategy, "", time.monotonic() - started)

    def observe(self, round_no: int, value: float | None, committed: bool) -> None:
        """Tell the round's trial its value (FAIL when unmeasured); seed the study at round 0."""
        study = self._study()
        if round_no == 0:
            if value is not None and not study.trials:
                self._add_baseline(study, value)
            return
        for trial in self._running(study, round_no):
            if value is None or value != value:  # NaN counts as a failed trial
                study.tell(trial.number, state=TrialState.FAIL)
            else:
                study.tell(trial.number, value)

    def abandon(self, round_no: int) -> None:
        """Fail the round's open trial: the round will be redone with a new one."""
        study = self._study()
        for trial in self._running(study, round_no):
            study.tell(trial.number, state=TrialState.FAIL)

    def _running(self, study: optuna.Study, round_no: int) -> list[optuna.trial.FrozenTrial]:
        return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.user_attrs.get("round") == round_no]

    def _fail_running(self, study: optuna.Study, keep: tuple[int, ...] = ()) -> None:
        # A RUNNING trial of a round outside this batch was asked by a supervisor that died
        # before telling it.
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get("round") not in keep:
                study.tell(trial.number, state=TrialState.FAIL)

    def _add_baseline(self, study: optuna.Study, value: float) -> None:
        try:  # ProtocolError is a ValueError: an unreadable params file seeds nothing either
            current = read_params(self._params_path)
            params = {k: current[k] for k in self._distributions if k in current}
            if len(params) != len(self._distributions):
                return
            trial = optuna.trial.create_trial(params=params, distributions=self._distributions,
                                              value=value, user_attrs={"round": 0})
        except ValueError:  # baseline values outside the search space: nothing to seed
            return
        study.add_trial(trial)


def read_params(path: Path) -> dict[str, Any]:
    """The params file as a mapping ({} when absent)."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:  # json.JSONDecodeError is a ValueError
        raise ProtocolError(f"params file {path.name} must be valid "
                            f"{'JSON' if path.suffix == '.json' else 'YAML'}: "
                            f"{' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProtocolError(f"params file {path.name} must hold a mapping of parameters, got "
                            f"{type(data).__name__}. Make it `name: value` lines.")
    return data


def write_params(path: Path, params: dict[str, Any]) -> None:
    """Update ``params`` in the file; parameters not in ``params`` are left as they are."""
    data = {**read_params(path), **params}
    if path.suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    path.write_text(text, encoding="utf-8")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
