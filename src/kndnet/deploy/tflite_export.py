"""LiteRT (TensorFlow Lite) export of the student with litert-torch: float, or full-integer int8.

The full-integer model is quantised in PyTorch with litert-torch's PT2E quantiser (int8 per-channel
symmetric weights, int8 per-tensor activations, histogram-calibrated on training images) and converted
by litert-torch, no TensorFlow involved. Three changes to the network make every op integer, and one keeps precision:

- the graph takes N x H x W x 3 RGB pixels; the input's quantisation is fixed, not calibrated (scale 1, zero
  point -128: int8 = pixel - 128), so it is lossless and firmware feeds camera bytes without float maths (a
  calibrated range clipped the brightest pixels of generated images: scale 0.98); NHWC is the layout TFLite
  kernels use. The graph normalises the pixels itself, (pixel - mean) / std as one MUL and one ADD; with
  `fold_input` (`kndnet export`'s default for the student since runs/v34's shipped with it; `--no-fold-input`
  keeps the MUL) it is one ADD, minus the mean pixel, and the 1/std scale is
  folded into the student's stem convolution weights (quantised at a finer smallest scale than the usual
  2^-12, which those products fall below): exact, padding included, since zero still means the mean pixel.
  The MUL costs twice: its three multipliers (~0.017) are stored at the smallest scale, 2^-12, so each colour
  channel's gain is off by up to 0.7%, and its product is rounded again. On validation the fold took runs/v32's
  KD student from 0.985 to 0.993 top-1 agreement with fp32 (median largest logit error 0.118 -> 0.067) and the
  shipped student from 0.982 to 0.987 (docs/RESULTS.md, runs/v32);
- SiLU is written as x * sigmoid(x): the quantiser annotates sigmoid and mul but not silu, and left as
  silu it stays float between DEQUANTIZE/QUANTIZE pairs (measured: ten float LOGISTIC ops);
- a student with Shades-of-Gray colour constancy (models/colour.py) leaves that layer out: its sixth powers
  and division would stay float between DEQUANTIZE/QUANTIZE pairs (measured: POW, MEAN, DIV, MAXIMUM), so the
  device white-balances the uint8 pixels before quantising them (`inference_tflite.device_pixels`; in C,
  the main.cc that `--c-array` writes), as LiteRT and TFLite Micro runs here do;
- the global average pool gets its own observed output range instead of sharing its input's: the pooled
  features span about a third of the last block's range, and at the shared scale (0.034 vs 0.010 for the
  shipped student) LiteRT quantised them 3.4x more coarsely than the simulation did (validation agreement
  with fp32 0.974 -> 0.987, median max logit difference 0.195 -> 0.104).

The spec travels in the file as a metadata entry (inference_tflite.TFLITE_SPEC_KEY); tensor names are
shortened (they are a twentieth of the file otherwise). `ai-edge-litert`/`litert-torch` are an extra.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kndnet.checkpoint import ModelSpec
from kndnet.errors import KNDNetError
from kndnet.inference_tflite import TFLITE_SPEC_KEY, device_pixels, require_litert
from kndnet.io import atomic_path

FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}


class SigmoidMul(nn.Module):
    """SiLU as x * sigmoid(x), the form the PT2E quantiser can keep in int8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class EdgeStudent(nn.Module):
    """The student as a device runs it: N x H x W x 3 pixels (0..255, float here, int8 once quantised)
    -> N x C logits, normalised inside the graph: (pixel - mean) / std as a multiply-add, or with `fold_input`
    (pixel - mean) into a stem conv whose weights carry 1/std."""

    def __init__(self, model: nn.Module, spec: ModelSpec, fold_input: bool = False) -> None:
        super().__init__()
        self.model = with_explicit_silu(model)
        if hasattr(self.model, "colour"):  # colour constancy: the device white-balances the pixels instead
            self.model.colour = nn.Identity()
        mean, std = spec.pixel_stats()
        self.multiply = not fold_input
        if fold_input:
            fold_input_scale(self.model, 1.0 / std)
            self.register_buffer("shift", -mean)
        else:
            self.register_buffer("scale", 1.0 / std)
            self.register_buffer("shift", -mean / std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2)
        return self.model((x * self.scale if self.multiply else x) + self.shift)


