"""Errors that tell the user which file, row or value is wrong and how to fix it."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


def _worker_message(text: str, name: str) -> str | None:
    """The original message inside a DataLoader worker's re-raise text, or None.

    Why: a DataLoader worker re-raises an exception as `type(err)(formatted_traceback)`; without this the
    user would see a worker traceback instead of the one-line message the error was raised with.
    """
    if not (text.startswith(f"Caught {name} ") and "Original Traceback" in text):
        return None
    tail = [line for line in text.splitlines() if line.strip()][-1]
    _, sep, message = tail.partition(f"{name}: ")
    return message if sep else None


class KNDNetWarning(UserWarning):
    """kndnet's own warnings (a teacher from random weights, an int8 teacher that fell back to fp32): the
    training commands hide library warnings but never these (kndnet.quiet)."""


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Inside the block (`kndnet.cli.main`) kndnet's warnings print as `warning: MESSAGE`; the formatter found on
    entry formats the rest, and is back afterwards, so calling `main` from Python leaves no global state behind.

    Why: Python prints a warning as `FILE:LINE: CATEGORY: MESSAGE` plus the source line, which names kndnet's
    installed source file, not the user's input; the user needs the message alone, as errors print it. Each block
    wraps the formatter it found (no module state), so nested blocks and formatters installed by others compose."""
    earlier = warnings.formatwarning

    def one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 line: str | None = None) -> str:
        if issubclass(category, KNDNetWarning):
            return f"warning: {message}\n"
        return earlier(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = earlier


class KNDNetError(Exception):
    """Base class: the CLI prints these without a traceback and exits non-zero."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_worker_message(args[0], type(self).__name__) or args[0],)
        super().__init__(*args)


class DataError(KNDNetError):
    """The input data (a CSV, a folder, an image) is not usable as given."""


class ImageError(DataError):
    """One image file cannot be read as an RGB picture."""

    def __init__(self, path: object, reason: str | None = None) -> None:
        if reason is None:  # one argument: re-raised from a DataLoader worker with the traceback text
            message = _worker_message(str(path), "ImageError") or str(path)
            path, _, reason = message.partition(": ")
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class CheckpointError(KNDNetError):
    """A checkpoint does not describe a model this version can rebuild."""


class ConfigError(KNDNetError, ValueError):
    """A config value or command-line option is out of range or unknown."""


class BusyError(KNDNetError):
    """Another kndnet process holds the run directory."""
