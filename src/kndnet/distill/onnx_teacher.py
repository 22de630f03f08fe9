"""The online teacher run by ONNX Runtime instead of PyTorch (`distill.teacher_runtime: onnxruntime`).

Why: function matching (Beyer et al., CVPR 2022) runs the teacher on every training batch, and on a CPU
that is most of a distillation epoch. The same fp32 weights ran 1.5x to 1.8x faster in ONNX Runtime than in
PyTorch channels_last (EfficientNet-Lite2 at 160 px, batch 32, two threads without native bf16: 174 vs 117
img/s, `benchmarks/bench_teacher_inference.py`, docs/BENCH.md), with the same logits to ~1e-5; a whole
function-matching epoch got 1.2x faster. The teacher is exported once when it is attached, checked
against PyTorch on a probe batch, and kept as bytes in memory (no file is left in the run folder).
CPU only: on a GPU the PyTorch teacher (in bf16) is the fast path, which is what `teacher_runtime: auto`
picks (ONNX Runtime when training runs on the CPU, PyTorch on an accelerator).

`distill.teacher_int8` quantises that ONNX teacher to int8 (static, QDQ, per-channel weights: the student's
export path, deploy/quantize.py), calibrated on training images. On a CPU with AVX-512 VNNI, EfficientNet-Lite2
at 160 px ran 1.8x to 2.2x faster than in ONNX Runtime fp32 (`benchmarks/bench_teacher_inference.py`). A
teacher whose int8 copy calls other classes than its fp32 one would teach something else, so the copy is
checked on training images it was not calibrated on; below MIN_INT8_AGREEMENT top-1 agreement that teacher
runs in fp32 instead, with a warning (slower, never wrong: the distillation a user waited hours for goes on).
Most of the int8 copies' error was not 8 bits: ONNX Runtime quantised the float arithmetic that works the
TF-style "SAME" paddings out from tensor shapes, which shifted every stride-2 convolution's input by a pixel
(deploy/quantize.py keeps it in float now). With it in float the `cpu` recipe's fine-tuned Lite2 and Lite0
teachers agree with their fp32 selves on 0.958 and 0.969 of 384 training images (percentile ranges; 0.951 and
0.924 before the fix), and their probabilities differ by a mean total variation of 0.05 instead of 0.10
(`benchmarks/bench_teacher_int8.py`, docs/BENCH.md). Activation ranges are set by percentile (the central
99.999%), which tied min/max in agreement and gave the smaller largest logit difference.
On x86 CPUs without VNNI, ONNX Runtime's u8 x s8 kernels saturate: there the copies agreed on ~0.90 and fell
back to fp32 (runs/v21), so on such CPUs the weights are stored in 7 bits (`reduce_range`), ONNX Runtime's advice.
Seven bits shift the balance between the two range rules: there runs/v21's Lite2 copy agreed on 0.948 with
percentile ranges but 0.961 with min/max ones (1.39x its fp32 speed), so a copy that fails the check is built
again with the next rule in CALIBRATION_ORDER before the teacher falls back to fp32.

`distill.teacher_split_batch` (on by default) cuts each batch into one slice per thread and scores the slices
concurrently, each in a single-threaded ONNX Runtime call (Run is thread-safe and releases the GIL), instead of one
call whose operators are split over the threads. Each image's logits are the same either way: the samples of a batch
never mix. On two cores of an AMX machine EfficientNet-Lite2 in int8 at 160 px gained 1.4x from its second intra-op
thread, while two single-threaded calls side by side ran 1.7-1.9x one thread's rate: a depthwise network's small
operators leave the second thread waiting at each operator's end (docs/BENCH.md).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from kndnet.checkpoint import ModelSpec
from kndnet.distill.embedding import LogitsAndEmbedding
from kndnet.errors import ConfigError, KNDNetWarning

INT8_CALIBRATION_IMAGES = 128  # training images whose activation ranges set the int8 scales
INT8_CHECK_IMAGES = 384        # other training images on which int8 and fp32 must agree (128 left
                               # a +-0.02 binomial noise on a 0.95 bar)
MIN_INT8_AGREEMENT = 0.95      # top-1 agreement below which the teacher runs in fp32
CALIBRATION_ORDER = ("percentile", "minmax")  # activation-range rules tried in turn until a copy passes


def resolve_teacher_runtime(runtime: str, on_cpu: bool) -> str:
    """`distill.teacher_runtime` as it will run: `auto` becomes onnxruntime when training runs on the CPU
    (the accelerator Lightning's Trainer chose) and torch on any accelerator."""
    if runtime != "auto":
        return runtime
    return "onnxruntime" if on_cpu else "torch"


class OnnxRuntimeTeacher(nn.Module):
    """A frozen teacher behind the nn.Module interface the distillation step already calls: normalised
    float N x 3 x S x S in, raw logits out (the checkpoint's calibration temperature is not applied,
    as with the PyTorch teacher); exported with its embedding, `embedding_and_logits` gives both from one
    call. It holds the ONNX bytes and opens its session on first use, so it can be pickled to a spawned DDP
    worker, which opens its own."""

    def __init__(self, model_bytes: bytes, threads: int, source: str, int8_agreement: float | None = None,
                 int8_ranges: str | None = None, split_batch: bool = True, num_features: int | None = None) -> None:
        super().__init__()
        self.model_bytes, self.threads, self.source = model_bytes, threads, source
        self.num_features = num_features      # the embedding's width when the graph outputs one, else None
        self.int8_agreement = int8_agreement  # its int8 copy's top-1 agreement with fp32; None: not checked
        self.int8_ranges = int8_ranges        # the range rule of the int8 copy in model_bytes; None: fp32
        self.split_batch = split_batch and threads > 1  # one single-threaded call per thread, side by side
        self._session, self._input_name, self._pool, self._pid = None, "", None, 0

    @property
    def int8(self) -> bool:
        """Whether the teacher runs its int8 copy (False: fp32, unquantised or failed the check)."""
        return self.int8_ranges is not None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_session": None, "_pool": None}  # sessions and thread pools do not pickle

    def _opened(self) -> tuple:
        if self._session is None or self._pid != os.getpid():  # a forked process inherits a pool without threads
            import onnxruntime as ort
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1 if self.split_batch else self.threads
            # No spin-waiting between calls: the student's step and the data workers need those cores. With
            # spinning on, 8 teacher calls with pauses between them cost 3.3 s of CPU against 2.1 s without
            # (Lite0, batch 32, 2 threads; the same wall time), and a student-alone run beside a KD run got
            # a fifth of a core.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])
            self._input_name = self._session.get_inputs()[0].name
            if self.split_batch:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="kndnet-teacher")
            self._pid = os.getpid()
        return self._session, self._input_name

    def _score(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for a batch or slice; `_outputs` has opened the session in this process."""
        return self._session.run(None, {self._input_name: pixels})

    def _outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.device.type != "cpu":
            raise ConfigError(f"distill.teacher_runtime 'onnxruntime' runs the teacher {self.source} on the "
                              f"CPU, but the batch is on {x.device}; use teacher_runtime 'torch' on an accelerator")
        pixels = x.detach().float().contiguous().numpy()
        self._opened()
        if not self.split_batch or len(pixels) < 2:
            return [torch.from_numpy(output) for output in self._score(pixels)]
        parts = [part for part in np.array_split(pixels, self.threads) if len(part)]
        scored = list(self._pool.map(self._score, parts))
        return [torch.from_numpy(np.concatenate(outputs)) for outputs in zip(*scored)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits (the graph's first output)."""
        return self._outputs(x)[0]

    def embedding_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled embedding and the logits of one call (a graph exported with_embedding)."""
        if self.num_features is None:
            raise RuntimeError(f"teacher {self.source} was exported without its embedding")
        logits, embedding = self._outputs(x)
        return embedding, logits


def onnxruntime_teacher(model: nn.Module, spec: ModelSpec, source: str, int8_rows: pd.DataFrame | None = None,
                        split_batch: bool = True, with_embedding: bool = False) -> OnnxRuntimeTeacher:
    """Export `model` (the teacher loaded from `source`) to ONNX and check it against PyTorch on a probe
    batch; the teacher runs with as many threads as PyTorch uses (`split_batch`: one slice of each batch per
    thread). With `int8_rows` (manifest rows of training images) it runs quantised to int8, calibrated and
    checked on those images (fp32 if the check fails). `with_embedding`: the graph also outputs the pooled
    embedding (embedding distillation), after the logits."""
    from kndnet.deploy.onnx_export import check_onnx_parity, export_onnx

    probe = torch.randint(0, 256, (2, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
    exported, outputs = (LogitsAndEmbedding(model), ("logits", "embedding")) if with_embedding else (model, ("logits",))
    with tempfile.TemporaryDirectory(prefix="kndnet-teacher-") as tmp:
        path = export_onnx(exported, spec, Path(tmp) / "teacher.onnx", outputs)
        check_onnx_parity(model, spec, path, probe)
        agreement, int8_path, ranges = None, None, None
        if int8_rows is not None:
            int8_path, agreement, ranges = _quantised(path, spec, int8_rows, source)
        return OnnxRuntimeTeacher((int8_path or path).read_bytes(), torch.get_num_threads(), source, agreement,
                                  ranges, split_batch, model.num_features if with_embedding else None)


def quantise_teacher(fp32_path: Path, int8_path: Path, calibration: torch.Tensor, spec: ModelSpec,
                     method: str = "percentile") -> Path:
    """The int8 copy of a teacher as `distill.teacher_int8` makes it: 7-bit weights where this CPU's int8 kernels
    would saturate (x86 without VNNI, kndnet.cpu), 8-bit elsewhere."""
    from kndnet.cpu import has_int8_dot_product
    from kndnet.deploy.quantize import quantize_int8
    return quantize_int8(fp32_path, int8_path, calibration, spec, method, reduce_range=not has_int8_dot_product())


def _quantised(fp32_path: Path, spec: ModelSpec, rows: pd.DataFrame,
               source: str) -> tuple[Path | None, float, str | None]:
    """The int8 copy of the teacher at `fp32_path`, calibrated on some of `rows`' images and checked on
    others, its top-1 agreement with fp32 and its range rule. Each rule of CALIBRATION_ORDER is tried until a
    copy agrees on at least MIN_INT8_AGREEMENT of the check images; if none does, None for the copy and the
    rule (with a warning) and the best agreement seen."""
    from kndnet.deploy.onnx_export import logits_parity
    from kndnet.inference import OnnxPredictor, eval_images

    wanted = INT8_CALIBRATION_IMAGES + INT8_CHECK_IMAGES
    rows = rows.sample(n=min(wanted, len(rows)), random_state=0).reset_index(drop=True)
    images = eval_images(rows, spec)[0]
    n_calib = max(1, len(images) * INT8_CALIBRATION_IMAGES // wanted)
    calibration, check = images[:n_calib], images[n_calib:]
    if not len(check):
        raise ConfigError(f"distill.teacher_int8: teacher {source} needs at least 2 training images to calibrate "
                          "and check its int8 copy; turn teacher_int8 off for so small a data set")
    reference = OnnxPredictor(fp32_path).raw_logits(check)
    agreements = {}
    for method in CALIBRATION_ORDER:
        int8_path = quantise_teacher(fp32_path, fp32_path.with_name(f"teacher_int8_{method}.onnx"), calibration,
                                     spec, method)
        fused = OnnxPredictor(int8_path, exact_int8=False)  # the kernels the teacher will run
        agreements[method] = logits_parity(reference, fused.raw_logits(check)).top1_agreement
        if agreements[method] >= MIN_INT8_AGREEMENT:
            return int8_path, agreements[method], method
    tried = ", ".join(f"{agreement:.3f} ({method} ranges)" for method, agreement in agreements.items())
    warnings.warn(f"distill.teacher_int8: the int8 copies of teacher {source} agree with its fp32 self on {tried} "
                  f"of {len(check)} training images (< {MIN_INT8_AGREEMENT}), so they would teach other labels: "
                  "this teacher runs in fp32 (slower). Set distill.teacher_int8 false to skip the check",
                  KNDNetWarning, stacklevel=2)
    return None, max(agreements.values()), None
