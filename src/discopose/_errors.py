"""User-facing errors: one line that names the problem and the fix."""


class DiscoposeError(Exception):
    """An error caused by the user's input or environment.

    The CLI prints ``str(error)`` as a single line without a traceback, so the message must name
    what is wrong and how to fix it.
    """


class ConfigError(DiscoposeError, ValueError):
    """A configuration value is unknown, mistyped or out of range."""


class DatasetError(DiscoposeError):
    """A dataset on disk is missing, corrupt, or does not match what the caller expects."""
