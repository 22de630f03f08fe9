"""deploy/onnx_export.py and deploy/quantize.py on an untrained student: no training, a few seconds.

The mutation-testing judge of both modules. The ONNX files are run here with ONNX Runtime directly and
compared with the PyTorch model run here, on synthetic images normalised here by hand.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from kndnet.checkpoint import ModelSpec
from kndnet.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from kndnet.deploy.onnx_export import (
    OPSET,
    Parity,
    _set_metadata,
    check_onnx_parity,
    export_onnx,
    logits_parity,
)
from kndnet.deploy.quantize import ImageCalibration, compact_names, quantize_int8
from kndnet.errors import KNDNetError
from kndnet.models import create_model

SIZE = 32


def _student(colour: str = "none", seed: int = 0) -> tuple[torch.nn.Module, ModelSpec]:
    torch.manual_seed(seed)
    model = create_model(ModelConfig(width=0.5, color_constancy=colour), pretrained=False).eval()
    return model, ModelSpec("kndnet_student", 0.5, 7, 0.15, SIZE, color_constancy=colour)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _by_hand(images: torch.Tensor) -> np.ndarray:
    """(x / 255 - mean) / std, float32 NCHW."""
    x = images.numpy().astype(np.float32) / 255
    mean, std = np.array(IMAGENET_MEAN, np.float32)[:, None, None], np.array(IMAGENET_STD, np.float32)[:, None, None]
    return ((x - mean) / std).astype(np.float32)


def _run(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def _torch(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def plain_export(tmp_path_factory):
    """An untrained student with a calibration temperature of 2 in its spec, exported while in train mode."""
    out = tmp_path_factory.mktemp("units_plain")
    model, spec = _student()
    spec.calibration_temperature = 2.0  # the runtime divides by T; the parity check compares raw logits
    path = export_onnx(model.train(), spec, out / "sub" / "m.onnx")  # export must switch to eval itself
    return model, spec, path


@pytest.fixture(scope="module")
def colour_export(tmp_path_factory):
    """An untrained Shades-of-Gray student, its fp32 export and its int8 model calibrated on 20 images."""
    out = tmp_path_factory.mktemp("units_export")
    model, spec = _student("shades_of_gray")
    fp32 = export_onnx(model, spec, out / "fp32.onnx")
    int8 = quantize_int8(fp32, out / "int8.onnx", _images(20, seed=1), spec)
    return model, spec, fp32, int8


# ---------------------------------------------------------------- ONNX export

def test_export_runs_like_pytorch_with_any_batch_size(plain_export):
    model, _, path = plain_export
    assert path.name == "m.onnx" and path.parent.name == "sub"
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.onnx"]  # no temporary left
    for n in (1, 5):
        x = _by_hand(_images(n, seed=n))
        onnx_out, reference = _run(path, x), _torch(model, x)  # eval mode: dropout off, BatchNorm running stats
        assert onnx_out.shape == (n, 7)
        assert np.abs(onnx_out - reference).max() < 1e-4


def test_export_graph_signature_and_opset(plain_export):
    graph = onnx.load(str(plain_export[2]))
    assert OPSET == 17 and [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (image,), (logits,) = graph.graph.input, graph.graph.output
    assert (image.name, logits.name) == ("image", "logits")
    image_dims, logit_dims = image.type.tensor_type.shape.dim, logits.type.tensor_type.shape.dim
    assert [d.dim_value for d in image_dims[1:]] == [3, SIZE, SIZE] and logit_dims[1].dim_value == 7
    # the batch is symbolic, and one symbol: the output has as many rows as the input
    assert image_dims[0].dim_param and image_dims[0].dim_param == logit_dims[0].dim_param


def test_export_writes_the_spec_and_preprocessing_into_the_metadata(plain_export):
    _, spec, path = plain_export
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert set(meta) == {"kndnet_spec", "class_names", "input_size", "mean", "std", "input_format"}
    assert ModelSpec.from_dict(json.loads(meta["kndnet_spec"])) == spec and spec.calibration_temperature == 2.0
    assert json.loads(meta["class_names"]) == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert meta["input_size"] == "32"
    assert json.loads(meta["mean"]) == pytest.approx(list(IMAGENET_MEAN))
    assert json.loads(meta["std"]) == pytest.approx(list(IMAGENET_STD))
    assert meta["input_format"] == "RGB float32 NCHW, (x/255 - mean)/std"


def test_set_metadata_replaces_what_the_graph_had():
    _, spec = _student()
    graph = helper.make_model(helper.make_graph([], "g", [], []))
    graph.metadata_props.add(key="stale", value="x")
    graph.metadata_props.add(key="input_size", value="999")
    _set_metadata(graph, spec)
    meta = [(p.key, p.value) for p in graph.metadata_props]
    assert ("stale", "x") not in meta and dict(meta)["input_size"] == "32" and len(meta) == 6


def test_a_failed_export_leaves_nothing(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("broken on purpose")
    _, spec = _student()
    with pytest.raises(RuntimeError, match="broken on purpose"):
        export_onnx(Broken(), spec, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- parity

def test_logits_parity_and_its_dict_by_hand():
    reference = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    candidate = np.array([[1.0, 2.5, 0.0], [0.0, 1.0, 0.1], [0.0, 0.0, 4.75], [1.0, 0.0, 0.0]])
    parity = logits_parity(reference, candidate)
    assert parity == Parity(max_abs_logit_diff=3.0, top1_agreement=0.75, images=4)  # row 2 flips 0 -> 1
    rounding = Parity(max_abs_logit_diff=0.123456789, top1_agreement=0.987654, images=9).as_dict("x")
    assert rounding == {"x_max_abs_logit_diff": 0.123457, "x_top1_agreement": 0.9877, "x_images": 9}


def test_parity_check_passes_the_export_of_the_same_model(plain_export):
    model, spec, path = plain_export  # T = 2 in the spec: the check must compare raw logits
    images = _images(6, seed=2)
    model.train()
    parity = check_onnx_parity(model, spec, path, images)
    assert parity.images == 6 and parity.top1_agreement == 1.0
    x = _by_hand(images)
    assert parity.max_abs_logit_diff == pytest.approx(np.abs(_run(path, x) - _torch(model, x)).max(), abs=1e-7)
    assert parity.max_abs_logit_diff < 1e-4
    # a difference exactly at the tolerance still passes (the check is strictly "past")
    shifted, _ = _student()
    with torch.no_grad():
        shifted.classifier.bias.add_(0.002)
    at = check_onnx_parity(shifted, spec, path, images, tolerance=1.0).max_abs_logit_diff
    assert check_onnx_parity(shifted, spec, path, images, tolerance=at).max_abs_logit_diff == at


def test_parity_check_default_tolerance_is_a_thousandth(plain_export):
    _, spec, path = plain_export
    images = _images(4, seed=3)
    for shift, passes in ((0.0005, True), (0.002, False)):  # every logit moved by `shift`: argmax kept
        other, _ = _student()
        with torch.no_grad():
            other.classifier.bias.add_(shift)
        if passes:
            assert check_onnx_parity(other, spec, path, images).max_abs_logit_diff == pytest.approx(shift, rel=0.05)
        else:
            with pytest.raises(KNDNetError, match=r"m\.onnx: ONNX output differs from PyTorch \(max \|logit diff\| "
                                                  r"2\.00e-03 > 1e-03 or top-1 agreement 1\.000 < 1\); the export is "
                                                  r"not trustworthy"):
                check_onnx_parity(other, spec, path, images)


def test_parity_check_rejects_other_top1_within_any_tolerance(plain_export):
    _, spec, path = plain_export
    other, _ = _student()
    with torch.no_grad():
        other.classifier.bias[3] += 100.0  # every image now called class 3
    with pytest.raises(KNDNetError, match="top-1 agreement 0"):
        check_onnx_parity(other, spec, path, _images(4), tolerance=1e9)


# ---------------------------------------------------------------- int8

def test_calibration_reader_feeds_normalised_batches_then_none_and_rewinds():
    _, spec = _student()
    images = _images(40)
    reader = ImageCalibration(images, spec)
    fed = [reader.get_next() for _ in range(3)]
    assert reader.get_next() is None and reader.get_next() is None
    assert [list(b) for b in fed] == [["image"]] * 3
    assert [len(b["image"]) for b in fed] == [16, 16, 8]
    assert np.allclose(np.concatenate([b["image"] for b in fed]), _by_hand(images), atol=1e-6)
    reader.rewind()
    assert np.array_equal(reader.get_next()["image"], fed[0]["image"])
    small = ImageCalibration(images[:5], spec, input_name="x", batch=2)
    assert [len(small.get_next()["x"]) for _ in range(3)] == [2, 2, 1] and small.get_next() is None


def test_int8_model_is_close_to_fp32_and_keeps_the_metadata(colour_export):
    model, spec, fp32, int8 = colour_export
    x = _by_hand(_images(12, seed=4))
    a, b = _run(fp32, x), _run(int8, x)
    assert np.abs(a - _torch(model, x)).max() < 1e-4
    assert np.abs(b - a).max() < 0.1 * np.abs(a).max()  # 8 bits: within a tenth of the logit range
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    meta = lambda path: [(p.key, p.value) for p in onnx.load(str(path)).metadata_props]  # noqa: E731
    assert meta(int8) == meta(fp32)
    assert [p.name for p in int8.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_int8_is_qdq_with_per_channel_int8_weights_and_uint8_activations(colour_export):
    *_, int8 = colour_export
    graph = onnx.load(str(int8)).graph
    inits = {t.name: t for t in graph.initializer}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert quantize and dequantize
    activation_zero_points = {inits[n.input[2]].data_type for n in quantize}
    assert activation_zero_points == {TensorProto.UINT8}
    weights = [n for n in dequantize
               if inits.get(n.input[0]) is not None and inits[n.input[0]].data_type == TensorProto.INT8]
    assert len(weights) >= 10  # the convolutions' and the classifier's weights
    per_channel = [n for n in weights if len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1]
    assert len(per_channel) >= 10


def test_int8_keeps_the_colour_layer_in_float(colour_export):
    """The image goes straight into the Shades-of-Gray ops, unquantised; without the colour layer the
    stem convolution's input is quantised at once."""
    *_, int8 = colour_export
    graph = onnx.load(str(int8)).graph
    first = [n.op_type for n in graph.node if "image" in n.input]
    assert first and "QuantizeLinear" not in first
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert not [n for n in graph.node if n.op_type in ("Pow", "ReduceMean") and dequantized & set(n.input)]


