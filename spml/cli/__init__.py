"""spml.cli."""
