"""The Auto Research protocol: `autoresearch-protocol.md`, YAML front matter + prose.

The front matter is validated by `AutoresearchProtocol` (pydantic v2, strict, unknown fields
refused); the prose body goes to the researcher verbatim. `spml schema autoresearch` prints the
JSON Schema of the front matter so editors can validate the file.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spml.protocols.frontmatter import (
    PositiveDuration,
    changed_fields,
    load_model,
    read_front_matter,
)
from spml.protocols.frontmatter import parse_duration as parse_duration  # public: re-exported
from spml.protocols.parallel import ParallelSpec
from spml.protocols.researchers import ResearcherSpec
from spml.protocols.sandbox import HoldoutSpec, SandboxSpec

PROTOCOL_FILENAME = "autoresearch-protocol.md"
Direction = Literal["maximize", "minimize"]


def _check_globs(globs: list[str]) -> list[str]:
    for glob in globs:
        path = PurePosixPath(glob)
        if not glob.strip() or path.is_absolute() or ".." in path.parts:
            raise ValueError(
                f"file globs must be relative to the experiment directory, got {glob!r}"
            )
    return globs


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FixedSpec(_Section):
    """What the researcher may never touch, and the training budget."""

    files: Annotated[list[str], Field(min_length=1)] = Field(
        description="Globs (relative to the experiment dir) of framework files: data, eval, "
        "entry point, termination logic. Hash-checked before every evaluation."
    )
    time_limit: PositiveDuration = Field(
        description="Training wall-clock budget in seconds (or '5min'); the run is "
        "killed at time_limit + 30 s."
    )
    epoch_limit: int | None = Field(
        default=None, ge=1, description="Optional epoch cap, passed as SPML_EPOCH_LIMIT."
    )
    outputs: list[str] = Field(
        default_factory=list, description="Globs of what training writes for the evaluation "
        "(checkpoints, predictions); every other git-ignored file is removed before each "
        "evaluation. Empty: every non-importable one stays. Importable files (.py, .pyc, .so, "
        ".pth) are never outputs."
    )

    _files = field_validator("files")(_check_globs)
    _outputs = field_validator("outputs")(_check_globs)


class VariableSpec(_Section):
    """The only files the researcher may edit or create."""

    files: Annotated[list[str], Field(min_length=1)] = Field(
        description="Globs of the files the researcher may change or create."
    )
    range: str = Field(default="", description="What may be varied, in words.")

    _files = field_validator("files")(_check_globs)


class EvalSpec(_Section):
    """The fixed evaluation: its output is the only source of truth for the metric."""

    command: str = Field(min_length=1, description="Evaluation command, run verbatim.")
    metric: str = Field(
        pattern=r"^[A-Za-z0-9_./-]+$", description="Metric key printed by the command."
    )
    direction: Direction = Field(description="Whether larger or smaller is better.")
    timeout: PositiveDuration | None = Field(
        default=None, description="Seconds before the eval is killed "
        "(default: fixed.time_limit + 30)."
    )


SIGNIFICANCE_REPEATS = 5   # most runs per candidate by default
MIN_INCUMBENT_RUNS = 3     # a noise estimate needs the incumbent measured more than once


class AcceptanceSpec(_Section):
    """When a round counts as an improvement (the README's "What counts as progress").

    ``significance`` (the default) keeps a change only when its gain over the incumbent is
    larger than the measured run-to-run noise at ``confidence`` and larger than ``min_delta``;
    ``greedy`` keeps any mean over ``repeats`` runs that beats the best by more than
    ``min_delta`` (one run by default: a lucky draw counts as progress).
    """

    mode: Literal["significance", "greedy"] = Field(
        default="significance", description="significance: keep only gains beyond the measured "
        "noise (the default); greedy: keep any mean that beats the best by more than min_delta."
    )
    min_delta: float = Field(
        default=0.0, ge=0, allow_inf_nan=False,
        description="Improvement must beat the best by more than this."
    )
    repeats: int | None = Field(
        default=None, ge=1, le=20, description="significance: the most train+eval runs a "
        f"candidate gets (default {SIGNIFICANCE_REPEATS}; the incumbent is measured this many "
        f"times, at least {MIN_INCUMBENT_RUNS}); greedy: runs per round (default 1). Seeds "
        "0..n-1 via SPML_SEED."
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, allow_inf_nan=False,
        description="significance: one-sided confidence that a kept change is better."
    )
    confirm: int | None = Field(
        default=None, ge=0, le=20, description="Runs of the final best and of the baseline, on "
        "fresh seeds, when the loop ends (default: repeats in significance mode, 0 in greedy)."
    )

    @property
    def greedy(self) -> bool:
        """Today's rule: one mean against the best, no noise estimate."""
        return self.mode == "greedy"

    @property
    def runs(self) -> int:
        """The most train+eval runs of one candidate."""
        return self.repeats or (1 if self.greedy else SIGNIFICANCE_REPEATS)

    @property
    def incumbent_runs(self) -> int:
        """Runs of the baseline and of each kept version (topped up before it is compared)."""
        return self.runs if self.greedy else max(self.runs, MIN_INCUMBENT_RUNS)

    @property
    def confirm_runs(self) -> int:
        """Fresh-seed runs per side when the loop ends (0: no confirmation)."""
        if self.confirm is not None:
            return self.confirm
        return 0 if self.greedy else self.runs


class AutoresearchProtocol(_Section):
    """The machine-readable part of `autoresearch-protocol.md`."""

    schema_version: Literal[1] = Field(default=1, description="Protocol schema version.")
    research_question: str = Field(min_length=1, description="One sentence.")
    max_rounds: int = Field(ge=0, description="Rounds after the baseline (round 0).")
    target: float | None = Field(
        default=None, allow_inf_nan=False,
        description="Stop once the best reaches this value (null = no target)."
    )
    baseline: float | None = Field(
        default=None, allow_inf_nan=False,
        description="Known baseline metric, checked against round 0's measurement (a "
        "mismatch beyond noise is noted); null = none."
    )
    train_command: str = Field(min_length=1, description="Training command, run verbatim.")
    fixed: FixedSpec
    variable: VariableSpec
    eval: EvalSpec
    researcher: ResearcherSpec
    experiences_window: int = Field(
        default=5, ge=1, description="Experience rows shown to the researcher each round."
    )
    acceptance: AcceptanceSpec = Field(default_factory=AcceptanceSpec)
    holdout: HoldoutSpec | None = Field(
        default=None, description="Held-out data sealed from every round and measured when "
        "the loop ends (paths untracked by git, and the command that evaluates on them).")
    sandbox: SandboxSpec = Field(
        default_factory=SandboxSpec, description="How the researcher, training and evaluation "
        "commands are confined: auto (default), on, off, or {mode, writable, network}.")
    parallel: ParallelSpec = Field(
        default_factory=ParallelSpec, description="Candidates tried at once per batch, and "
        "where they run: {candidates, runner: local|dask, address, git_remote, "
        "gpus_per_candidate}.")

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

    # The accessors every loop kind's protocol offers the engine (see IterationProtocol).
    @property
    def editable_files(self) -> list[str]:
        """Globs the researcher may change or create."""
        return list(self.variable.files)

    @property
    def metric(self) -> str:
        """The metric the loop optimises."""
        return self.eval.metric

    @property
    def direction(self) -> Direction:
        """Whether larger or smaller is better."""
        return self.eval.direction


TRAIN_GRACE_S = 30.0

# Changing these mid-run would make the metric incomparable with the recorded best.
# `acceptance` too: a best recorded under one rule is no yardstick for another.
LOCKED_FIELDS: tuple[str, ...] = ("train_command", "fixed", "eval", "baseline", "researcher.kind",
                                  "acceptance", "holdout")


def load_protocol(path: Path) -> AutoresearchProtocol:
    """Parse and validate a protocol file.

    Raises:
        ProtocolError: one line per problem, naming the field, its line, and the fix.
    """
    return load_model(path, AutoresearchProtocol)


def read_protocol_body(path: Path) -> str:
    """The free prose below the front matter (passed to the researcher)."""
    return read_front_matter(path).body


def locked_changes(old: AutoresearchProtocol, new: AutoresearchProtocol) -> list[str]:
    """Names of the locked fields that differ between two versions of a protocol."""
    return changed_fields(old, new, LOCKED_FIELDS)


def protocol_json_schema() -> dict[str, Any]:
    """JSON Schema of the protocol's front matter."""
    schema = AutoresearchProtocol.model_json_schema()
    schema["title"] = "spml autoresearch protocol (YAML front matter)"
    return schema
