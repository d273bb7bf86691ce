"""spml.protocols."""
