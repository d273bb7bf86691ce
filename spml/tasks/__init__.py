"""spml.tasks."""
