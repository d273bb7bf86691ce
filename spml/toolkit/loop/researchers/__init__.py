"""Researchers: where each round's change comes from."""

from spml.toolkit.loop.researchers.base import Proposal, ResearchContext, Researcher
from spml.toolkit.loop.researchers.factory import make_researcher

__all__ = ["Proposal", "ResearchContext", "Researcher", "make_researcher"]