def test_int8_without_a_colour_layer_quantises_the_input(plain_export, tmp_path):
    _, spec, fp32 = plain_export
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", _images(8), spec)
    assert [n.op_type for n in onnx.load(str(int8)).graph.node if "image" in n.input] == ["QuantizeLinear"]


def test_int8_internal_names_are_short_and_consistent(colour_export):
    *_, int8 = colour_export
    graph = onnx.load(str(int8)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits"]
    assert all(n.name == "" for n in graph.node)
    internal = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output} - {"logits"}
    assert all(name.startswith("t") and name[1:].isdigit() for name in internal)
    onnx.checker.check_model(onnx.load(str(int8)), full_check=True)


def test_compact_names_by_hand():
    """x -> Clip(x, <no min>, cap) -> Relu -> y: names t0, t1..., inputs/outputs and empty names kept."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    cap = helper.make_tensor("a_long_initializer_name", TensorProto.FLOAT, [], [0.5])
    nodes = [helper.make_node("Clip", ["x", "", "a_long_initializer_name"], ["/clip/output_0"], name="/clip/Clip"),
             helper.make_node("Relu", ["/clip/output_0"], ["y"], name="/relu/Relu")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [cap]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.graph.value_info.append(helper.make_tensor_value_info("/clip/output_0", TensorProto.FLOAT, [2]))
    compact_names(model)
    g = model.graph
    assert [t.name for t in g.initializer] == ["t0"]
    assert [list(n.input) for n in g.node] == [["x", "", "t0"], ["t1"]]
    assert [list(n.output) for n in g.node] == [["t1"], ["y"]]
    assert [n.name for n in g.node] == ["", ""] and [v.name for v in g.value_info] == ["t1"]
    out = ort.InferenceSession(model.SerializeToString()).run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0]
    assert out.tolist() == [0.0, 0.5]