def foldable_stem(model: nn.Module) -> nn.Conv2d | None:
    """The RGB convolution that opens the model's `stem` Sequential (the kndnet student's), which `--fold-input`
    folds the input's 1/std into; None for a model without one (a timm EfficientNet teacher), which keeps the MUL."""
    stem = getattr(model, "stem", None)
    conv = stem[0] if isinstance(stem, nn.Sequential) and len(stem) else None
    return conv if isinstance(conv, nn.Conv2d) and conv.in_channels == 3 else None


def resolve_fold(model: nn.Module, requested: bool | None) -> bool:
    """Whether the LiteRT graph folds the input's 1/std into the stem: as `requested`, or by default (None)
    wherever the model has a stem to fold it into (the default since runs/v34's student shipped folded)."""
    return foldable_stem(model) is not None if requested is None else requested


def fold_input_scale(model: nn.Module, scale: torch.Tensor) -> None:
    """Multiply the student's stem conv weights by a per-input-channel `scale` (1 x 3 x 1 x 1), so the graph need
    not: conv(w, s * x) = conv(w * s, x), zero padding included. Raises for a model without that stem."""
    conv = foldable_stem(model)
    if conv is None or conv.in_channels != scale.numel():
        raise KNDNetError(f"--fold-input needs the kndnet student's stem convolution; {type(model).__name__} has "
                          "none: export it with --no-fold-input")
    with torch.no_grad():
        conv.weight.mul_(scale.view(1, -1, 1, 1))


def with_explicit_silu(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) with every nn.SiLU replaced by SigmoidMul (same function)."""
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.SiLU):
                setattr(module, name, SigmoidMul())
    return model


def nhwc_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float N x H x W x 3 pixels, the EdgeStudent's input."""
    return images.permute(0, 2, 3, 1).float()


def convert_tflite(model: nn.Module, spec: ModelSpec, path: str | Path,
                   calibration: torch.Tensor | None = None, fold_input: bool | None = None) -> Path:
    """Write `model` as .tflite at spec.image_size, batch 1: float when `calibration` is None, else
    full-integer int8 calibrated on those uint8 N x 3 x H x W images (refused if any op stays float);
    `fold_input` folds the input's 1/std into the stem conv (EdgeStudent; None: resolve_fold's default)."""
    litert_torch = require_litert("litert_torch")
    litert_torch.config.show_progress = False
    edge = EdgeStudent(model, spec, resolve_fold(model, fold_input)).eval()
    sample = (torch.zeros(1, spec.image_size, spec.image_size, 3),)
    with torch.no_grad():
        if calibration is None:
            converted = litert_torch.convert(edge, sample)
        else:
            quantised, config = _quantise(edge, sample, device_pixels(calibration, spec))
            converted = litert_torch.convert(quantised, sample, quant_config=config)
    with atomic_path(path) as tmp:
        converted.export(str(tmp))
        _finish(tmp, spec)
        if calibration is not None and (floats := float_ops(tmp)):
            raise KNDNetError(f"{path}: the int8 model still has float ops ({', '.join(floats)}); the "
                              "quantiser left them unannotated, so it is not full-integer")
    return Path(path)


