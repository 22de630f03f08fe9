"""One row per epoch in <run>/metrics.csv, correct across interruptions and resumes.

Lightning's CSVLogger logs steps and rewrites its file on resume; a reader wants one row per
finished epoch. This callback appends the epoch's aggregated metrics and, on a resumed run, first
drops rows of epochs the checkpoint had not finished, so each epoch appears exactly once. Without a
progress bar (logs, CI, `nohup`) it also prints one line per epoch with the elapsed time and an ETA.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import Callback

from kndnet.data.manifest import write_csv_atomic

HIDDEN = ("train/loss_step",)


def _epoch_logger() -> logging.Logger:
    """'kndnet.epochs': one line per epoch on stdout; `kndnet demo` silences it unless -v (quiet.py)."""
    logger = logging.getLogger("kndnet.epochs")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    if logger.level == logging.NOTSET:  # a quiet block may have set it before this module was imported
        logger.setLevel(logging.INFO)
    return logger


EPOCH_LOG = _epoch_logger()


class EpochMetricsWriter(Callback):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._epoch_start = 0.0
        self._train_seconds = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._train_seconds = 0.0

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking and not self._train_seconds:
            self._train_seconds = time.perf_counter() - self._epoch_start

    def _existing(self, before_epoch: int) -> pd.DataFrame:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return pd.DataFrame()
        table = pd.read_csv(self.path)
        return table[table["epoch"] < before_epoch]

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._run_start, self._first_epoch = time.perf_counter(), trainer.current_epoch
        if trainer.is_global_zero and self.path.is_file():
            write_csv_atomic(self._existing(trainer.current_epoch), self.path)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        train_seconds = self._train_seconds or time.perf_counter() - self._epoch_start
        row = {"epoch": trainer.current_epoch, "lr": trainer.optimizers[0].param_groups[0]["lr"],
               "train_seconds": round(train_seconds, 2)}
        for name, value in sorted(trainer.callback_metrics.items()):
            if name not in HIDDEN:
                row[name.replace("_epoch", "")] = round(float(value), 6)
        table = pd.concat([self._existing(trainer.current_epoch), pd.DataFrame([row])], ignore_index=True)
        write_csv_atomic(table, self.path)
        if trainer.progress_bar_callback is None:
            EPOCH_LOG.info(epoch_line(trainer.current_epoch, trainer.max_epochs, row, time.perf_counter() -
                                      self._run_start, trainer.current_epoch + 1 - self._first_epoch))


def epoch_line(epoch: int, max_epochs: int, row: dict, elapsed: float, epochs_done: int) -> str:
    """'epoch 3/35  val macro-F1 0.512  acc 0.701  elapsed 4.2 min  ETA 44.1 min' (ETA: mean epoch so far)."""
    eta = elapsed / max(epochs_done, 1) * (max_epochs - epoch - 1)
    scores = "  ".join(f"{label} {row[key]:.3f}" for key, label in
                       (("val/macro_f1", "val macro-F1"), ("val/acc", "acc"), ("train/loss", "train loss"))
                       if key in row)
    return f"epoch {epoch + 1}/{max_epochs}  {scores}  elapsed {elapsed / 60:.1f} min  ETA {eta / 60:.1f} min"
