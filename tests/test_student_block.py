"""`model.student_block`: the published block, or the MobileNet one with a BN + SiLU after each depthwise conv.

The variant must keep the parameter budget, travel in the checkpoint's spec, and leave every runtime computing
what PyTorch computes (its BatchNorm folds into the depthwise conv at export).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kndnet.checkpoint import ModelSpec, load_model, save_model_checkpoint
from kndnet.cli import main
from kndnet.config import ModelConfig, load_config
from kndnet.errors import ConfigError
from kndnet.models import count_parameters, create_model
from kndnet.shipped import SHIPPED_CHECKPOINT
from tests.helpers import assert_checkpoint_keeps_spec_key, assert_onnx_fp32_and_int8_track


def _mobilenet_student(size: int = 32) -> tuple[torch.nn.Module, ModelSpec, object]:
    """An untrained mobilenet-block student whose depthwise BatchNorms hold non-trivial running statistics."""
    cfg = load_config(overrides={"model.student_block": "mobilenet", "model.color_constancy": "shades_of_gray",
                                 "data.image_size": size})
    torch.manual_seed(0)
    model = create_model(cfg.model)
    for block in model.blocks:
        block.mid[0].running_mean.uniform_(-0.5, 0.5)
        block.mid[0].running_var.uniform_(0.5, 2.0)
    return model.eval(), ModelSpec.from_config(cfg), cfg


def test_the_mobilenet_block_keeps_the_published_parameter_count_and_adds_a_nonlinearity():
    method, mobilenet = (create_model(ModelConfig(student_block=b)) for b in ("method", "mobilenet"))
    assert count_parameters(method) == count_parameters(mobilenet) == 148_855
    assert not any(".mid." in k for k in method.state_dict())  # the published keys, so published weights load
    mid = mobilenet.blocks[0].mid
    assert isinstance(mid[0], torch.nn.BatchNorm2d) and not mid[0].affine and isinstance(mid[1], torch.nn.SiLU)
    mobilenet.load_state_dict(method.state_dict(), strict=False)  # the same weights: only the block differs
    x = torch.randn(4, 3, 64, 64)
    outputs = []
    for model in (method, mobilenet):  # train mode, so the BatchNorms normalise with this batch's statistics
        torch.manual_seed(0)  # the same dropout masks for both
        with torch.no_grad():
            outputs.append(model.train()(x))
    assert not torch.allclose(*outputs, atol=1e-3)


def test_the_key_is_checked_and_refused_for_a_teacher():
    with pytest.raises(ConfigError, match="student_block"):
        load_config(overrides={"model.student_block": "resnet"})
    with pytest.raises(ConfigError, match="student_block 'mobilenet' is built into the kndnet student only"):
        create_model(ModelConfig(arch="test_efficientnet", student_block="mobilenet", pretrained="none"))


def test_a_checkpoint_rebuilds_its_block_and_older_specs_mean_the_published_one(tmp_path):
    model, spec, cfg = _mobilenet_student()
    assert spec.student_block == "mobilenet"
    assert_checkpoint_keeps_spec_key(model, spec, cfg, "student_block", "method", "resnet", "student block 'resnet'",
                                     tmp_path)


def test_onnx_fp32_and_int8_compute_what_pytorch_does(tmp_path):
    model, spec, _ = _mobilenet_student()
    assert_onnx_fp32_and_int8_track(model, spec, tmp_path)


@pytest.mark.litert
def test_the_mobilenet_block_exports_full_integer_tflite_that_tracks_pytorch(synth_manifest, tmp_path):
    """The shipped weights in a mobilenet-block student (its depthwise BNs given statistics): the BN must fold."""
    from kndnet.deploy.export import load_images
    from kndnet.deploy.tflite_export import op_census
    from kndnet.inference import TorchPredictor, open_predictor
    shipped, shipped_spec = load_model(SHIPPED_CHECKPOINT)
    model, _, cfg = _mobilenet_student(size=shipped_spec.image_size)
    model.load_state_dict(shipped.state_dict(), strict=False)
    spec = ModelSpec.from_dict({**shipped_spec.to_dict(), "student_block": "mobilenet"})
    save_model_checkpoint(model, spec, cfg, tmp_path / "mb.ckpt")
    out = tmp_path / "export"
    assert main(["export", "--model", str(tmp_path / "mb.ckpt"), "--image-size", "32", "--tflite",
                 "--calib", str(synth_manifest), "--calib-count", "16", "--out", str(out)]) == 0
    path = out / "model_int8.tflite"
    counts, floats = op_census(path)
    assert floats == [] and counts["DEPTHWISE_CONV_2D"] == 9  # no BatchNorm left standing on its own
    predictor = open_predictor(path)
    assert predictor.spec.student_block == "mobilenet"
    images, _ = load_images(str(synth_manifest), "test", predictor.spec, 0)
    reference = TorchPredictor(out / "model.ckpt").logits(images)
    candidate = predictor.logits(images)
    assert np.mean(reference.argmax(1) == candidate.argmax(1)) >= 0.9
    assert np.median(np.abs(reference - candidate)) < 0.1
