"""The one error type that the ``stepvit`` command line turns into a clear line."""


class StepvitError(Exception):
    """A problem with the user's input or environment, said in one line.

    The command line prints ``stepvit <command>: error: <message>`` to stderr and exits
    non-zero; a traceback is kept for bugs. Raise it (or a subclass) for bad configs,
    bad exports, missing files, missing data, timeouts and the like.
    """


class ExportError(StepvitError):
    """An export directory that is refused: the message names the field."""


class DeviceTimeout(StepvitError):
    """A stream or register wait that did not finish within its timeout."""
