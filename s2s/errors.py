"""User-facing errors: one line that says what went wrong and where, never a traceback."""


class S2SError(Exception):
    """An error caused by the user's input (recipe, data, run directory, command line).

    The CLI prints ``str(error)`` on one line and exits with ``exit_code``.
    """

    exit_code = 1


class ConfigError(S2SError):
    """A recipe or ``--set`` override that does not fit the schema."""

    exit_code = 2
