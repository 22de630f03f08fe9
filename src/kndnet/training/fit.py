"""Set up and run one training job: run directory, data, Lightning Trainer, summary.

A run directory holds: config.yaml (resolved), manifest.csv (used), checkpoints/{best,last}.ckpt,
metrics.csv (one row per epoch), logs/ (Lightning's CSV log) and summary.json. A run whose
last.ckpt exists but has no summary.json was interrupted: calling `fit` again resumes it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import yaml
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.profilers import AdvancedProfiler, Profiler, SimpleProfiler

from kndnet.checkpoint import torch_load_weights
from kndnet.classes import CLASS_CODES
from kndnet.config import (
    Config,
    ensemble_archs,
    listed_differences,
    recipe_differences,
    save_config,
    teacher_checkpoints,
)
from kndnet.data.manifest import MANIFEST_NAME
from kndnet.data.selection import class_counts, resolve_manifest, split_rows
from kndnet.distill.onnx_teacher import resolve_teacher_runtime
from kndnet.distill.teacher_cache import TeacherCache
from kndnet.errors import CheckpointError, ConfigError, DataError
from kndnet.io import atomic_write_json, clean_stale_temporaries, ddp_rank, run_lock
from kndnet.models import count_parameters
from kndnet.training.datamodule import LesionDataModule
from kndnet.training.epoch_log import EpochMetricsWriter
from kndnet.training.module import LesionClassifier

MONITOR = "val/macro_f1"


def _callbacks(cfg: Config, run_dir: Path) -> list[Callback]:
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=MONITOR, mode="max",
                        save_top_k=1, enable_version_counter=False),
        # Lightning 2.6 refreshes save_last only when the best improved; resuming needs every epoch
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                        enable_version_counter=False),
        EpochMetricsWriter(run_dir / "metrics.csv"),
    ]
    if cfg.train.early_stop_patience > 0:
        callbacks.append(EarlyStopping(MONITOR, mode="max", patience=cfg.train.early_stop_patience))
    return callbacks


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _profiler(name: str, run_dir: Path) -> Profiler | None:
    """train.profiler as Lightning's profiler, writing its report to RUN/fit-profile.txt; None when off."""
    kinds = {"simple": SimpleProfiler, "advanced": AdvancedProfiler}
    return kinds[name](dirpath=run_dir, filename="profile") if name in kinds else None


def build_trainer(cfg: Config, run_dir: Path, extra_callbacks: list[Callback] | None = None) -> L.Trainer:
    return L.Trainer(
        max_epochs=cfg.train.epochs, accelerator=cfg.train.accelerator, devices=_devices(cfg.train.devices),
        num_nodes=cfg.train.num_nodes, strategy=cfg.train.strategy, precision=cfg.train.precision,
        gradient_clip_val=cfg.train.grad_clip or None, callbacks=_callbacks(cfg, run_dir)
        + list(extra_callbacks or []), logger=CSVLogger(run_dir, name="logs"),
        log_every_n_steps=cfg.train.log_every_n_steps, limit_train_batches=cfg.train.limit_train_batches,
        deterministic=False, enable_model_summary=False, default_root_dir=run_dir,
        enable_progress_bar=cfg.train.progress_bar, profiler=_profiler(cfg.train.profiler, run_dir),
    )


def _summary(cfg: Config, module: LesionClassifier, trainer: L.Trainer, run_dir: Path,
             seconds: float) -> dict[str, Any]:
    ckpt = trainer.checkpoint_callback
    metrics = pd.read_csv(run_dir / "metrics.csv")
    best_row = metrics.loc[metrics[MONITOR].idxmax()] if MONITOR in metrics else None
    return {
        "role": cfg.role, "arch": cfg.model.arch, "parameters": count_parameters(module.model),
        "epochs_run": int(trainer.current_epoch), "best_epoch": None if best_row is None else int(best_row["epoch"]),
        "best_val_macro_f1": None if ckpt.best_model_score is None else round(float(ckpt.best_model_score), 4),
        "best_val_acc": None if best_row is None else round(float(best_row["val/acc"]), 4),
        "world_size": trainer.world_size, "samples_per_rank": module.samples_per_rank,
        "train_seconds": round(seconds, 1), "best_checkpoint": str(ckpt.best_model_path),
        "last_checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
        **module.teacher_int8_agreement(),
    }


def fit(cfg: Config, run_dir: str | Path, extra_callbacks: list[Callback] | None = None,
        force: bool = False) -> dict[str, Any]:
    """Train (or resume) one run; returns the summary dict also written to summary.json.

    The run directory is locked for the whole call (a second process is refused, naming our PID),
    and temporaries a killed run left behind are removed first. Under DDP the process group stays open for a
    later fit to reuse; a script destroys it when done (`torch.distributed.destroy_process_group()`), as the
    command line does, since a gloo group left to interpreter exit can abort the process.
    """
    if ensemble_archs(cfg.model):
        raise ConfigError(f"model.ensemble is {cfg.model.ensemble!r}: one training run trains one model. "
                          "`kndnet run` trains each ensemble member; by hand, train each with `kndnet train "
                          "--role teacher --teacher ARCH --set model.ensemble=` and pass all of them to "
                          "`kndnet distill --teacher`")
    run_dir = Path(run_dir)
    with run_lock(run_dir) as owned:
        if owned:
            clean_stale_temporaries(run_dir)
        return _fit_locked(cfg, run_dir, extra_callbacks, force)


