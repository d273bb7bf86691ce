"""``[tool.spml.validate]`` in pyproject.toml: which L0 checks run, and their thresholds."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

CHECK_ID = re.compile(r"^L0-\d{2}$")


def _ids(values: list[str]) -> list[str]:
    out = []
    for value in values:
        value = value.strip().upper()
        if value != "ALL" and not CHECK_ID.match(value):
            raise ValueError(f"{value!r} is not a check id; ids look like 'L0-06' (or 'ALL')")
        out.append(value)
    return out


class ValidateConfig(BaseModel):
    """Options for ``spml validate static``; CLI flags override these."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    select: list[str] = Field(default_factory=lambda: ["ALL"],
                              description="Check ids to run ('ALL' for every check).")
    ignore: list[str] = Field(default_factory=list, description="Check ids never to run.")
    per_file_ignores: dict[str, list[str]] = Field(
        default_factory=dict, alias="per-file-ignores",
        description="Glob (relative to the config file) -> check ids ignored in matching files.")
    target_gpu_memory_gb: float = Field(
        80.0, alias="target-gpu-memory-gb", gt=0,
        description="L0-16: memory of the GPU the run targets, in GB.")
    large_data_gb: float = Field(
        10.0, alias="large-data-gb", gt=0,
        description="L0-07: a data file at least this large should be memory-mapped.")

    @field_validator("select", "ignore")
    @classmethod
    def _check_ids(cls, values: list[str]) -> list[str]:
        return _ids(values)

    @field_validator("per_file_ignores")
    @classmethod
    def _check_file_ids(cls, table: dict[str, list[str]]) -> dict[str, list[str]]:
        return {glob: _ids(ids) for glob, ids in table.items()}
