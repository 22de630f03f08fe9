"""Shades-of-Gray colour constancy: what it does to a colour cast, and that every runtime applies it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from kndnet.checkpoint import ModelSpec
from kndnet.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, load_config
from kndnet.deploy.onnx_export import export_onnx
from kndnet.errors import ConfigError
from kndnet.models import count_parameters, create_model
from kndnet.models.colour import ShadesOfGray

MEAN, STD = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _scene(cast=(1.0, 0.8, 0.6), seed=0):
    """A grey texture lit by a coloured light, as normalised input."""
    grey = 0.2 + 0.6 * torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(seed))
    return (grey * torch.tensor(cast).view(1, 3, 1, 1) - MEAN) / STD


def test_a_colour_cast_is_removed_and_brightness_kept():
    out = ShadesOfGray()(_scene()) * STD + MEAN
    assert (out.amax(dim=1) - out.amin(dim=1)).max() < 1e-4  # grey again: equal channels per pixel
    before = _scene() * STD + MEAN
    assert out.mean().item() == pytest.approx(before.mean().item(), rel=0.05)


def test_a_grey_image_is_left_alone_and_each_image_gets_its_own_correction():
    grey = _scene(cast=(0.7, 0.7, 0.7))
    assert torch.allclose(ShadesOfGray()(grey), grey, atol=1e-5)
    both = torch.cat([grey, _scene(cast=(0.6, 0.9, 1.0), seed=1)])
    out = ShadesOfGray()(both)
    assert torch.allclose(out[:1], grey, atol=1e-5)


def test_the_student_keeps_its_weights_and_checkpoint_keys():
    plain = create_model(ModelConfig())
    balanced = create_model(ModelConfig(color_constancy="shades_of_gray"))
    assert set(plain.state_dict()) == set(balanced.state_dict())
    assert count_parameters(balanced) == 148_855
    balanced.load_state_dict(plain.state_dict())
    x = _scene().expand(2, 3, 24, 24).clone()
    plain.eval(), balanced.eval()
    assert not torch.allclose(plain(x), balanced(x))  # the layer runs


def test_a_teacher_with_colour_constancy_is_refused_by_name():
    with pytest.raises(ConfigError, match="color_constancy 'shades_of_gray' is built into the kndnet student"):
        create_model(ModelConfig(arch="test_efficientnet", color_constancy="shades_of_gray", pretrained="none"))
    with pytest.raises(ConfigError, match="color_constancy"):
        load_config(overrides={"model.color_constancy": "grey_world"})


def test_the_exported_onnx_graph_applies_it_as_pytorch_does(tmp_path):
    cfg = load_config(overrides={"model.color_constancy": "shades_of_gray", "data.image_size": 32})
    model = create_model(cfg.model).eval()
    spec = ModelSpec.from_config(cfg)
    assert spec.color_constancy == "shades_of_gray" and spec.model_config().color_constancy == "shades_of_gray"
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    assert any(node.op_type == "Pow" for node in onnx.load(str(path)).graph.node)
    x = torch.cat([_scene(seed=s, cast=c) for s, c in ((0, (1.0, 0.8, 0.6)), (1, (0.5, 0.9, 1.0)))])
    x = torch.nn.functional.interpolate(x, size=(32, 32))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)


def test_int8_keeps_the_colour_layer_in_float_and_agrees_with_fp32(tmp_path):
    from kndnet.deploy.quantize import quantize_int8
    cfg = load_config(overrides={"model.color_constancy": "shades_of_gray", "data.image_size": 32})
    model, spec = create_model(cfg.model).eval(), ModelSpec.from_config(cfg)
    fp32 = export_onnx(model, spec, tmp_path / "fp32.onnx")
    calibration = (torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", calibration, spec)
    graph = onnx.load(str(int8)).graph
    pow_inputs = {i for n in graph.node if n.op_type == "Pow" for i in n.input}
    quantised = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert pow_inputs and not pow_inputs & quantised  # the illuminant statistics see float pixels
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # the rest is int8
    x = calibration[:8].float()
    runs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    fp32_logits, int8_logits = (r.run(None, {"image": ((x / 255 - MEAN) / STD).numpy()})[0] for r in runs)
    assert np.abs(fp32_logits - int8_logits).max() < 0.5 * np.abs(fp32_logits).max()


def _cast_pixels(n=3, size=20, seed=0):
    """uint8 N x 3 x H x W images, each under its own coloured light (some pixels saturated)."""
    g = torch.Generator().manual_seed(seed)
    grey = 40 + 215 * torch.rand(n, 1, size, size, generator=g)
    light = 0.5 + torch.rand(n, 3, 1, 1, generator=g)
    return (grey * light).clamp(0, 255).round().to(torch.uint8)


def test_white_balanced_pixels_are_what_the_layer_computes():
    """The device-side step (for .tflite, whose graph leaves the layer out) is the layer, to half a level."""
    from kndnet.models.colour import white_balance_pixels
    pixels = _cast_pixels()
    layer = ShadesOfGray()((pixels.float() / 255 - MEAN) / STD) * STD + MEAN
    balanced = white_balance_pixels(pixels)
    assert balanced.dtype == torch.uint8
    assert (balanced.float() - layer * 255).abs().max() <= 0.5 + 1e-3
    assert (balanced.float() - pixels.float()).abs().max() > 20  # it did correct the casts


def test_the_firmware_white_balance_in_c_matches_python(tmp_path):
    """main.cc's white_balance() (deploy/c_array.py), compiled with the machine's C++ compiler, on NHWC bytes."""
    import shutil
    import subprocess

    from kndnet.deploy.c_array import WHITE_BALANCE_C
    from kndnet.models.colour import white_balance_pixels
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    harness = ("#include <cmath>\n#include <cstdint>\n#include <cstdio>\n" + WHITE_BALANCE_C +
               "int main() { static uint8_t rgb[400 * 3]; fread(rgb, 1, sizeof rgb, stdin);"
               " white_balance(rgb, 400); fwrite(rgb, 1, sizeof rgb, stdout); return 0; }\n")
    (tmp_path / "wb.cc").write_text(harness)
    subprocess.run([compiler, "-O2", "-o", str(tmp_path / "wb"), str(tmp_path / "wb.cc")], check=True)
    images = _cast_pixels(n=3, size=20, seed=1)
    firmware = []
    for image in images:
        nhwc = image.permute(1, 2, 0).contiguous().numpy().tobytes()
        out = subprocess.run([str(tmp_path / "wb")], input=nhwc, capture_output=True, check=True).stdout
        firmware.append(torch.from_numpy(np.frombuffer(out, dtype=np.uint8).reshape(20, 20, 3).copy()).permute(2, 0, 1))
    firmware = torch.stack(firmware).int()
    assert (firmware - white_balance_pixels(images).int()).abs().max() <= 1  # float rounding of a half level
    assert (firmware - images.int()).abs().max() > 20
