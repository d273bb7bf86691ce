"""The researcher contract: one round's proposal, then the verdict told back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from spml.protocols.sandbox import SandboxSpec


@dataclass(frozen=True)
class ResearchContext:
    """Everything a researcher gets for one round."""

    round_no: int
    workdir: Path          # the experiment dir inside the loop's worktree
    brief_path: Path       # the round brief (outside the worktree)
    strategy_path: Path    # where a researcher may write its one-line strategy
    log_dir: Path
    timeout_s: float
    env: dict[str, str] = field(default_factory=dict)
    worktree: Path | None = None   # the loop's worktree (what a confined researcher may write)
    sandbox: SandboxSpec = field(default_factory=SandboxSpec)
    sealed: tuple[Path, ...] = ()  # the holdout: unreadable to the researcher
    cost_path: Path | None = None  # where a researcher may report its tokens and dollars
    batch: tuple[int, ...] = ()    # the rounds proposed against the same incumbent, this one's


@dataclass(frozen=True)
class Proposal:
    """What the researcher did: ok, the strategy in one line, and why it failed if it did."""

    ok: bool
    strategy: str
    cause: str = ""
    duration_s: float = 0.0


class Researcher(Protocol):
    """A source of one change per round. Implementations must be stateless between calls:
    everything they remember lives on disk, so a killed supervisor can resume them."""

    def propose(self, ctx: ResearchContext) -> Proposal:
        """Edit the variable files in ``ctx.workdir`` for round ``ctx.round_no``."""
        ...

    def observe(self, round_no: int, value: float | None, committed: bool) -> None:
        """Learn the round's measured value (None when the round failed before measuring)."""
        ...

    def abandon(self, round_no: int) -> None:
        """Forget a round that will be redone (its proposal was rolled back unmeasured)."""
        ...
