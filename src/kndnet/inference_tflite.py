"""Run an exported LiteRT (TensorFlow Lite) model behind the same Predictor interface as .ckpt and .onnx.

The .tflite file carries the model spec (classes, input size, load size, normalisation, temperature) as
a TFLite metadata entry named `kndnet_spec`, the key ONNX files use, so `evaluate` and `predict` work
from the file alone. Its graph takes N x H x W x 3 RGB pixels: int8 (pixel / scale + zero point, the
input tensor's own quantisation) for the full-integer model, float 0..255 for the float one; the
normalisation is inside the graph (deploy/tflite_export.py says why). A student with colour constancy
gets white-balanced pixels (`device_pixels`), as a device must feed them.

`ai-edge-litert` is an optional extra, imported only when a .tflite model is opened.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from kndnet.checkpoint import ModelSpec
from kndnet.errors import CheckpointError, ConfigError
from kndnet.models.colour import white_balance_pixels

LITERT_EXTRA = "pip install 'kndnet[litert]'"
TFLITE_SPEC_KEY = "kndnet_spec"  # the same key as ONNX's metadata_props


def require_litert(module: str) -> object:
    """Import an optional LiteRT package, or stop with the extra that provides it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"LiteRT support needs the optional packages ({module} is missing: {err}); "
                          f"install them with `{LITERT_EXTRA}`") from None


def check_litert_installed() -> None:
    """Stop early (before any file is read or written) when the LiteRT extra is not installed."""
    for module in ("litert_torch", "ai_edge_litert.interpreter", "tflite_micro.python.tflite_micro.runtime"):
        require_litert(module)


def read_tflite_metadata(data: bytes, source: str | Path) -> dict[str, bytes]:
    """The name -> bytes metadata entries of a .tflite flatbuffer; CheckpointError if it is not one."""
    schema = require_litert("ai_edge_litert.schema_py_generated")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise CheckpointError(f"{source}: not a TFLite model (no 'TFL3' identifier); export it again with "
                              "`kndnet export --tflite`")
    model = schema.Model.GetRootAsModel(data, 0)
    entries = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        buffer = model.Buffers(entry.Buffer())
        entries[entry.Name().decode()] = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    return entries


def tflite_spec(data: bytes, source: str | Path) -> ModelSpec:
    """The ModelSpec stored in a .tflite file by `kndnet export --tflite`."""
    meta = read_tflite_metadata(data, source)
    if TFLITE_SPEC_KEY not in meta:
        raise CheckpointError(f"{source}: TFLite model has no '{TFLITE_SPEC_KEY}' metadata; export it with "
                              "`kndnet export --tflite`")
    try:
        return ModelSpec.from_dict(json.loads(meta[TFLITE_SPEC_KEY]), source)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{source}: '{TFLITE_SPEC_KEY}' metadata is not JSON ({err})") from None


def quantise_input(images: torch.Tensor, dtype: type, scale: float, zero_point: int) -> np.ndarray:
    """uint8 N x 3 x H x W pixels -> the graph's N x H x W x 3 input: float pixels, or quantised int8/uint8.

    The export calibrates the input to about 0..255 (scale ~1), so the quantisation is lossless.
    """
    pixels = images.permute(0, 2, 3, 1).numpy().astype(np.float32)
    if dtype == np.float32:
        return pixels
    info = np.iinfo(dtype)
    return np.clip(np.round(pixels / scale + zero_point), info.min, info.max).astype(dtype)


def device_pixels(images: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """The uint8 pixels a device feeds the graph: white-balanced first when the student has colour constancy,
    a layer the .tflite graph leaves to the device (deploy/tflite_export.py says why)."""
    return images if spec.color_constancy == "none" else white_balance_pixels(images)


def dequantise(values: np.ndarray, dtype: type, scale: float, zero_point: int) -> np.ndarray:
    """A graph output as float: (q - zero point) * scale for an integer tensor."""
    if dtype == np.float32:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


class TflitePredictor:
    """A .tflite model in ai-edge-litert's interpreter (XNNPACK on CPU), one image per invoke.

    Why one at a time: the converted graph has a static batch of 1, as microcontroller firmware runs it.
    `reference=True` uses LiteRT's reference kernels instead of XNNPACK: the arithmetic TFLite Micro
    implements, for parity checks.
    """

    def __init__(self, path: str | Path, threads: int | None = None, reference: bool = False) -> None:
        data = Path(path).read_bytes()
        self.spec = tflite_spec(data, path)
        interpreter_module = require_litert("ai_edge_litert.interpreter")
        resolver = interpreter_module.OpResolverType
        kernels = resolver.BUILTIN_REF if reference else resolver.AUTO
        try:
            self.interpreter = interpreter_module.Interpreter(model_content=data, num_threads=threads,
                                                              experimental_op_resolver_type=kernels)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path}: LiteRT cannot load this model ({err}); export it again with "
                                  "`kndnet export --tflite`") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.source = str(path)

    def raw_outputs(self, images: torch.Tensor) -> np.ndarray:
        """The graph's outputs as stored (int8 for the full-integer model); N x C."""
        scale, zero_point = self.input["quantization"]
        x = quantise_input(device_pixels(images, self.spec), self.input["dtype"], scale, zero_point)
        rows = []
        for one in x:
            self.interpreter.set_tensor(self.input["index"], one[None])
            self.interpreter.invoke()
            rows.append(self.interpreter.get_tensor(self.output["index"])[0].copy())
        return np.stack(rows)

    def raw_logits(self, images: torch.Tensor) -> np.ndarray:
        """uint8 N x 3 x H x W -> the graph's logits, dequantised, before the calibration temperature."""
        scale, zero_point = self.output["quantization"]
        return dequantise(self.raw_outputs(images), self.output["dtype"], scale, zero_point)

    def logits(self, images: torch.Tensor) -> np.ndarray:
        """uint8 N x 3 x H x W -> logits / calibration temperature, N x C."""
        return self.raw_logits(images) / self.spec.calibration_temperature
