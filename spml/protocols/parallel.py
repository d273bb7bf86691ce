"""The `parallel:` section of a loop protocol: how many candidates a round batch tries at once,
and where they run.

``candidates: 1`` (the default) is the one-round-at-a-time loop. ``candidates: K`` makes each
batch K researcher proposals against the same incumbent, trained and evaluated at once, then
settled together: the best candidate whose gain is significant (at the protocol's confidence,
Bonferroni-corrected for the K comparisons) is committed, the others archived as attempts.

``runner: local`` runs the candidates as processes on this machine (Prefect's thread-pool task
runner orchestrates them; ``gpus_per_candidate`` gives each its own ``CUDA_VISIBLE_DEVICES``).
``runner: dask`` submits each candidate's training and evaluation to a Dask cluster through
Prefect's Dask task runner: a local cluster when ``address`` is empty, else the scheduler at
``address``; its workers fetch the candidate's code from ``git_remote`` (a URL or path every
worker can reach), never from a shared filesystem; ``gpus_per_candidate`` there asks each
training for that many ``GPU`` worker resources (``dask worker --resources GPU=<n>``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_CANDIDATES = 64


class ParallelSpec(BaseModel):
    """Batches of candidates tried at once."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    candidates: int = Field(
        default=1, ge=1, le=MAX_CANDIDATES, description="Candidates per batch (1: one round "
        "at a time). Each is one ledger row; a batch commits at most one.")
    runner: Literal["local", "dask"] = Field(
        default="local", description="local: processes on this machine; dask: a Dask cluster "
        "(a local one when address is empty).")
    address: str | None = Field(
        default=None, min_length=1, description="dask: the scheduler, e.g. tcp://10.0.0.5:8786 "
        "(empty: a LocalCluster with one worker per candidate).")
    git_remote: str | None = Field(
        default=None, min_length=1, description="dask: the git remote (URL or path) the "
        "supervisor pushes each candidate's commit to and the workers fetch it from (default: "
        "the repository itself, which only workers on this machine can read).")
    gpus_per_candidate: int = Field(
        default=0, ge=0, le=64, description="GPUs each candidate's training holds (local: "
        "CUDA_VISIBLE_DEVICES slices of the GPUs this machine has; dask: GPU worker "
        "resources).")

    @model_validator(mode="after")
    def _runner_fields(self) -> ParallelSpec:
        if self.runner != "dask" and (self.address or self.git_remote):
            raise ValueError("parallel.address and parallel.git_remote are for runner: dask; "
                             "remove them or set runner: dask")
        if self.address and not self.git_remote:
            raise ValueError("parallel.address names a remote Dask scheduler: its workers need "
                             "parallel.git_remote (a git URL they can fetch the candidates from)")
        if self.runner == "dask" and self.gpus_per_candidate and not self.address:
            raise ValueError("parallel.gpus_per_candidate with runner: dask asks Dask workers "
                             "for GPU resources, which a LocalCluster has none of: give "
                             "parallel.address (workers started with --resources GPU=<n>), or "
                             "use runner: local on one machine")
        return self

    @property
    def batched(self) -> bool:
        """More than one candidate per batch."""
        return self.candidates > 1
