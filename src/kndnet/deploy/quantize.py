"""int8 static quantisation with ONNX Runtime: QDQ format, per-channel weights, real calibration images.

Weights are signed int8 per output channel; activations unsigned int8 (U8S8), the combination
ONNX Runtime's x86 kernels run fastest: measured here on the student at 224 px, one thread, batch 1,
3.3 ms against 10.2 ms with signed activations.

Activation ranges are calibrated on images of the training split (never the held-out split the
parity report scores). The graph is pre-processed (shape inference, BatchNorm folding) first, as
ONNX Runtime recommends. A Shades-of-Gray layer (models/colour.py) stays in float: its sixth-power
illuminant statistics would not survive 8 bits, and it is a handful of elementwise ops on the input. The arithmetic
that works paddings out from tensor shapes (TF-style "SAME" padding in timm's `tf_*` models) stays in float too:
quantised, it rounded pads to the wrong integer (`size_arithmetic`).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from kndnet.checkpoint import ModelSpec
from kndnet.io import atomic_path

CALIBRATION_BATCH = 16


class ImageCalibration(CalibrationDataReader):
    """Feeds normalised calibration images to ONNX Runtime's calibrator, a few at a time."""

    def __init__(self, images: torch.Tensor, spec: ModelSpec, input_name: str = "image",
                 batch: int = CALIBRATION_BATCH):
        self.batches = [spec.normalise(images[i:i + batch]).numpy() for i in range(0, len(images), batch)]
        self.input_name = input_name
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {self.input_name: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: torch.Tensor, spec: ModelSpec,
                  method: str = "minmax", reduce_range: bool = False, unsigned_weights: bool = False) -> Path:
    """Write the int8 QDQ model for `fp32_path` (metadata kept), calibrated on `calibration` images.

    `method` sets each activation's range: minmax (the observed extremes; the student's export) or
    percentile (the central 99.999% of the observed values, clipping rare outliers to keep resolution for
    the rest; Wu et al. 2020, "Integer quantization for deep learning inference", found percentile ranges
    among the best calibrations for CNNs). `reduce_range` stores weights in 7 bits: ONNX Runtime's advice for
    x86 CPUs without VNNI, whose u8 x s8 kernels add pairs of products in 16 bits and saturate (see
    `kndnet.cpu`). `unsigned_weights` stores u8 weights (U8U8), whose kernels cannot saturate either but ran the
    Lite2 and Lite0 teachers at 0.26x and 0.19x fp32's speed on such a CPU (docs/BENCH.md): kept for that benchmark."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose {', '.join(CALIBRATION_METHODS)}")
    if method != "minmax" and len(calibration) > CALIBRATION_BATCH:
        # ONNX Runtime's histogram calibrators stack the batches' outputs, so a ragged last batch breaks them
        calibration = calibration[:len(calibration) // CALIBRATION_BATCH * CALIBRATION_BATCH]
    with tempfile.TemporaryDirectory() as tmp_dir:
        prepared = Path(tmp_dir) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        # ONNX Runtime's histogram calibrators print their progress to stdout: not the user's business
        with atomic_path(int8_path) as tmp, contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(prepared), str(tmp), ImageCalibration(calibration, spec),
                            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QUInt8 if unsigned_weights else QuantType.QInt8,
                            nodes_to_exclude=_float_nodes(prepared), calibrate_method=CALIBRATION_METHODS[method])
            _finish(fp32_path, tmp)
    return int8_path


def _float_nodes(path: Path, scope: str = "/colour/") -> list[str]:
    """Names of the nodes kept in float: the colour-constancy layer's, and those that compute sizes."""
    graph = onnx.load(str(path)).graph
    colour = [node.name for node in graph.node if node.name.startswith(scope)]
    return colour + size_arithmetic(graph)


def size_arithmetic(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes that compute tensor sizes from `Shape` and constants rather than activations.

    Why: timm's TF-ported models (`tf_efficientnet_lite*`, the `cpu` recipe's teachers) pad like TensorFlow's
    "SAME", and their ONNX graphs work each strided convolution's padding out from the input's shape with
    float Div / Ceil / Sub / Mul / Add / Clip, then Cast it to integers. ONNX Runtime quantises the Add, Mul and
    Clip among them like any activation, so a pad of 1 came back as 0.996 and was cast to 0: every stride-2
    convolution saw its input shifted by a pixel. That, not 8 bits, was most of the int8 teachers' error: with
    these nodes left in float, the fine-tuned Lite2 and Lite0 teachers' int8 copies agree with fp32 on 0.958 and
    0.969 of 384 training images instead of 0.951 and 0.924, their probabilities a mean total variation of 0.05
    apart instead of 0.10 (docs/BENCH.md). They are scalar ops, so float costs nothing.
    """
    sized = {tensor.name for tensor in graph.initializer}
    names = []
    for node in graph.node:  # an ONNX graph lists its nodes in topological order
        inputs = [name for name in node.input if name]
        if node.op_type == "Shape" or all(name in sized for name in inputs):
            sized.update(node.output)
            if node.name:  # nodes_to_exclude matches by name
                names.append(node.name)
    return names


def _finish(source: Path, target: Path) -> None:
    """Copy the spec metadata over and shorten internal names (a quarter of the file otherwise)."""
    src, dst = onnx.load(str(source)), onnx.load(str(target))
    del dst.metadata_props[:]
    dst.metadata_props.extend(src.metadata_props)
    compact_names(dst)
    onnx.save(dst, str(target))


def compact_names(model: onnx.ModelProto) -> None:
    """Rename every internal tensor to t<N> and drop node names; graph inputs/outputs keep theirs."""
    graph = model.graph
    keep = {v.name for v in [*graph.input, *graph.output]}
    names: dict[str, str] = {}
    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")
    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for node in graph.node:
        node.name = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for value in graph.value_info:
        value.name = short(value.name)
