"""Train and serve see the same pixels: evaluate/predict/export decode an image as training's validation did."""

from __future__ import annotations

import torch

from kndnet.checkpoint import ModelSpec
from kndnet.data.manifest import load_manifest
from kndnet.data.selection import split_rows
from kndnet.data.transforms import resize_for_training
from kndnet.inference import eval_dataset, load_image
from kndnet.training.datamodule import LesionDataModule
from tests.helpers import tiny_config


def test_evaluation_images_equal_the_training_validation_images(synth_manifest, tmp_path):
    cfg = tiny_config("student", synth_manifest, **{"data.view_size": 48})
    spec = ModelSpec.from_config(cfg)
    assert spec.eval_load_size == resize_for_training(48, cfg.data.resize_ratio)
    validation = LesionDataModule(cfg, load_manifest(synth_manifest), tmp_path).dataset("val", "eval")
    assert validation.cache is not None  # training validates from the decoded cache
    served = eval_dataset(split_rows(load_manifest(synth_manifest), "val", 0), spec)
    for i in range(0, len(served), 7):
        assert torch.equal(validation[i]["image"], served[i]["image"]), served.paths[i]
        assert torch.equal(load_image(served.paths[i], spec), served[i]["image"])


def test_older_specs_decode_at_the_default_training_ratio():
    spec = ModelSpec.from_dict({"arch": "kndnet_student", "width": 1.5, "num_classes": 7, "dropout": 0.15,
                                "image_size": 128})
    assert spec.eval_load_size == 146  # 128 * 256 / 224, the size their training cache used


def test_calibrate_on_a_data_folder_fits_on_the_runs_validation_images_only(synth_dir, synth_manifest, tmp_path):
    """Regression: given a data folder, calibrate used every image (val_fold fixed at 0, split ignored)."""
    from kndnet.checkpoint import save_model_checkpoint
    from kndnet.evaluation.calibration import calibrate_checkpoint
    from kndnet.evaluation.run import evaluation_rows
    from kndnet.models import create_model
    cfg = tiny_config("student", synth_manifest, **{"data.val_fold": 2})
    ckpt = save_model_checkpoint(create_model(cfg.model), ModelSpec.from_config(cfg), cfg, tmp_path / "m.ckpt")
    _, _, fitted_on = calibrate_checkpoint(ckpt, str(synth_dir), out=tmp_path / "c.ckpt")
    manifest = load_manifest(synth_manifest)  # prepared from the same folder with the same seed and folds
    expected = split_rows(manifest, "val", 2)
    assert fitted_on == len(expected) < len(manifest)
    rows = evaluation_rows(str(synth_dir), "val", data_cfg=cfg.data)
    assert sorted(rows["image_id"]) == sorted(expected["image_id"])
    assert len(evaluation_rows(str(synth_dir), "test")) == len(manifest)  # external data: every image
