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
    """The evaluation output holds no parseable value for the metric.

    Attributes:
        reason: The parser's one-line reason (e.g. ``'score' is mentioned, but never with a
            numeric value: '0x10' is not a number``), short enough for a ledger cell.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class BaselineFailed(SpmlError, RuntimeError):
    """Round 0 could not measure the base commit: no later round could be judged."""


class EnvironmentFailure(SpmlError, RuntimeError):
    """The run died of its environment: restart it from the newest checkpoint."""


class TrainingStopped(SpmlError, RuntimeError):
    """A code failure, or the crash-loop guard refused another restart: a person must look."""


class SupervisorBusy(SpmlError, RuntimeError):
    """Another live supervisor (a watchdog) already holds this directory."""
