"""Exceptions raised by poundcam. Each carries a message that says what is wrong and where."""


class PoundcamError(Exception):
    """Base class of every error poundcam raises on purpose."""


class CheckpointError(PoundcamError):
    """A checkpoint could not be read, or does not describe a valid PoundNet."""


class WeightsNotFoundError(PoundcamError):
    """No weights could be resolved for the requested source."""


class CAMError(PoundcamError):
    """A class activation map cannot be computed faithfully; the message says why."""
