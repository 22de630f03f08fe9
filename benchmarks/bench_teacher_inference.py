"""Images per second of an online teacher's forward pass: PyTorch fp32 NCHW, channels_last, channels_last +
bf16, ONNX Runtime fp32 (`distill.teacher_runtime: onnxruntime`) and int8 (`distill.teacher_int8`), each as one
call on all threads and as one single-threaded call per slice of the batch, side by side
(`distill.teacher_split_batch`).

Why: function-matching KD runs the teacher on every training batch, so its inference speed sets the cost
of a KD epoch. bf16 autocast pays only where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere
oneDNN emulates it, which is why `distill.teacher_bf16` falls back to fp32 on such CPUs. This prints the
rates on this machine, as ratios to fp32 NCHW, with the CPU's bf16 support; the ONNX Runtime rows are the
teacher exactly as distillation attaches it (int8: calibrated on `--data`'s training images, as in a run).
ImageNet weights with a new head: only the arithmetic matters. Usage:
    python benchmarks/bench_teacher_inference.py [--data DIR] [--teacher tf_efficientnet_lite2] [--image-size 160]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import data_arg, print_rates, time_int8_teachers_only

from kndnet.checkpoint import ModelSpec
from kndnet.config import DataConfig, load_config
from kndnet.data.manifest import build_manifest
from kndnet.data.selection import split_rows
from kndnet.distill.onnx_teacher import OnnxRuntimeTeacher, onnxruntime_teacher
from kndnet.models import create_model
from kndnet.training.module import cpu_bf16_instructions


def images_per_second(model: torch.nn.Module, x: torch.Tensor, bf16: bool, repeats: int) -> float:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)  # warm-up: oneDNN picks its kernels on the first call
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return repeats * len(x) / (time.perf_counter() - start)


def split_copy(teacher: OnnxRuntimeTeacher) -> OnnxRuntimeTeacher:
    """The same ONNX teacher run as `distill.teacher_split_batch` runs it: a slice of the batch per thread."""
    return OnnxRuntimeTeacher(teacher.model_bytes, teacher.threads, teacher.source, split_batch=True)


def main() -> None:
    time_int8_teachers_only()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arg(parser)
    parser.add_argument("--teacher", default="tf_efficientnet_lite2")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = load_config(role="teacher", overrides={"model.arch": args.teacher, "model.pretrained": "lite-pypi",
                                                 "data.image_size": args.image_size})
    model, spec = create_model(cfg.model).eval(), ModelSpec.from_config(cfg)
    onnx_teacher = onnxruntime_teacher(model, spec, args.teacher, split_batch=False)  # from the same weights
    train_rows = split_rows(build_manifest(DataConfig(path=args.data))[0], "train", 0)
    int8_teacher = onnxruntime_teacher(model, spec, args.teacher, int8_rows=train_rows, split_batch=False)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    rates = {"fp32, NCHW": images_per_second(model, x, False, args.repeats)}
    model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    rates["fp32, channels_last"] = images_per_second(model, x, False, args.repeats)
    rates["bf16 autocast, channels_last"] = images_per_second(model, x, True, args.repeats)
    for name, teacher in (("fp32", onnx_teacher), ("int8", int8_teacher)):
        rates[f"ONNX Runtime {name}"] = images_per_second(teacher, x, False, args.repeats)
        rates[f"ONNX Runtime {name}, split batch"] = images_per_second(split_copy(teacher), x, False, args.repeats)
    native = ", ".join(f"{name} {has}" for name, has in cpu_bf16_instructions().items())
    threads = torch.get_num_threads()
    print(f"{args.teacher} at {args.image_size} px, batch {args.batch_size}, {threads} threads; {native}")
    print_rates(rates, "fp32, NCHW", 30, "fp32 NCHW")


if __name__ == "__main__":
    main()
