"""spml.toolkit."""
