"""`model.student_activation`: SiLU (published) or ReLU6, the non-linearity int8 runtimes fuse into a convolution.

The variant must keep the parameter budget, travel in the checkpoint's spec (older files meaning SiLU), be refused
for a teacher, and export to ONNX and to a full-integer LiteRT file in which ReLU6 leaves no op of its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kndnet.checkpoint import ModelSpec
from kndnet.config import ModelConfig, load_config
from kndnet.errors import ConfigError
from kndnet.models import count_parameters, create_model
from tests.helpers import (
    assert_checkpoint_keeps_spec_key,
    assert_onnx_fp32_and_int8_track,
    randomise_batchnorm_statistics,
)


def _relu6_student(size: int = 32) -> tuple[torch.nn.Module, ModelSpec, object]:
    """An untrained ReLU6 student whose BatchNorms hold non-trivial running statistics."""
    cfg = load_config(overrides={"model.student_activation": "relu6", "model.color_constancy": "shades_of_gray",
                                 "data.image_size": size})
    torch.manual_seed(0)
    model = create_model(cfg.model)
    randomise_batchnorm_statistics(model)
    return model.eval(), ModelSpec.from_config(cfg), cfg


def _activations(model: torch.nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (torch.nn.SiLU, torch.nn.ReLU6))}


def test_relu6_replaces_every_silu_and_keeps_the_published_weights():
    silu, relu6 = (create_model(ModelConfig(student_activation=a)) for a in ("silu", "relu6"))
    assert count_parameters(silu) == count_parameters(relu6) == 148_855
    assert _activations(silu) == {torch.nn.SiLU} and _activations(relu6) == {torch.nn.ReLU6}
    assert sum(isinstance(m, torch.nn.ReLU6) for m in relu6.modules()) == 10  # the stem and nine blocks
    relu6.load_state_dict(silu.state_dict())  # the same keys: only the function differs
    x = torch.randn(2, 3, 64, 64) * 20  # large enough to reach both of ReLU6's clamps
    with torch.no_grad():
        silu_stem, relu6_stem = silu.eval().stem(x), relu6.eval().stem(x)
    assert silu_stem.min() < 0 and silu_stem.max() > 6
    assert relu6_stem.min() == 0 and relu6_stem.max() == 6
    mobilenet = create_model(ModelConfig(student_activation="relu6", student_block="mobilenet"))
    assert _activations(mobilenet) == {torch.nn.ReLU6}  # the block's inner activation follows too


def test_the_key_is_checked_and_refused_for_a_teacher():
    with pytest.raises(ConfigError, match="student_activation"):
        load_config(overrides={"model.student_activation": "gelu"})
    with pytest.raises(ConfigError, match="student_activation 'relu6' is built into the kndnet student only"):
        create_model(ModelConfig(arch="test_efficientnet", student_activation="relu6", pretrained="none"))


def test_a_checkpoint_rebuilds_its_activation_and_older_specs_mean_silu(tmp_path):
    model, spec, cfg = _relu6_student()
    assert spec.student_activation == "relu6"
    rebuilt = assert_checkpoint_keeps_spec_key(model, spec, cfg, "student_activation", "silu", "gelu",
                                               "student activation 'gelu'", tmp_path)
    assert _activations(rebuilt) == {torch.nn.ReLU6}


def test_onnx_fp32_and_int8_compute_what_pytorch_does(tmp_path):
    model, spec, _ = _relu6_student()
    assert_onnx_fp32_and_int8_track(model, spec, tmp_path)


@pytest.mark.litert
def test_relu6_fuses_into_the_int8_convolutions(tmp_path):
    """No LOGISTIC and no MUL (the input's 1/std is folded into the stem conv by default): ReLU6 is each conv's
    output clamp."""
    from kndnet.deploy.tflite_export import convert_tflite, op_census
    from kndnet.inference_tflite import TflitePredictor
    model, spec, _ = _relu6_student(size=48)
    pixels = (torch.rand(24, 3, 48, 48, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    path = convert_tflite(model, spec, tmp_path / "int8.tflite", pixels[:16])
    counts, floats = op_census(path)
    assert floats == [] and counts["LOGISTIC"] == 0 and counts["MUL"] == 0
    assert counts["CONV_2D"] == 10 and counts["DEPTHWISE_CONV_2D"] == 9
    with torch.no_grad():
        reference = model(spec.normalise(pixels[16:])).numpy()
    candidate = TflitePredictor(path).logits(pixels[16:])
    assert np.median(np.abs(candidate - reference)) < 0.1 * np.abs(reference).max()
