"""deploy/onnx_export.py and deploy/quantize.py on an untrained student: no training, a few seconds.

The mutation-testing judge of both modules. The ONNX files are run here with ONNX Runtime directly and
compared with the PyTorch model run here, on synthetic images normalised here by hand. Every test exports or
quantises in its own body, never in a shared fixture: mutmut credits a fixture's calls to the first test that
sets it up only, and would judge the module's mutants by that one test.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from timm.layers import create_conv2d

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
from kndnet.inference import OnnxPredictor
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


def _plain_export(folder):
    """An untrained student with a calibration temperature of 2 in its spec, exported while in train mode."""
    model, spec = _student()
    spec.calibration_temperature = 2.0  # the runtime divides by T; the parity check compares raw logits
    path = export_onnx(model.train(), spec, folder / "sub" / "m.onnx")  # export must switch to eval itself
    return model, spec, path


def _colour_int8(folder):
    """An untrained Shades-of-Gray student, its fp32 export and its int8 model calibrated on 20 images."""
    model, spec = _student("shades_of_gray")
    fp32 = export_onnx(model, spec, folder / "fp32.onnx")
    return model, fp32, quantize_int8(fp32, folder / "int8.onnx", _images(20, seed=1), spec)


# ---------------------------------------------------------------- ONNX export

def test_export_runs_like_pytorch_with_any_batch_size_and_carries_the_spec(tmp_path):
    model, spec, path = _plain_export(tmp_path)
    assert path == tmp_path / "sub" / "m.onnx"
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.onnx"]  # no temporary left
    for n in (1, 5):
        x = _by_hand(_images(n, seed=n))
        onnx_out, reference = _run(path, x), _torch(model, x)  # eval mode: dropout off, BatchNorm running stats
        assert onnx_out.shape == (n, 7)
        assert np.abs(onnx_out - reference).max() < 1e-4
    graph = onnx.load(str(path))
    assert OPSET == 17 and [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (image,), (logits,) = graph.graph.input, graph.graph.output
    assert (image.name, logits.name) == ("image", "logits")
    image_dims, logit_dims = image.type.tensor_type.shape.dim, logits.type.tensor_type.shape.dim
    assert [d.dim_value for d in image_dims[1:]] == [3, SIZE, SIZE] and logit_dims[1].dim_value == 7
    # the batch is symbolic, and one symbol: the output has as many rows as the input
    assert image_dims[0].dim_param and image_dims[0].dim_param == logit_dims[0].dim_param
    meta = {p.key: p.value for p in graph.metadata_props}
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


def _shifted(shift: float, cls: int | None = None) -> torch.nn.Module:
    """The same untrained student with `shift` added to one class's logit (every class's when cls is None)."""
    other, _ = _student()
    with torch.no_grad():
        if cls is None:
            other.classifier.bias.add_(shift)
        else:
            other.classifier.bias[cls] += shift
    return other


def test_parity_check_passes_the_same_model_and_rejects_other_logits(tmp_path):
    model, spec, path = _plain_export(tmp_path)  # T = 2 in the spec: the check must compare raw logits
    images = _images(6, seed=2)
    model.train()
    parity = check_onnx_parity(model, spec, path, images)
    assert parity.images == 6 and parity.top1_agreement == 1.0
    x = _by_hand(images)
    assert parity.max_abs_logit_diff == pytest.approx(np.abs(_run(path, x) - _torch(model, x)).max(), abs=1e-7)
    assert parity.max_abs_logit_diff < 1e-4
    # every logit moved by 0.0005 passes the default tolerance of 1e-3, by 0.002 it does not (argmax kept)
    assert check_onnx_parity(_shifted(0.0005), spec, path, images).max_abs_logit_diff == pytest.approx(0.0005,
                                                                                                     rel=0.05)
    with pytest.raises(KNDNetError, match=r"m\.onnx: ONNX output differs from PyTorch \(max \|logit diff\| "
                                          r"2\.00e-03 > 1e-03 or top-1 agreement 1\.000 < 1\); the export is "
                                          r"not trustworthy"):
        check_onnx_parity(_shifted(0.002), spec, path, images)
    # a difference exactly at the tolerance still passes (the check is strictly "past")
    at = check_onnx_parity(_shifted(0.002), spec, path, images, tolerance=1.0).max_abs_logit_diff
    assert check_onnx_parity(_shifted(0.002), spec, path, images, tolerance=at).max_abs_logit_diff == at
    # another top-1 fails within any tolerance: every image now called class 3
    with pytest.raises(KNDNetError, match="top-1 agreement 0"):
        check_onnx_parity(_shifted(100.0, cls=3), spec, path, images, tolerance=1e9)


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


def test_int8_of_a_colour_student(tmp_path, monkeypatch):
    """Close to fp32, metadata kept, QDQ with per-channel int8 weights and uint8 activations, the colour layer
    in float, short internal names; nothing left behind, in the output folder or the working directory."""
    monkeypatch.chdir(tmp_path)
    model, fp32, int8 = _colour_int8(tmp_path)
    x = _by_hand(_images(12, seed=4))
    a, b = _run(fp32, x), _run(int8, x)
    assert np.abs(a - _torch(model, x)).max() < 1e-4
    assert np.abs(b - a).max() < 0.1 * np.abs(a).max()  # 8 bits: within a tenth of the logit range
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    meta = lambda path: [(p.key, p.value) for p in onnx.load(str(path)).metadata_props]  # noqa: E731
    assert meta(int8) == meta(fp32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx", "int8.onnx"]  # no temporary left

    graph = onnx.load(str(int8)).graph
    inits = {t.name: t for t in graph.initializer}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert quantize and dequantize
    assert {inits[n.input[2]].data_type for n in quantize} == {TensorProto.UINT8}  # activations
    weights = [n for n in dequantize
               if inits.get(n.input[0]) is not None and inits[n.input[0]].data_type == TensorProto.INT8]
    assert len(weights) >= 10  # the convolutions' and the classifier's weights
    per_channel = [n for n in weights if len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1]
    assert len(per_channel) >= 10

    # the image goes straight into the Shades-of-Gray ops, unquantised
    first = [n.op_type for n in graph.node if "image" in n.input]
    assert first and "QuantizeLinear" not in first
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert not [n for n in graph.node if n.op_type in ("Pow", "ReduceMean") and dequantized & set(n.input)]

    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits"]
    assert all(n.name == "" for n in graph.node)
    internal = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output} - {"logits"}
    assert all(name.startswith("t") and name[1:].isdigit() for name in internal)
    onnx.checker.check_model(onnx.load(str(int8)), full_check=True)


def test_int8_without_a_colour_layer_quantises_the_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the pre-processed graph is a temporary: nothing may land in the working directory
    _, spec, fp32 = _plain_export(tmp_path)
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", _images(8), spec)
    assert int8 == tmp_path / "int8.onnx" and sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "sub"]
    assert [n.op_type for n in onnx.load(str(int8)).graph.node if "image" in n.input] == ["QuantizeLinear"]


class _SamePadded(torch.nn.Module):
    """Two stride-2 convolutions padded like TensorFlow's "SAME" (timm's Conv2dSame, as in the `tf_*` teachers):
    the ONNX graph works each padding out from the input's shape at run time."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            create_conv2d(3, 8, 3, stride=2, padding="same"), torch.nn.ReLU6(),
            create_conv2d(8, 8, 3, stride=2, padding="same", depthwise=True), torch.nn.ReLU6())
        self.head = torch.nn.Linear(8, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def _producers(graph: onnx.GraphProto, tensor: str) -> set[str]:
    """Op types of every node upstream of `tensor`, stopping at Shape (which reads only its input's size)."""
    made_by = {out: node for node in graph.node for out in node.output}
    ops, todo = set(), [tensor]
    while todo:
        node = made_by.get(todo.pop())
        if node is not None:
            ops.add(node.op_type)
            todo.extend(name for name in node.input if name and node.op_type != "Shape")
    return ops


def test_int8_keeps_same_padding_arithmetic_in_float(tmp_path):
    """Quantised, the float arithmetic that computes "SAME" pads rounded a pad of 1 to 0.996 and cast it to 0,
    shifting every stride-2 convolution's input (the int8 teachers' main error); it must stay in float."""
    torch.manual_seed(0)
    model = _SamePadded().eval()
    spec = ModelSpec("tf_same_padded", 1.0, 7, 0.0, SIZE)
    fp32 = export_onnx(model, spec, tmp_path / "fp32.onnx")
    pads = [n for n in onnx.load(str(fp32)).graph.node if n.op_type == "Pad"]
    assert len(pads) == 2 and "Shape" in _producers(onnx.load(str(fp32)).graph, pads[0].input[1])  # the case itself

    graph = onnx.load(str(quantize_int8(fp32, tmp_path / "int8.onnx", _images(32), spec))).graph
    pads = [n for n in graph.node if n.op_type == "Pad"]
    assert len(pads) == 2
    for pad in pads:
        upstream = _producers(graph, pad.input[1])
        assert "Shape" in upstream and "QuantizeLinear" not in upstream  # (a stored constant may be dequantised)
    assert [n for n in graph.node if n.op_type == "QuantizeLinear"]  # the convolutions are still int8
    x = _by_hand(_images(16, seed=5))
    assert np.corrcoef(_run(fp32, x).ravel(), _run(tmp_path / "int8.onnx", x).ravel())[0, 1] > 0.98


def test_an_unknown_calibration_method_is_refused_by_name(tmp_path):
    """Percentile calibration itself is exercised by the int8 teacher's tests (tests/test_onnx_teacher.py)."""
    _, spec, fp32 = _plain_export(tmp_path)
    with pytest.raises(ValueError, match="unknown calibration method 'entropy'; choose minmax, percentile"):
        quantize_int8(fp32, tmp_path / "x.onnx", _images(4), spec, "entropy")


def test_unsigned_weights_store_u8_weights_and_still_compute_the_model(tmp_path):
    """`unsigned_weights` (the U8U8 row of bench_teacher_int8) must change the weights' type, not the function."""
    _, spec, fp32 = _plain_export(tmp_path)
    x = _by_hand(_images(16, seed=5))
    for unsigned, dtype in [(False, TensorProto.INT8), (True, TensorProto.UINT8)]:
        path = quantize_int8(fp32, tmp_path / f"int8_{unsigned}.onnx", _images(16), spec, unsigned_weights=unsigned)
        graph = onnx.load(str(path)).graph
        assert {t.data_type for t in graph.initializer if len(t.dims) == 4} == {dtype}  # the conv weights
        assert np.corrcoef(_run(fp32, x).ravel(), _run(path, x).ravel())[0, 1] > 0.98


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


def test_shipped_config_keeps_only_file_names_of_every_ensemble_teacher():
    from kndnet.config import Config
    from kndnet.deploy.export import without_machine_paths
    cfg = Config(role="distill")
    cfg.distill.teacher = "/home/me/runs/lite2/best.ckpt,/home/me/runs/lite0/lite0.ckpt"
    cfg.data.path = "/home/me/data"
    cfg.distill.transfer_images = "/home/me/unlabelled"
    cfg.model.pretrained = "/home/me/weights/imagenet.pth"
    shipped = without_machine_paths(cfg)
    assert shipped.distill.teacher == "best.ckpt,lite0.ckpt" and shipped.data.path == "data"
    assert shipped.distill.transfer_images == "unlabelled" and shipped.model.pretrained == "imagenet.pth"
    assert cfg.distill.teacher.startswith("/home/me")  # the run's own config is untouched
    cfg.model.pretrained = "lite-pypi"
    assert without_machine_paths(cfg).model.pretrained == "lite-pypi"  # named weights are not paths


def test_every_string_config_key_is_declared_a_path_key_or_not():
    """A new string key must be classified: if it holds a path, shipped model configs must drop its folders."""
    import dataclasses

    from kndnet.config import PATH_KEYS, Config
    cfg = Config()
    strings = {f"{section.name}.{f.name}" for section in dataclasses.fields(cfg) if section.name != "role"
               for f in dataclasses.fields(getattr(cfg, section.name)) if f.type == "str"}
    not_paths = {"data.format", "model.arch", "model.color_constancy", "model.student_block", "model.ensemble",
                 "model.student_activation",
                 "train.sampler", "train.accelerator", "train.devices", "train.strategy", "train.precision",
                 "train.profiler", "distill.loss", "distill.teacher_runtime"}
    assert strings - not_paths == PATH_KEYS


def test_class_sensitivity_is_each_class_recall_and_none_where_a_class_has_no_image():
    from kndnet.deploy.export import class_sensitivity
    logits = np.eye(3)[[0, 0, 1, 2, 2]]  # predicted 0, 0, 1, 2, 2
    labels = np.array([0, 1, 1, 0, 0])   # class 2 never occurs
    assert class_sensitivity(logits, labels, ("a", "b", "c")) == {"a": 0.3333, "b": 0.5, "c": None}  # rounded


def test_a_card_without_melanoma_images_says_nothing_about_melanoma(tmp_path):
    from kndnet.deploy.model_card import write_model_card
    card = {"arch": "s", "image_size": 32, "parameters": 1, "macs": 1, "peak_activation_bytes_int8": 1,
            "int8_eval_split": "test", "eval_images_per_class": {"mel": 0, "nv": 2},
            "fp32_sensitivity": {"mel": None, "nv": 1.0}, "int8_sensitivity": {"mel": None, "nv": 0.5}}
    write_model_card(tmp_path, card)
    text = (tmp_path / "MODEL_CARD.md").read_text()
    assert "| mel | 0 | - | - |" in text and "| nv | 2 | 1.000 | 0.500 |" in text and "Melanoma sensitivity" not in text


def test_a_colour_constancy_card_says_where_the_white_balance_happens(tmp_path):
    from kndnet.deploy.model_card import write_model_card
    card = {"arch": "s", "image_size": 32, "parameters": 1, "macs": 1, "peak_activation_bytes_int8": 1}
    write_model_card(tmp_path, {**card, "color_constancy": "none"})
    assert "Preprocessing" not in (tmp_path / "MODEL_CARD.md").read_text()
    write_model_card(tmp_path, {**card, "color_constancy": "shades_of_gray"})
    text = (tmp_path / "MODEL_CARD.md").read_text()
    assert "## Preprocessing" in text and "white-balance the RGB pixels before feeding it" in text


def test_a_calibrated_card_says_who_divides_by_the_temperature(tmp_path):
    from kndnet.deploy.model_card import write_model_card
    card = {"arch": "s", "image_size": 32, "parameters": 1, "macs": 1, "peak_activation_bytes_int8": 1}
    write_model_card(tmp_path, {**card, "calibration_temperature": 1.0})
    assert "## Probabilities" not in (tmp_path / "MODEL_CARD.md").read_text()
    write_model_card(tmp_path, {**card, "calibration_temperature": 0.7529177})
    text = (tmp_path / "MODEL_CARD.md").read_text()
    assert "## Probabilities" in text and "divided by T = 0.7529" in text and "output raw logits" in text


def test_a_predictor_reads_raw_logits_from_the_graph_and_divides_only_its_logits_by_t(tmp_path):
    """Deploy reports compare what files emit (raw_logits); evaluation and predict read calibrated logits."""
    _, _, path = _plain_export(tmp_path)
    images = _images(4)
    predictor = OnnxPredictor(path)
    np.testing.assert_allclose(predictor.raw_logits(images), _run(path, _by_hand(images)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predictor.logits(images), predictor.raw_logits(images) / 2.0, rtol=1e-6)


def test_the_int8_report_differences_raw_logits_of_a_calibrated_model(tmp_path):
    """Regression: with a temperature (2 here) the card held the difference of T-divided logits, half of what
    the two graphs emit; the shipped-file tests recompute it from the raw outputs."""
    from kndnet.deploy.export import int8_report
    _, spec, fp32 = _plain_export(tmp_path)
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", _images(16), spec)
    images, labels = _images(12, seed=3), np.arange(12) % 7
    report = int8_report(fp32, int8, images, labels, tuple("abcdefg"))
    x = _by_hand(images)
    raw = np.abs(_run(int8, x) - _run(fp32, x)).max()
    assert report["int8_vs_fp32_max_abs_logit_diff"] == pytest.approx(raw, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("flags, token, words", [
    ("avx2 avx512f avx512_vnni", "vnni_integer", "integer kernels (VNNI)"),
    ("avx2 avx512f", "qdq_float", "QDQ nodes in float (no VNNI)"),
    ("neon asimd", "unknown", "could not identify"), (None, "unknown", "could not identify")])
def test_the_int8_report_and_card_name_the_arithmetic_that_measured_them(tmp_path, monkeypatch, flags, token, words):
    """VNNI's integer kernels and the QDQ nodes run in float are both exact, yet called one shipped test image
    differently: a card's int8 figures are checkable only against the arithmetic that measured them. A CPU kndnet
    cannot read (no /proc/cpuinfo, not x86) is recorded as unknown, never as either."""
    import kndnet.cpu
    from kndnet.deploy.export import int8_report
    from kndnet.deploy.model_card import write_model_card
    cpuinfo = tmp_path / "cpuinfo"
    if flags:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(kndnet.cpu.int8_arithmetic, "__defaults__", (cpuinfo,))
    monkeypatch.setattr(kndnet.cpu.has_int8_dot_product, "__defaults__", (cpuinfo,))
    _, spec, fp32 = _plain_export(tmp_path)
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", _images(16), spec)
    report = int8_report(fp32, int8, _images(7, seed=3), np.arange(7), tuple("abcdefg"))
    assert report["int8_arithmetic"] == token
    write_model_card(tmp_path, {"arch": "a", "image_size": 8, "parameters": 1, "macs": 1,
                                "peak_activation_bytes_int8": 1, **report})
    assert json.loads((tmp_path / "model_card.json").read_text())["int8_arithmetic"] == token
    assert f"ONNX Runtime's {kndnet.cpu.INT8_ARITHMETIC[token]}." in (tmp_path / "MODEL_CARD.md").read_text()
    assert words in kndnet.cpu.INT8_ARITHMETIC[token]
