"""Quiet library chatter for the commands that train (`kndnet demo`, `run`, `train`, `distill`).

Lightning logs tips, "GPU available" and `limit_train_batches` notices at INFO, and libraries raise
deprecation and user warnings (echoing a source line each, with the machine's paths); none of it is about the
user's input, and a long run's log repeats it at every stage. Inside `quiet_libraries()` only warnings-level log
records and kndnet's own output show (MISLEADING_LOGGERS' warnings not even those); `-v` turns it off. Errors are
untouched: they still stop the command with their message.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

from kndnet.errors import KNDNetWarning

CHATTY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "torch._dynamo",
                  "huggingface_hub", "timm", "kndnet.epochs")
# Loggers whose warnings are not about the user's run: torch.compile's C++ toolchain lookup warns "No CUDA runtime
# is found" on CPU machines that have a CUDA folder; hidden up to ERROR.
MISLEADING_LOGGERS = ("torch.utils.cpp_extension",)


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False, progress: bool = False) -> Iterator[None]:
    """Hide INFO logs of CHATTY_LOGGERS and Python warnings for the block, unless `verbose`.

    With `progress` (long commands: `run`, `train`, `distill`) the one line per epoch and kndnet's own warnings
    (a teacher from random weights, an int8 teacher that fell back to fp32) still show; `demo` hides both."""
    if verbose:
        yield
        return
    import lightning.pytorch  # noqa: F401  importing it sets its loggers to INFO: do that before quieting them

    names = [name for name in CHATTY_LOGGERS if not (progress and name.startswith("kndnet"))]
    quiet_levels = {**dict.fromkeys(names, logging.WARNING), **dict.fromkeys(MISLEADING_LOGGERS, logging.ERROR)}
    loggers = [logging.getLogger(name) for name in quiet_levels]
    levels = [lg.level for lg in loggers]
    try:
        for lg, level in zip(loggers, quiet_levels.values()):
            lg.setLevel(level)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if progress:
                warnings.simplefilter("default", KNDNetWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
