"""`kind: command`: any coding agent or script, run in the worktree once per round."""

from __future__ import annotations

import shlex
import time

from spml.protocols.researchers import CommandResearcherSpec
from spml.toolkit.loop.cost import COST_FILE_VAR
from spml.toolkit.loop.researchers.base import Proposal, ResearchContext
from spml.toolkit.loop.sandboxing import confined
from spml.toolkit.process.runner import ExitKind, run_command

MAX_STRATEGY_CHARS = 300


class CommandResearcher:
    """Runs the protocol's command; exit 0 = code ready, anything else fails the round."""

    def __init__(self, spec: CommandResearcherSpec) -> None:
        self._spec = spec

    def propose(self, ctx: ResearchContext) -> Proposal:
        """Run the command with the round's placeholders and environment."""
        # Paths are shell-quoted: a checkout under "My Projects/" must not split the argument.
        command = self._spec.command.format(
            prompt_file=shlex.quote(str(ctx.brief_path)), round=ctx.round_no,
            workdir=shlex.quote(str(ctx.workdir)),
        )
        env = {
            **ctx.env,
            "SPML_PROMPT_FILE": str(ctx.brief_path),
            "SPML_ROUND": str(ctx.round_no),
            "SPML_STRATEGY_FILE": str(ctx.strategy_path),
            "SPML_WORKDIR": str(ctx.workdir),
            **({COST_FILE_VAR: str(ctx.cost_path)} if ctx.cost_path else {}),
        }
        ctx.strategy_path.unlink(missing_ok=True)
        ctx.strategy_path.parent.mkdir(parents=True, exist_ok=True)
        ctx.strategy_path.touch()  # a confined researcher can write an existing file only
        reports = [ctx.strategy_path]
        if ctx.cost_path is not None:
            ctx.cost_path.unlink(missing_ok=True)
            ctx.cost_path.touch()
            reports.append(ctx.cost_path)
        started = time.monotonic()
        with confined(ctx.sandbox, ctx.worktree or ctx.workdir, *reports,
                      sealed=ctx.sealed) as box:
            result = run_command(command, cwd=ctx.workdir, log_dir=ctx.log_dir,
                                 name="researcher", env=env, time_limit_s=ctx.timeout_s,
                                 pid_file=ctx.log_dir / "researcher.pid", confine=box)
        duration = time.monotonic() - started
        if ctx.strategy_path.is_file() and ctx.strategy_path.stat().st_size == 0:
            ctx.strategy_path.unlink()  # none written: the brief's stdout fallback applies
        strategy = self._strategy(ctx, result.stdout_text(64_000))
        if result.kind is ExitKind.TIMEOUT:
            cause = f"researcher timed out after {ctx.timeout_s:g}s (process group killed)"
            return Proposal(False, strategy, cause, duration)
        if not result.ok:
            return Proposal(False, strategy, f"researcher crashed: {result.describe()}", duration)
        return Proposal(True, strategy, "", duration)

    def _strategy(self, ctx: ResearchContext, stdout: str) -> str:
        text = ""
        # Bounded read of a regular file only: the researcher controls this file.
        if ctx.strategy_path.is_file() and not ctx.strategy_path.is_symlink():
            with ctx.strategy_path.open("rb") as handle:
                text = handle.read(4 * MAX_STRATEGY_CHARS).decode("utf-8", "replace").strip()
        if not text:
            lines = [line for line in stdout.splitlines() if line.strip()]
            text = lines[-1] if lines else ""
        text = " ".join("".join(c for c in text if c.isprintable() or c.isspace()).split())
        return text[:MAX_STRATEGY_CHARS] or "(no strategy given)"

    def observe(self, round_no: int, value: float | None, committed: bool) -> None:
        """A command researcher learns from experiences.md through the next brief."""

    def abandon(self, round_no: int) -> None:
        """Nothing to forget: the next brief is rebuilt from disk."""
