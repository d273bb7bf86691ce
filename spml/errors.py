"""spml's exception root: library code raises these; only the CLI turns them into exits."""


class SpmlError(Exception):
    """Base class of every error spml raises on purpose."""


class ProtocolError(SpmlError, ValueError):
    """A protocol file is missing, malformed, or violates the schema."""


class GitStateError(SpmlError, RuntimeError):
    """The git repository is not in a state spml can work from."""


class CommandError(SpmlError, RuntimeError):
    """A command could not be started at all (not: it ran and failed)."""


class MetricNotFound(SpmlError, ValueError):
    """The evaluation output holds no parseable value for the metric."""
