"""What this CPU can do with int8, and how ONNX Runtime should run int8 models on it.

ONNX Runtime's x86 int8 convolutions multiply unsigned activations by signed weights with VPMADDUBSW where the CPU
lacks VNNI (AVX-512 VNNI, AVX-VNNI or AMX): it adds pairs of products in 16 bits and saturates, so 8-bit weights
lose accuracy there (ONNX Runtime's quantisation guide). On an AMD EPYC without VNNI, the shipped int8 student's
fused kernels called 42 of the 897 test images differently from the file's reference arithmetic, and the in-browser
app (WebAssembly, which does not saturate) disagreed with Python on 2 of 50 real images. The two exact arithmetics,
VNNI's integer kernels and the QDQ nodes run in float, still round a requantisation differently now and then (one
test image of 897 for the shipped student), so a model card records which of them measured its int8 figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnxruntime is imported only by what runs a model
    import onnxruntime as ort


VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def _flags(cpuinfo: Path) -> set[str]:
    """The words of /proc/cpuinfo (its flags among them); empty where there is none (not Linux)."""
    return set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()


def has_int8_dot_product(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this x86 CPU has VNNI (AVX-512 VNNI, AVX-VNNI or AMX), where ONNX Runtime's int8 convolutions are
    exact; without it they saturate and 8-bit weights lose accuracy. True where it cannot tell (not Linux)."""
    flags = _flags(cpuinfo)
    return "avx2" not in flags or bool(flags & VNNI_FLAGS)


# What `int8_arithmetic` records in a model card, and how the card says it
INT8_ARITHMETIC = {"vnni_integer": "integer kernels (VNNI)", "qdq_float": "QDQ nodes in float (no VNNI)",
                   "unknown": "arithmetic of a CPU kndnet could not identify"}


def int8_arithmetic(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Which arithmetic `exact_int8_options` runs int8 models with on this CPU, as a model card records it:
    vnni_integer, qdq_float, or unknown where /proc/cpuinfo is missing or names no x86 AVX2 CPU."""
    flags = _flags(cpuinfo)
    if "avx2" not in flags:
        return "unknown"
    return "vnni_integer" if flags & VNNI_FLAGS else "qdq_float"


def exact_int8_options(options: ort.SessionOptions, cpuinfo: Path = Path("/proc/cpuinfo")) -> ort.SessionOptions:
    """`options`, set so that a QDQ int8 model computes what its file says on this CPU.

    Where the int8 kernels saturate (no VNNI), ONNX Runtime is told not to fuse the QDQ nodes into integer
    kernels: each DequantizeLinear -> float op -> QuantizeLinear then runs as written, which is the model's
    reference arithmetic, 3.4x slower for the student (test split, batch 64, 2 threads). Float models are
    unaffected. The speed benchmarks do not use this: they time the fused kernels users deploy."""
    if not has_int8_dot_product(cpuinfo):
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return options
