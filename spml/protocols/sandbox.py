"""The `sandbox:` section of a loop protocol: how the commands run on the researcher's behalf
(the researcher, training, the evaluation) are confined.

``sandbox: auto`` (the default) confines them where the kernel allows and otherwise runs them
unconfined, saying so in the run log, the ledger header and the summary; ``sandbox: on`` refuses
to start without a sandbox; ``sandbox: off`` runs unconfined on purpose. The mapping form adds
``writable`` (paths outside the worktree a coding agent needs: its config and cache
directories, ``~`` expanded) and ``network: false`` (no network at all).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SandboxMode = Literal["auto", "on", "off"]


class SandboxSpec(BaseModel):
    """Confinement of the researcher, training and evaluation commands."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    mode: SandboxMode = Field(
        default="auto", description="auto: confine where the kernel allows, else warn; on: "
        "refuse to run unconfined; off: never confine.")
    writable: list[str] = Field(
        default_factory=list, description="Absolute or ~ paths outside the worktree the "
        "commands may write (a coding agent's own config/cache directories).")
    network: bool = Field(default=True, description="false: the commands get no network.")

    @model_validator(mode="before")
    @classmethod
    def _mode_alone(cls, value: Any) -> Any:
        """``sandbox: off`` is short for ``sandbox: {mode: off}`` (YAML reads a bare on/off as
        a boolean: true/false mean on/off)."""
        if isinstance(value, bool):
            return {"mode": "on" if value else "off"}
        if isinstance(value, str):
            return {"mode": value}
        return value

    @field_validator("writable")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not (path.startswith("~") or PurePosixPath(path).is_absolute()):
                raise ValueError(f"sandbox.writable paths must be absolute or start with ~, "
                                 f"got {path!r} (the worktree is always writable)")
        return paths


class HoldoutSpec(BaseModel):
    """A held-out split no round may read: sealed inside the sandbox during every round, and
    measured once the loop ends, on the baseline and on the final best."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    paths: list[str] = Field(
        min_length=1, description="Files or directories (relative to the experiment "
        "directory) of the held-out data; never tracked by git (history would leak them).")
    command: str = Field(
        min_length=1, description="The evaluation on the held-out data, run after training "
        "like eval.command; it finds the experiment directory (where the paths lie) in "
        "SPML_HOLDOUT_DIR and prints or writes (SPML_METRIC_FILE) the same metric.")

    @field_validator("paths")
    @classmethod
    def _relative(cls, paths: list[str]) -> list[str]:
        for path in paths:
            pure = PurePosixPath(path)
            if not path.strip() or pure.is_absolute() or ".." in pure.parts or path == ".":
                raise ValueError(f"holdout.paths must lie inside the experiment directory "
                                 f"(relative, no '..'), got {path!r}")
        return paths
