"""Costs read from an ONNX graph: parameters, multiply-accumulates, and peak activation memory.

Peak activation memory is a liveness analysis over the graph in its (topological) node order: a
tensor is alive from the node that produces it to the last node that reads it, weights excluded
(they live in flash). The peak of the summed sizes of live tensors, at batch 1 and `bytes_per_element`
(1 for int8 deployment, 4 for float32), is what a microcontroller runtime needs in SRAM, before
any in-place or operator-fusion savings a specific runtime may add.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference


def _static_graph(path: Path, image_size: int) -> onnx.ModelProto:
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value = 1
    for d, v in zip(dims[1:], (3, image_size, image_size)):
        d.dim_value = v
    return shape_inference.infer_shapes(model)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


def _macs(node: onnx.NodeProto, shapes: dict, weights: dict) -> int:
    if node.op_type == "Conv":
        out, w = shapes.get(node.output[0]), weights.get(node.input[1])
        return int(np.prod(out) * np.prod(w.shape[1:])) if out and w is not None else 0
    if node.op_type in {"Gemm", "MatMul"}:
        w = weights.get(node.input[1])
        return int(np.prod(w.shape)) if w is not None else 0
    return 0


def graph_stats(path: str | Path, image_size: int, bytes_per_element: int = 1) -> dict[str, int]:
    """Parameters, MACs and peak activation bytes of a float ONNX graph at batch 1."""
    model = _static_graph(Path(path), image_size)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    shapes = _shapes(model)
    last_use: dict[str, int] = {}
    for step, node in enumerate(model.graph.node):
        for name in node.input:
            last_use[name] = step
    for out in model.graph.output:
        last_use[out.name] = len(model.graph.node)
    alive = {model.graph.input[0].name}
    peak = 0
    for step, node in enumerate(model.graph.node):
        alive |= {o for o in node.output if o in shapes}
        size = sum(int(np.prod(shapes[t])) for t in alive if t in shapes)
        peak = max(peak, size)
        alive = {t for t in alive if last_use.get(t, -1) > step}
    return {"parameters": int(sum(w.size for w in weights.values() if w.ndim > 0)),
            "macs": int(sum(_macs(n, shapes, weights) for n in model.graph.node)),
            "peak_activation_bytes": int(peak * bytes_per_element)}