def _pixel_input_quantizer():
    """litert-torch's PT2E quantiser (int8, per-channel weights) with the graph input's quantisation fixed to
    int8 = pixel - 128 instead of calibrated."""
    pt2e = require_litert("litert_torch.quantize.pt2e_quantizer")
    from torchao.quantization.pt2e import PerChannelMinMaxObserver
    from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec, QuantizationAnnotation
    fine_weights = PerChannelMinMaxObserver.with_args(eps=2**-24)
    pixels = FixedQParamsQuantizationSpec(dtype=torch.int8, scale=1.0, zero_point=-128, quant_min=-128,
                                          quant_max=127, qscheme=torch.per_tensor_affine)

    class PixelInputQuantizer(pt2e.PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            for node in model.graph.nodes:
                annotation = node.meta.get("quantization_annotation")
                for edge in list(annotation.input_qspec_map) if annotation else []:
                    if _reads_graph_input(edge):
                        annotation.input_qspec_map[edge] = pixels
                if annotation and node.target == torch.ops.aten.adaptive_avg_pool2d.default:
                    annotation.output_qspec = self.global_config.output_activation  # its own observed range
                if not annotation and _is_pixel_shift(node):
                    node.meta["quantization_annotation"] = self._pixel_shift(node)  # (pixel - mean): int8 too
                if annotation and node.target == torch.ops.aten.conv2d.default and _is_pixel_shift(node.args[0]):
                    weight = node.args[1]  # carries 1/std: below the usual smallest scale, 2^-12
                    annotation.input_qspec_map[weight] = dataclasses.replace(
                        annotation.input_qspec_map[weight], observer_or_fake_quant_ctr=fine_weights)
            return model

        def _pixel_shift(self, add: torch.fx.Node):
            pixel_input, mean = add.args
            return QuantizationAnnotation(input_qspec_map={pixel_input: pixels,
                                                           mean: self.global_config.input_activation},
                                          output_qspec=self.global_config.output_activation, _annotated=True)

    return PixelInputQuantizer().set_global(pt2e.get_symmetric_quantization_config(is_per_channel=True))


def _is_pixel_shift(node: torch.fx.Node) -> bool:
    """The ADD of (pixel - mean) that EdgeStudent puts before a stem conv carrying 1/std."""
    return node.target == torch.ops.aten.add.Tensor and _reads_graph_input(node.args[0])


def _reads_graph_input(node: torch.fx.Node) -> bool:
    """The graph input itself, or its NHWC -> NCHW permute (the first quantised op reads that)."""
    return node.op == "placeholder" or (node.target == torch.ops.aten.permute.default
                                        and node.args[0].op == "placeholder")


def _quantise(edge: nn.Module, sample: tuple[torch.Tensor], calibration: torch.Tensor):
    """PT2E post-training quantisation: export, observe the calibration images, convert."""
    from torchao.quantization.pt2e import quantize_pt2e
    quant_config = require_litert("litert_torch.quantize.quant_config")
    quantizer = _pixel_input_quantizer()
    prepared = quantize_pt2e.prepare_pt2e(torch.export.export(edge, sample).module(), quantizer)
    for image in calibration:  # the exported graph has a static batch of 1
        prepared(nhwc_pixels(image[None]))
    return quantize_pt2e.convert_pt2e(prepared, fold_quantize=False), quant_config.QuantConfig(pt2e_quantizer=quantizer)


def _finish(path: Path, spec: ModelSpec) -> None:
    """Store the spec as metadata and shorten internal tensor names (inputs/outputs keep theirs)."""
    fb = require_litert("ai_edge_litert.tools.flatbuffer_utils")
    schema = require_litert("ai_edge_litert.schema_py_generated")
    model = fb.read_model(str(path))
    for graph in model.subgraphs:
        keep = set(graph.inputs) | set(graph.outputs)
        for index, tensor in enumerate(graph.tensors):
            if index not in keep:
                tensor.name = f"t{index}"
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(spec.to_dict()).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = TFLITE_SPEC_KEY, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != TFLITE_SPEC_KEY.encode()] + [entry]
    fb.write_model(model, str(path))


def op_census(path: str | Path) -> tuple[Counter, list[str]]:
    """Operator counts of a .tflite file, and the ops that read or write a float tensor ('OP(tensor type)')."""
    fb = require_litert("ai_edge_litert.tools.flatbuffer_utils")
    schema = require_litert("ai_edge_litert.schema_py_generated")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = fb.read_model(str(path))
    counts: Counter = Counter()
    floats = []
    for graph in model.subgraphs:
        for op in graph.operators:
            name = names.get(fb.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]), "?")
            counts[name] += 1
            types = {fb.type_to_name(graph.tensors[i].type) for i in [*op.inputs, *op.outputs] if i >= 0}
            if types & FLOAT_TYPES:
                floats.append(f"{name}({'/'.join(sorted(types & FLOAT_TYPES))})")
    return counts, floats


def float_ops(path: str | Path) -> list[str]:
    """The ops of a .tflite file that touch float tensors: empty for a full-integer model."""
    return op_census(path)[1]
