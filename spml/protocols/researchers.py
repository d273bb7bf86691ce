"""Researcher settings in the protocol: `kind: command` (any agent or script) or `kind: optuna`."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spml.protocols.frontmatter import PositiveDuration

Scalar = str | int | float | bool | None


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FloatParam(_Spec):
    """A float parameter sampled in [low, high]."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log: true")
        return self


class IntParam(_Spec):
    """An integer parameter sampled in [low, high] with a step."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log)
        if self.log and self.step != 1:  # Optuna refuses the pair when the study starts
            raise ValueError(f"step must be 1 when log: true, got step={self.step!r}")
        return self


class CategoricalParam(_Spec):
    """A parameter chosen from a list of values."""

    type: Literal["categorical"]
    choices: Annotated[list[Scalar], Field(min_length=1)]


def _check_bounds(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low must be <= high, got low={low!r} high={high!r}")
    if log and low <= 0:
        raise ValueError(f"low must be > 0 when log: true, got {low!r}")


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class CommandResearcherSpec(_Spec):
    """Runs any coding agent or script in the worktree once per round.

    Placeholders in `command`: {prompt_file}, {round}, {workdir}.
    """

    reads_notes: ClassVar[bool] = True  # notes are in the brief the agent reads

    kind: Literal["command"]
    command: str = Field(min_length=1, description="Shell command; exit 0 = code ready.")
    timeout: PositiveDuration | None = Field(
        default=None, description="Seconds per round, or '10min' (default 2 x fixed.time_limit)."
    )

    @field_validator("command")
    @classmethod
    def _known_placeholders(cls, command: str) -> str:
        try:
            command.format(prompt_file="", round=0, workdir="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"command may only use the placeholders {{prompt_file}}, {{round}}, "
                f"{{workdir}} (write {{{{ and }}}} for literal braces); problem: {exc}"
            ) from None
        return command


class OptunaResearcherSpec(_Spec):
    """Proposes parameter values with an Optuna sampler and writes them into a params file."""

    # A sampler reads values, not prose: a person's note reaches the ledger, not the search.
    reads_notes: ClassVar[bool] = False

    kind: Literal["optuna"]
    params_file: str = Field(
        pattern=r"\.(ya?ml|json)$", description="YAML or JSON file inside variable.files."
    )
    sampler: Literal["auto", "tpe", "gp", "random", "cmaes"] = Field(
        default="auto", description="auto (the default): gp when every parameter is a float or "
        "int and there are at most 8 of them, tpe otherwise. Name one to override."
    )
    seed: int | None = Field(default=None, description="Sampler seed (reproducible search).")
    startup_trials: int | None = Field(
        default=None, ge=1, description="tpe/gp/cmaes: random trials (baseline included) before "
        "the model-based search starts (default: 5 for gp, Optuna's 10 for tpe, 1 for cmaes)."
    )
    space: dict[str, ParamSpec] = Field(min_length=1, description="One entry per parameter.")
    timeout: PositiveDuration | None = Field(
        default=None, description="Seconds per round, or '10min' (default 2 x fixed.time_limit)."
    )


ResearcherSpec = Annotated[
    CommandResearcherSpec | OptunaResearcherSpec, Field(discriminator="kind")
]
