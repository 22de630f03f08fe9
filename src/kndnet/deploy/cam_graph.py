"""Class activation maps as a second output of an exported graph (Zhou et al., CVPR 2016).

The student ends in global average pooling, dropout (identity at inference) and a linear layer, so
the gradient of logit k with respect to the last feature map F is W[k] / (h*w) everywhere: Grad-CAM's
channel weights are W[k] / (h*w), and Grad-CAM = ReLU(sum_c W[k, c] * F[c]) / (h*w), the CAM up to
scale. `add_class_maps` appends that sum for every class to a graph written by `kndnet export`:

    class_maps = Einsum("kc,nchw->nkhw", W, F)        # N x num_classes x h x w

The graph is grafted, not re-exported or re-quantised: W and F are the very tensors the classifier
reads (the int8 model's dequantised weights and feature map), so the `logits` output, its
calibration and every other node stay byte-for-byte those of the input model. The new Einsum runs
in float (7 x C x h x w multiply-adds, a few thousand).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import helper

from kndnet.errors import CheckpointError
from kndnet.io import atomic_path

CLASS_MAPS = "class_maps"
POOLS = {"GlobalAveragePool", "ReduceMean"}


@dataclass(frozen=True)
class Head:
    """Names of the tensors of a pool -> (flatten) -> Gemm classifier head."""
    features: str   # N x C x h x w, the pool's input
    weight: str     # the Gemm's B input
    trans_b: bool   # whether B is stored num_classes x C (PyTorch's Linear) or C x num_classes


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _upstream_pool(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    """The pooling node feeding `tensor` through shape-only or quantise/dequantise nodes, if any."""
    producers = _producers(graph)
    node = producers.get(tensor)
    while node is not None and node.op_type not in POOLS:
        if node.op_type not in {"Flatten", "Reshape", "Squeeze", "QuantizeLinear", "DequantizeLinear"}:
            return None
        node = producers.get(node.input[0])
    return node


def find_head(model: onnx.ModelProto, path: object = "model") -> Head:
    """Locate the classifier head; CheckpointError when the graph does not end in pool + linear."""
    graph = model.graph
    for node in graph.node:
        if node.op_type != "Gemm":
            continue
        pool = _upstream_pool(graph, node.input[0])
        if pool is not None:
            trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
            return Head(features=pool.input[0], weight=node.input[1], trans_b=trans_b)
    raise CheckpointError(f"{path}: no global-average-pool + linear head found, so no class activation maps "
                          "can be added; pass a model exported by `kndnet export` from a kndnet student")


def add_class_maps(model: onnx.ModelProto, path: object = "model") -> onnx.ModelProto:
    """Return a copy of `model` with a second output, `class_maps` (N x classes x h x w, float)."""
    if any(o.name == CLASS_MAPS for o in model.graph.output):
        return model
    head = find_head(model, path)
    grafted = onnx.ModelProto()
    grafted.CopyFrom(model)
    equation = "kc,nchw->nkhw" if head.trans_b else "ck,nchw->nkhw"
    grafted.graph.node.append(helper.make_node("Einsum", [head.weight, head.features], [CLASS_MAPS],
                                               equation=equation))
    grafted.graph.output.append(helper.make_tensor_value_info(CLASS_MAPS, onnx.TensorProto.FLOAT,
                                                                    ["batch", "classes", "height", "width"]))
    grafted.metadata_props.add(key=CLASS_MAPS, value="N x classes x h x w: sum over channels of the classifier "
                               "weights times the last feature map (CAM = Grad-CAM up to scale)")
    onnx.checker.check_model(grafted)
    return grafted


def write_cam_model(source: str | Path, target: str | Path) -> Path:
    """Write `source` (an ONNX file from `kndnet export`) with its class-map output added, atomically."""
    try:
        model = onnx.load(str(source))
    except Exception as err:  # protobuf decode errors come in several types
        raise CheckpointError(f"{source}: not a readable ONNX file ({err}); export it with `kndnet export`") from None
    grafted = add_class_maps(model, source)
    with atomic_path(target) as tmp:
        onnx.save(grafted, str(tmp))
    return Path(target)
