"""spml.flows."""
