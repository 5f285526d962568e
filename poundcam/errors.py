"""Exceptions raised by poundcam. Each carries a message that says what is wrong and where.

The CLI prints a :class:`PoundcamError` as one line and exits with its ``exit_code``; any other
exception is a bug and keeps its traceback (``poundcam --debug`` shows the traceback of
expected failures too).
"""


class PoundcamError(Exception):
    """Base class of every error poundcam raises on purpose."""

    exit_code = 2  # the CLI's exit status for this failure


class CheckpointError(PoundcamError):
    """A checkpoint could not be read, or does not describe a valid PoundNet."""


class WeightsNotFoundError(PoundcamError):
    """No weights could be resolved for the requested source."""


class CAMError(PoundcamError):
    """A class activation map cannot be computed faithfully; the message says why."""


class InvalidRequestError(PoundcamError, ValueError):
    """A caller asked for something invalid (no URIs, a malformed URI, a reused key)."""


class UnavailableError(PoundcamError):
    """A service poundcam needs (database, broker, object store) cannot be reached or is not
    set up; the message names the setting that points at it. Trying again later may help,
    hence ``EX_TEMPFAIL``."""

    exit_code = 75