def _fit_locked(cfg: Config, run_dir: Path, extra_callbacks: list[Callback] | None, force: bool) -> dict[str, Any]:
    summary_path = run_dir / "summary.json"
    writer = not ddp_rank()  # rank 0 alone writes and clears the run's files; the other ranks read them
    if force:
        if writer:
            _clear_results(run_dir)
    else:
        _refuse_another_recipe(cfg, run_dir)
        if summary_path.is_file():
            return json.loads(summary_path.read_text())
    last, resumed_after = _resumable(run_dir / "checkpoints" / "last.ckpt")
    L.seed_everything(stream_seed(cfg.data.seed, resumed_after), workers=True, verbose=False)
    manifest = resolve_manifest(cfg, run_dir, refresh=force and writer, write=writer)
    train_rows = split_rows(manifest, "train", cfg.data.val_fold)
    train_counts = class_counts(train_rows)
    refuse_untrainable_classes(manifest, train_counts, run_dir / MANIFEST_NAME)
    if writer:
        save_config(cfg, run_dir / "config.yaml")
    teacher_cache = _teacher_cache(cfg)
    data = LesionDataModule(cfg, manifest, Path(cfg.data.cache_dir or run_dir / "cache"), teacher_cache)
    module = LesionClassifier(cfg.to_dict(), train_counts)
    trainer = build_trainer(cfg, run_dir, extra_callbacks)
    if cfg.role == "distill" and teacher_cache is None:
        on_cpu = isinstance(trainer.accelerator, CPUAccelerator)  # what Lightning chose, `auto` included
        module.attach_online_teachers(teacher_checkpoints(cfg.distill),
                                      resolve_teacher_runtime(cfg.distill.teacher_runtime, on_cpu), train_rows)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if last else None, weights_only=True)
    except SystemExit:  # Lightning's exit after Ctrl-C; its own notice is a log line the quiet commands hide
        print(f"interrupted: re-run the same command to resume {run_dir} from its last finished epoch",
              file=sys.stderr)
        raise
    if trainer.interrupted or not trainer.is_global_zero:  # another DDP rank: rank 0 writes the results
        return {"interrupted": trainer.interrupted, "rank": trainer.global_rank,
                "best_checkpoint": str(trainer.checkpoint_callback.best_model_path)}
    summary = _summary(cfg, module, trainer, run_dir, time.perf_counter() - start)
    atomic_write_json(summary_path, summary)
    return summary


def stream_seed(seed: int, resumed_after: int | None) -> int:
    """The seed of this call's random stream: `data.seed` for a fresh run, another per resumed epoch.

    Why: seed_everything restarts the generators that the class sampler and the augmentations draw from,
    so a run resumed at epoch E with `data.seed` replayed epoch 0's samples and views as epoch E, epoch 1's
    as E + 1, and so on: runs/v18's Lite0 teacher, resumed after 4 of 12 epochs, saw its first 4 epochs'
    batches again (training loss 0.76 -> 0.38 over them, back to 0.71 on the first new one) and ended at
    0.561 validation macro-F1 against 0.592 uninterrupted. A fresh run keeps `data.seed`, so it stays
    reproducible; a resumed one is not bit-identical to an uninterrupted one, but it no longer repeats itself.
    """
    if resumed_after is None:
        return seed
    return (seed * 1_000_003 + resumed_after + 1) % 2**32


def _resumable(last: Path) -> tuple[Path | None, int | None]:
    """last.ckpt when there is one to resume from, and the epoch it was saved after (None, None for a fresh
    run); a truncated one is named, with the way out.

    Why: a run killed while Lightning saved leaves a cut-off zip, which PyTorch reports as a
    reader traceback deep inside trainer.fit.
    """
    if not last.is_file():
        return None, None
    try:
        checkpoint = torch_load_weights(last, "checkpoint", mmap=True)
    except CheckpointError as err:
        raise CheckpointError(f"cannot resume: {err}. The run was probably killed while saving it; rerun with "
                              f"--force to retrain from scratch, or delete {last}") from None
    return last, int(checkpoint.get("epoch", 0))


def refuse_untrainable_classes(manifest: pd.DataFrame, train_counts: list[int], where: Path) -> None:
    """Refuse a class that has images but none in the training split (it could never be learnt)."""
    present = set(manifest["label"])
    empty = [code for code, n in zip(CLASS_CODES, train_counts) if n == 0 and code in present]
    if empty:
        lesions = manifest.groupby("label")["group"].nunique()
        shown = ", ".join(f"{c} ({lesions[c]} lesion(s))" for c in empty)
        raise DataError(f"{where}: class(es) {shown} have no training images after the test and validation "
                        "lesions are held out; add lesions of those classes or drop their rows")


def _refuse_another_recipe(cfg: Config, run_dir: Path) -> None:
    """A finished or half-done run is reused only for the recipe that made it.

    Why: re-running a pipeline after editing its recipe must not silently return (or resume) the old
    run's numbers under the new recipe's name.
    """
    saved = run_dir / "config.yaml"
    if not saved.is_file() or not (run_dir / "checkpoints").is_dir():
        return
    changed = recipe_differences(yaml.safe_load(saved.read_text()) or {}, cfg)
    if changed:
        raise ConfigError(f"{run_dir} holds a run of another recipe ({listed_differences(changed)}); use a new "
                          "--out, or --force to retrain it")


def _clear_results(run_dir: Path) -> None:
    """Remove a finished run's results (not its manifest or cache) before retraining."""
    for name in ("checkpoints", "logs"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in ("summary.json", "metrics.csv"):
        (run_dir / name).unlink(missing_ok=True)


def _teacher_cache(cfg: Config) -> TeacherCache | None:
    if cfg.role != "distill":
        return None
    if cfg.distill.teacher_cache:
        return TeacherCache.load(cfg.distill.teacher_cache)
    if not teacher_checkpoints(cfg.distill):
        raise DataError("distillation needs --teacher CKPT (online) or a teacher cache "
                        "(distill.teacher_cache, built by `kndnet cache-teacher`)")
    return None
