"""Run a .tflite model in TensorFlow Lite for Microcontrollers and measure the RAM (arena) it really used.

TFLM plans every tensor, kernel scratch buffer and its own bookkeeping into one static arena; its
recording allocator reports the total after allocation (`print_allocations()`, printed to stderr from C++). The
figure is captured from that printout as a number, so the model card states what firmware must reserve,
next to the graph-liveness estimate from the ONNX graph (deploy/graph_stats.py).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from kndnet.errors import KNDNetError
from kndnet.inference_tflite import device_pixels, quantise_input, require_litert, tflite_spec

ARENA_LINE = re.compile(r"Arena allocation total (\d+) bytes")
HEAD_LINE = re.compile(r"Arena allocation head (\d+) bytes")
TRY_ARENA = 4 * 1024 * 1024  # generous: the recorded total, not this, is the figure reported


@dataclass
class MicroRun:
    """One TFLM run: the outputs as stored (int8) and the arena it allocated."""
    outputs: np.ndarray
    arena_bytes: int
    arena_head_bytes: int  # the tensors' planned region alone (activations), within the total


@contextmanager
def captured_fd(fd: int = 2) -> Iterator[list[str]]:
    """Collect what C/C++ code writes to file descriptor `fd` (TFLM's MicroPrintf writes to stderr, 2)."""
    lines: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def arena_from_printout(lines: list[str]) -> tuple[int, int]:
    """(total, head) arena bytes from print_allocations() lines; KNDNetError if the format changed."""
    text = "\n".join(lines)
    total, head = ARENA_LINE.search(text), HEAD_LINE.search(text)
    if not total or not head:
        raise KNDNetError("tflite-micro's print_allocations() did not report 'Arena allocation total/head'; "
                          f"its output format changed (got: {text[:200]!r})")
    return int(total.group(1)), int(head.group(1))


def run_micro(model: bytes | str | Path, images: torch.Tensor) -> MicroRun:
    """Run uint8 N x 3 x H x W `images` through TFLM one by one; outputs N x C as the graph stores them."""
    runtime = require_litert("tflite_micro.python.tflite_micro.runtime")
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    try:
        interpreter = runtime.Interpreter.from_bytes(data, arena_size=TRY_ARENA)
    except RuntimeError as err:
        raise KNDNetError(f"TFLite Micro cannot load the model ({err}); it needs builtin int8 ops") from None
    details = interpreter.get_input_details(0)
    quant = details["quantization_parameters"]
    pixels = device_pixels(images, tflite_spec(data, "the TFLite Micro model"))
    x = quantise_input(pixels, details["dtype"], float(quant["scales"][0]), int(quant["zero_points"][0]))
    rows = []
    for one in x:
        interpreter.set_input(one[None], 0)
        interpreter.invoke()
        rows.append(np.array(interpreter.get_output(0))[0])
    with captured_fd(2) as lines:
        interpreter.print_allocations()
    total, head = arena_from_printout(lines)
    return MicroRun(np.stack(rows), total, head)
