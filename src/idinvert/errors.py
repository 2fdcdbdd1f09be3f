"""Errors a user can cause. The command line prints them as one line, without a traceback."""


class IdinvertError(Exception):
    """Base class: the message says what was wrong and what to do."""


class ConfigError(IdinvertError):
    """An invalid configuration value."""


class CheckpointError(IdinvertError):
    """A weight file or model pack that cannot be used (missing, malformed, wrong keys)."""


class ImageError(IdinvertError):
    """An input image that cannot be read or used."""


class BoundaryError(IdinvertError):
    """A boundary file that does not fit the model."""


class NonFiniteError(IdinvertError):
    """NaN or infinity appeared during optimisation or training."""


class OutputError(IdinvertError):
    """An output location that cannot be written."""
