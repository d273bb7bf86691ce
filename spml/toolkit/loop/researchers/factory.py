"""Build the researcher a protocol asks for."""

from __future__ import annotations

from pathlib import Path

from spml.protocols.researchers import CommandResearcherSpec, OptunaResearcherSpec
from spml.toolkit.loop.researchers.base import Researcher
from spml.toolkit.loop.researchers.command import CommandResearcher
from spml.toolkit.loop.researchers.optuna_search import OptunaResearcher

OPTUNA_STUDY_FILENAME = "optuna.db"  # in the experiment's state dir, archived per generation


def make_researcher(spec: CommandResearcherSpec | OptunaResearcherSpec, *, state_dir: Path,
                    direction: str, workdir: Path) -> Researcher:
    """A researcher for ``spec``; its durable state (if any) lives under ``state_dir``."""
    if isinstance(spec, OptunaResearcherSpec):
        return OptunaResearcher(spec, storage_path=state_dir / OPTUNA_STUDY_FILENAME,
                                direction=direction, workdir=workdir)
    return CommandResearcher(spec)
