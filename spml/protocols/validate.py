"""``[tool.spml.validate]`` in pyproject.toml: which L0 checks run, and their thresholds."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spml.protocols.frontmatter import PositiveDuration

CHECK_ID = re.compile(r"^L0-\d{2}$")


def _ids(values: list[str]) -> list[str]:
    out = []
    for value in values:
        value = value.strip().upper()
        if value != "ALL" and not CHECK_ID.match(value):
            raise ValueError(f"{value!r} is not a check id; ids look like 'L0-06' (or 'ALL')")
        out.append(value)
    return out


class RuntimeSettings(BaseModel):
    """``[tool.spml.validate.runtime]``: how L1 runs the project (entry point OR commands).

    Durations take seconds or ``5min``/``1h``; thresholds override SPML's defaults
    (L1 Thresholds), e.g. ``{grad_exploding = 1e4}``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    entry: str | None = Field(None, description="`module:function` returning the project's "
                              "pieces (see the L1 entry-point contract).")
    train_command: str | None = Field(None, alias="train-command",
                                      description="Training command honouring SPML_MAX_STEPS.")
    eval_command: str | None = Field(None, alias="eval-command",
                                     description="Evaluation command; {checkpoint} is filled.")
    metric: str | None = Field(None, description="Metric the eval command prints.")
    checkpoint_glob: str = Field("{checkpoint_dir}/*", alias="checkpoint-glob",
                                 description="Where the run's checkpoint appears.")
    max_steps: int = Field(50, alias="max-steps", gt=0, description="SPML_MAX_STEPS.")
    time_limit: PositiveDuration = Field(300.0, alias="time-limit",
                                         description="SPML_TIME_LIMIT (SPML: ~5 min).")
    limit_check: PositiveDuration = Field(30.0, alias="limit-check",
                                          description="The run must show its limit by then.")
    total_timeout: PositiveDuration = Field(900.0, alias="total-timeout",
                                            description="All stages together (SPML: 15 min).")
    seed: int = 0
    thresholds: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_way_in(self) -> RuntimeSettings:
        if bool(self.entry) == bool(self.train_command):
            raise ValueError("set exactly one of entry (module:function) and train-command")
        if self.entry and ":" not in self.entry:
            raise ValueError(f"entry must be 'module:function', got {self.entry!r}")
        if self.eval_command and not self.metric:
            raise ValueError("eval-command needs metric (the name the command prints)")
        return self


class ValidateConfig(BaseModel):
    """Options for ``spml validate static``; CLI flags override these."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    profile: Literal["default", "spml"] = Field(
        "default", description="Severities: 'default' (critical = a defect that corrupts results "
        "or wastes the compute) or 'spml' (SPML's mandatory practices are critical too).")
    select: list[str] = Field(default_factory=lambda: ["ALL"],
                              description="Check ids to run ('ALL' for every check).")
    ignore: list[str] = Field(default_factory=list, description="Check ids never to run.")
    exclude: list[str] = Field(
        default_factory=list, description="Globs of files or folders (relative to an analysed "
        "folder, or a name) never analysed, e.g. 'legacy/' or '*_py2.py'.")
    per_file_ignores: dict[str, list[str]] = Field(
        default_factory=dict, alias="per-file-ignores",
        description="Glob (relative to the config file) -> check ids ignored in matching files.")
    target_gpu_memory_gb: float = Field(
        80.0, alias="target-gpu-memory-gb", gt=0,
        description="L0-16: memory of the GPU the run targets, in GB.")
    large_data_gb: float = Field(
        10.0, alias="large-data-gb", gt=0,
        description="L0-07: a data file at least this large should be memory-mapped.")
    runtime: dict[str, object] | None = Field(
        None, description="L1 settings ([tool.spml.validate.runtime]); see RuntimeSettings.")

    @field_validator("select", "ignore")
    @classmethod
    def _check_ids(cls, values: list[str]) -> list[str]:
        return _ids(values)

    @field_validator("per_file_ignores")
    @classmethod
    def _check_file_ids(cls, table: dict[str, list[str]]) -> dict[str, list[str]]:
        return {glob: _ids(ids) for glob, ids in table.items()}
