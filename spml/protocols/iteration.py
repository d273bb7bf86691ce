"""The ml-iteration protocol: `iteration-protocol.md`, YAML front matter + prose.

Each round a researcher edits the code, the supervisor trains, evaluates and reviews the round
against the compound `review_criteria`, then commits or rolls back. The front matter is
validated by `IterationProtocol` (pydantic v2, strict, unknown fields refused); the prose body
(initial hints, background) goes to the researcher verbatim.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from spml.protocols.autoresearch import (
    TRAIN_GRACE_S,
    Direction,
    FixedSpec,
    _check_globs,
)
from spml.protocols.frontmatter import (
    PositiveDuration,
    changed_fields,
    load_model,
    read_front_matter,
)
from spml.protocols.parallel import ParallelSpec
from spml.protocols.researchers import ResearcherSpec
from spml.protocols.review_criteria import SUPERVISOR_MEASURED, Criterion, ReviewCriteria
from spml.protocols.sandbox import SandboxSpec

PROTOCOL_FILENAME = "iteration-protocol.md"

# Changing these mid-run would make rounds incomparable with the recorded best. The review
# criteria, max_rounds and the focus hint may change ("also watch X", "increase max_rounds").
LOCKED_FIELDS: tuple[str, ...] = (
    "train_command", "fixed", "eval", "researcher.kind", "acceptance")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class IterationEvalSpec(_Section):
    """The fixed evaluation: its output is the only source of the metrics criteria."""

    command: str = Field(min_length=1, description="Evaluation command, run verbatim.")
    timeout: PositiveDuration | None = Field(
        default=None, description="Seconds before the eval is killed "
        "(default: fixed.time_limit + 30)."
    )


class IterationAcceptance(_Section):
    """How a round's numbers are measured and compared with the best."""

    repeats: int = Field(
        default=1, ge=1, le=20, description="Train+eval runs per round (seeds 0..n-1 via "
        "SPML_SEED); their mean is reviewed."
    )
    noise: float | None = Field(
        default=None, gt=0, le=1, description="Relative noise margin: a change smaller than "
        "this fraction of the best value is noise, neither improved nor regressed "
        "(null = the documented defaults)."
    )

    @property
    def runs(self) -> int:
        """Train+eval runs of each round (the loop engine asks every kind this)."""
        return self.repeats

    @property
    def incumbent_runs(self) -> int:
        """Runs of the baseline and of a re-measured HEAD."""
        return self.repeats


