"""Training runs: run directory contents, self-describing checkpoints, resume, learning, DDP."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from kndnet.checkpoint import load_model
from kndnet.cli import _run, main
from kndnet.config import DistillConfig
from kndnet.data.datasets import class_balanced_weights
from kndnet.distill.losses import distillation_loss
from kndnet.errors import ConfigError
from kndnet.training.datamodule import LesionDataModule
from kndnet.training.fit import fit
from kndnet.training.module import LesionClassifier
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def student_run(synth_manifest, tmp_path_factory):
    run = tmp_path_factory.mktemp("student")
    summary = fit(tiny_config("student", synth_manifest, **{"train.epochs": 12}), run)
    return run, summary


def test_run_directory_has_config_manifest_metrics_checkpoints_summary(student_run):
    run, summary = student_run
    for name in ("config.yaml", "manifest.csv", "metrics.csv", "summary.json",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == list(range(12))
    assert {"val/macro_f1", "val/acc", "train/loss"} <= set(metrics.columns)
    assert summary["parameters"] == 148_855


def test_student_learns_the_synthetic_classes_well_above_chance(student_run):
    _, summary = student_run
    assert summary["best_val_macro_f1"] > 0.6  # chance is about 0.14


def test_checkpoint_rebuilds_its_model_alone_with_weights_only(student_run):
    run, _ = student_run
    raw = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    assert raw["kndnet"]["spec"]["image_size"] == 32
    model, spec = load_model(run / "checkpoints" / "best.ckpt")
    assert spec.arch == "kndnet_student" and spec.class_codes[4] == "mel"
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


class _Crash(Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 2:
            raise RuntimeError("simulated crash")


def test_interrupted_run_resumes_to_the_same_epochs_with_optimizer_state(synth_manifest, tmp_path):
    # regression: Lightning 2.6 left last.ckpt stale when val macro-F1 did not improve
    cfg = tiny_config("student", synth_manifest, **{"train.epochs": 4})
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(cfg, tmp_path, extra_callbacks=[_Crash()])
    assert not (tmp_path / "summary.json").exists()
    steps_per_epoch = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] // 2
    summary = fit(cfg, tmp_path)
    assert summary["epochs_run"] == 4
    assert list(pd.read_csv(tmp_path / "metrics.csv")["epoch"]) == [0, 1, 2, 3]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4 * steps_per_epoch
    adam_steps = {int(s["step"]) for s in last["optimizer_states"][0]["state"].values()}
    assert adam_steps == {4 * steps_per_epoch}
    assert last["lr_schedulers"][0]["last_epoch"] == 4


class _CtrlC(Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(synth_manifest, tmp_path, capsys):
    """Lightning answers Ctrl-C with a log line the quiet commands hide, then exits: kndnet says how to go on."""
    import signal
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            fit(tiny_config("student", synth_manifest, **{"train.epochs": 3}), tmp_path, extra_callbacks=[_CtrlC()])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    assert f"interrupted: re-run the same command to resume {tmp_path}" in capsys.readouterr().err
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and not (tmp_path / "summary.json").exists()


class _BatchLog(Callback):
    """A fingerprint of every training batch (its images' sum, in order), per epoch."""

    def __init__(self):
        self.epochs = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.epochs.setdefault(trainer.current_epoch, []).append(float(batch["image"].float().sum()))


def test_a_resumed_run_draws_new_batches_instead_of_replaying_its_first_epochs(synth_manifest, tmp_path):
    """Regression (runs/v18's Lite0 teacher): resuming re-seeded the sampler and augmentations with data.seed,
    so epochs 2 and 3 of a run resumed at epoch 2 were epochs 0 and 1 again, batch for batch."""
    cfg = tiny_config("student", synth_manifest, **{"train.epochs": 4, "train.mixup_alpha": 0.0,
                                                    "train.cutmix_alpha": 0.0})
    first, resumed, fresh = _BatchLog(), _BatchLog(), _BatchLog()
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(cfg, tmp_path / "run", extra_callbacks=[first, _Crash()])
    fit(cfg, tmp_path / "run", extra_callbacks=[resumed])
    fit(cfg, tmp_path / "fresh", extra_callbacks=[fresh])
    assert sorted(resumed.epochs) == [2, 3]
    assert resumed.epochs[2] != first.epochs[0] and resumed.epochs[3] != first.epochs[1]
    assert fresh.epochs[0] == first.epochs[0] and fresh.epochs[1] == first.epochs[1]  # a fresh run: data.seed


@pytest.mark.parametrize("fails", [False, True])
def test_a_command_closes_the_process_group_it_opened(fails):
    """A gloo group left open until interpreter exit aborted a finished DDP run once in ten (exit -6)."""
    def handler(args):
        torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
        if fails:
            raise RuntimeError("a failing fit")
        return 0

    args = argparse.Namespace(command="train", handler=handler)
    if fails:
        with pytest.raises(RuntimeError, match="a failing fit"):
            _run(args, [])
    else:
        assert _run(args, []) == 0
    assert not torch.distributed.is_initialized()


@pytest.mark.slow
def test_ddp_on_cpu_trains_in_both_ranks(synth_manifest, tmp_path):
    cmd = [sys.executable, "-m", "kndnet.cli", "train", "--role", "student", "--data", str(synth_manifest),
           "--out", str(tmp_path), "--epochs", "2", "--image-size", "32", "--batch-size", "8",
           "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu",
           "--set", "data.num_workers=0", "--set", "train.progress_bar=false", "--set", "train.compile=false"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 2/2" in result.stdout and "GPU available" not in result.stderr  # quiet, not silent (-v)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(summary["samples_per_rank"]) == 2 and min(summary["samples_per_rank"]) > 0


@pytest.mark.slow
def test_ddp_ranks_see_disjoint_samples_and_log_metrics_reduced_over_both(synth_manifest, tmp_path):
    probe = Path(__file__).parent / "ddp_probe.py"
    result = subprocess.run([sys.executable, str(probe), str(synth_manifest), str(tmp_path)], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    manifest = pd.read_csv(synth_manifest)
    n_train = int(((manifest["split"] != "test") & (manifest["fold"] != 0)).sum())
    val_ids = set(manifest.loc[manifest["split"] == "val", "image_id"])
    logged = pd.read_csv(tmp_path / "metrics.csv").set_index("epoch")
    for epoch in logged.index:
        train = [[i for b in rank["train"] if b["epoch"] == epoch for i in b["ids"]] for rank in ranks]
        # DistributedSampler pads an odd split with one repeated image; each rank drops its last partial batch
        assert len(set(train[0]) & set(train[1])) <= n_train % 2, epoch
        assert len(set(train[0]) | set(train[1])) >= n_train - 2 * 8
        val = [[(i, c) for b in rank["val"] if b["epoch"] == epoch for i, c in zip(b["ids"], b["correct"])]
               for rank in ranks]
        assert {i for i, _ in val[0]} | {i for i, _ in val[1]} == val_ids
        assert len({i for i, _ in val[0]} & {i for i, _ in val[1]}) <= len(val_ids) % 2
        correct = [c for rank in val for _, c in rank]
        assert logged.loc[epoch, "val/acc"] == pytest.approx(np.mean(correct), abs=1e-5)
        losses = [b["loss"] for rank in ranks for b in rank["train"] if b["epoch"] == epoch]
        assert logged.loc[epoch, "train/loss"] == pytest.approx(np.mean(losses), rel=1e-4)


@pytest.mark.parametrize("power, expected_share", [(1.0, [1 / 3, 1 / 3, 1 / 3]), (0.5, [10 / 17, 5 / 17, 2 / 17]),
                                                   (0.0, [100 / 129, 25 / 129, 4 / 129])])
def test_sampler_weights_set_the_class_shares(power, expected_share):
    """balanced draws every class equally; sqrt in proportion to sqrt(count); power 0 is the data's prior."""
    labels = torch.tensor([0] * 100 + [1] * 25 + [2] * 4)
    weights = class_balanced_weights(labels, num_classes=3, power=power)
    share = torch.stack([weights[labels == c].sum() for c in range(3)]) / weights.sum()
    assert share.tolist() == pytest.approx(expected_share)


def test_train_without_data_names_both_ways_to_give_it(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert "pass --data DIR_OR_MANIFEST or set data.path" in capsys.readouterr().err
    assert not (tmp_path / "run" / "manifest.csv").exists()


def test_a_finished_run_is_reused_only_for_its_own_recipe(student_run, synth_manifest):
    run, summary = student_run
    same = tiny_config("student", synth_manifest, **{"train.epochs": 12, "data.num_workers": 1})
    assert fit(same, run) == summary  # operational keys (workers, devices, paths) may change
    with pytest.raises(ConfigError, match=r"another recipe \(train.lr: 0.003 -> 0.01\)"):
        fit(tiny_config("student", synth_manifest, **{"train.epochs": 12, "train.lr": 0.01}), run)


# Non-default values, so a module that falls back to DistillConfig's defaults gets another loss.
KD_KWARGS = {"temperature": 3.5, "alpha": 0.3, "threshold": 0.4, "dkd_beta": 2.0, "dist_beta": 2.0, "dist_gamma": 0.5}
KD_SETTINGS = {f"distill.{key}": value for key, value in KD_KWARGS.items()}


def _kd_module(manifest, **overrides) -> LesionClassifier:
    cfg = tiny_config("distill", manifest, **{**KD_SETTINGS, **overrides})
    torch.manual_seed(0)
    return LesionClassifier(cfg.to_dict(), class_counts=[5, 3, 8, 2, 6, 9, 4]).eval()  # eval: no dropout noise


def _kd_batch(n=8):
    g = torch.Generator().manual_seed(3)
    return {"image": torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
            "label": torch.randint(0, 7, (n,), generator=g)}


def _expected_loss(module, batch, teacher_logits):
    with torch.no_grad():
        student_logits = module(batch["image"])
    ce = F.cross_entropy(student_logits, batch["label"], weight=module.ce_weight,
                         label_smoothing=module.cfg.train.label_smoothing)
    settings = DistillConfig(loss=module.cfg.distill.loss, **KD_KWARGS)  # written out, not read from the module
    loss, _ = distillation_loss(settings, student_logits, teacher_logits, batch["label"], ce)
    return loss.item()


NO_TRAINER = pytest.mark.filterwarnings("ignore:You are trying to `self.log")


@NO_TRAINER
@pytest.mark.parametrize("loss", ["cmkd", "dkd", "dist"])
def test_training_step_distils_towards_the_cached_teacher_with_the_configs_settings(synth_manifest, loss):
    """The step's loss is the named loss of (student logits, the batch's teacher logits) at the config's
    T, alpha, threshold and beta: passing the student's own logits as the teacher's, or dropping a config
    value on the way, gives another number."""
    module = _kd_module(synth_manifest, **{"distill.loss": loss})
    batch = _kd_batch()
    batch["teacher_logits"] = torch.randn(8, 7, generator=torch.Generator().manual_seed(4)) * 3
    with torch.no_grad():
        got = module.training_step(batch, 0).item()
    assert got == pytest.approx(_expected_loss(module, batch, batch["teacher_logits"]), rel=1e-5)
    assert got != pytest.approx(_expected_loss(module, batch, module(batch["image"]).detach()), rel=1e-3)


@NO_TRAINER
def test_training_step_asks_the_online_teacher_about_the_same_images(synth_manifest, student_run):
    teacher, _ = load_model(student_run[1]["best_checkpoint"])  # a trained model: its logits depend on the image
    # DKD distils every sample, whatever the teacher's confidence
    module = _kd_module(synth_manifest, **{"distill.loss": "dkd", "distill.teacher_bf16": False,
                                           "distill.teacher_hflip": False})
    module.attach_online_teachers([student_run[1]["best_checkpoint"]])
    batch = _kd_batch()
    with torch.no_grad():
        teacher_logits = teacher(module.preprocess(batch["image"]))
        got = module.training_step(batch, 0).item()
    assert got == pytest.approx(_expected_loss(module, batch, teacher_logits), rel=1e-5)


@pytest.mark.parametrize("val_fold", [0, 2])
def test_validation_loader_holds_exactly_the_validation_fold(synth_manifest, tmp_path, val_fold):
    manifest = pd.read_csv(synth_manifest)
    cfg = tiny_config("student", synth_manifest, **{"data.val_fold": val_fold, "data.cache": False})
    data = LesionDataModule(cfg, manifest, tmp_path)
    cv = manifest[manifest["split"] != "test"]
    val_ids = set(data.val_dataloader().dataset.image_ids)
    assert val_ids == set(cv.loc[cv["fold"] == val_fold, "image_id"])
    assert not val_ids & set(data.dataset("train", "train").image_ids)
