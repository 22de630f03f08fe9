"""Errors that tell the user which file, row or value is wrong and how to fix it."""


class KNDNetError(Exception):
    """Base class: the CLI prints these without a traceback and exits non-zero."""


class DataError(KNDNetError):
    """The input data (a CSV, a folder, an image) is not usable as given."""


class ImageError(DataError):
    """One image file cannot be read as an RGB picture."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class CheckpointError(KNDNetError):
    """A checkpoint does not describe a model this version can rebuild."""


class ConfigError(KNDNetError, ValueError):
    """A config value or command-line option is out of range or unknown."""