class IterationProtocol(_Section):
    """The machine-readable part of `iteration-protocol.md`."""

    schema_version: Literal[1] = Field(default=1, description="Protocol schema version.")
    goal: str = Field(min_length=1, description="What the iteration should achieve, in words.")
    max_rounds: int = Field(default=10, ge=0, description="Rounds after the baseline.")
    train_command: str = Field(min_length=1, description="Training command, run verbatim.")
    fixed: FixedSpec = Field(description="Locked files (at least the eval script and the data "
                             "loader; hash-checked every round) and the training budget.")
    focused_files: list[str] = Field(
        default_factory=list, description="Globs the researcher should focus on (a hint: "
        "every file not in fixed.files may be edited).")
    eval: IterationEvalSpec
    researcher: ResearcherSpec
    acceptance: IterationAcceptance = Field(default_factory=IterationAcceptance)
    experiences_window: int = Field(
        default=5, ge=1, description="Experience rows shown to the researcher each round.")
    review_criteria: ReviewCriteria
    sandbox: SandboxSpec = Field(
        default_factory=SandboxSpec, description="How the researcher, training and evaluation "
        "commands are confined: auto (default), on, off, or {mode, writable, network}.")
    parallel: ParallelSpec = Field(
        default_factory=ParallelSpec, description="Candidates tried at once per batch, and "
        "where they run: {candidates, runner: local|dask, address, git_remote, "
        "gpus_per_candidate}; more than one candidate rules out timing criteria.")

    _focused_files = field_validator("focused_files")(_check_globs)

    @field_validator("review_criteria")
    @classmethod
    def _optuna_needs_an_objective(cls, criteria: ReviewCriteria,
                                   info: ValidationInfo) -> ReviewCriteria:
        researcher = info.data.get("researcher")
        if getattr(researcher, "kind", None) == "optuna" and _objective(criteria) is None:
            raise ValueError(
                "researcher kind 'optuna' needs a scalar objective: add a metrics criterion "
                "with op >=, >, <= or < (e.g. {name: val_loss, op: '<=', threshold: 1.5}); "
                "'==' criteria cannot be optimised")
        return criteria

    @field_validator("parallel")
    @classmethod
    def _no_timing_in_parallel(cls, parallel: ParallelSpec,
                               info: ValidationInfo) -> ParallelSpec:
        criteria = info.data.get("review_criteria")
        if not parallel.batched or criteria is None:
            return parallel
        timed = [f"performance.{c.name}" for c in criteria.performance] + [
            f"metrics.{c.name}" for c in criteria.metrics if c.name in SUPERVISOR_MEASURED]
        if timed:
            raise ValueError(
                f"parallel.candidates {parallel.candidates} with timing criteria "
                f"({', '.join(timed)}): candidates that train at once share the machine, so "
                "their times are not comparable with the incumbent's. Set parallel.candidates "
                "to 1, or drop the timing criteria")
        return parallel

    @property
    def train_timeout_s(self) -> float:
        """Hard wall-clock limit of one training run: time_limit + 30 s grace."""
        return self.fixed.time_limit + TRAIN_GRACE_S

    @property
    def eval_timeout_s(self) -> float:
        """Hard wall-clock limit of one evaluation run."""
        return self.eval.timeout or self.fixed.time_limit + TRAIN_GRACE_S

    @property
    def researcher_timeout_s(self) -> float:
        """Per-round researcher timeout (default 2 x time_limit)."""
        return self.researcher.timeout or 2 * self.fixed.time_limit

    @property
    def editable_files(self) -> list[str]:
        """Globs the researcher may edit: everything not in fixed.files."""
        return ["**"]

    @property
    def objective(self) -> Criterion | None:
        """The scalar shown on the ledger's `best:` line and optimised by an optuna
        researcher: the first metrics criterion not using ``==`` (else the first one)."""
        return _objective(self.review_criteria) or next(iter(self.review_criteria.metrics),
                                                        None)

    @property
    def metric(self) -> str | None:
        """Name of the objective, or None without metrics criteria."""
        objective = self.objective
        return objective.name if objective is not None else None

    @property
    def direction(self) -> Direction | None:
        """maximize for >= and >; minimize for <=, < and == (the distance to the target)."""
        objective = self.objective
        if objective is None:
            return None
        return "maximize" if objective.op in (">=", ">") else "minimize"


def _objective(criteria: ReviewCriteria) -> Criterion | None:
    return next((item for item in criteria.metrics if item.op != "=="), None)


def load_protocol(path: Path) -> IterationProtocol:
    """Parse and validate an ml-iteration protocol file.

    Raises:
        ProtocolError: one line per problem, naming the field, its line, and the fix.
    """
    return load_model(path, IterationProtocol)


def read_protocol_body(path: Path) -> str:
    """The free prose below the front matter (passed to the researcher)."""
    return read_front_matter(path).body


def locked_changes(old: IterationProtocol, new: IterationProtocol) -> list[str]:
    """Names of the locked fields that differ between two versions of a protocol."""
    return changed_fields(old, new, LOCKED_FIELDS)


def protocol_json_schema() -> dict[str, Any]:
    """JSON Schema of the protocol's front matter."""
    schema = IterationProtocol.model_json_schema()
    schema["title"] = "spml ml-iteration protocol (YAML front matter)"
    return schema
