"""One LightningModule for the three roles: teacher, student alone, and student by distillation.

A training step returns its loss parts (CE, KD, mask coverage) so the per-epoch CSV shows how much
of each batch the confidence mask let through (KNDNet reports about 42% at threshold 0.65).
Images arrive as uint8 and are normalised here, on the device, in channels_last when asked.

Optional levers, each off by default: mixup/CutMix (the online teacher scores the same mixed images:
function matching, Beyer et al., CVPR 2022), unlabelled transfer images that only the teacher scores (the KD
term covers them, the label loss does not), views made at `data.view_size` and shrunk for the student,
an exponential moving average of the weights (timm's ModelEmaV3) that is validated, checkpointed
and, being what validation selected, the weights every loader of the checkpoint uses, and embedding
distillation (distill/embedding.py: the student's pooled embedding matched to each online teacher's through
projectors that train beside it and are never part of the model the checkpoint rebuilds).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from kndnet.checkpoint import (
    SPEC_KEY,
    ModelSpec,
    load_config_from_checkpoint,
    load_model,
    model_weights,
    read_checkpoint,
    spec_payload,
)
from kndnet.config import Config, config_from_dict, teacher_checkpoints
from kndnet.distill.embedding import EmbeddingProjectors, embedding_and_logits
from kndnet.distill.losses import distillation_loss
from kndnet.distill.onnx_teacher import onnxruntime_teacher
from kndnet.errors import CheckpointError, ConfigError, KNDNetWarning
from kndnet.models import create_model
from kndnet.training.datamodule import prior_exponent
from kndnet.training.mixing import build_mixer, mix_batch, mix_images
from kndnet.training.resizing import progressive_size

if TYPE_CHECKING:
    import pandas as pd


def class_weights(counts: list[int]) -> torch.Tensor:
    """'Balanced' CE weights n / (C * n_c), as scikit-learn computes them; empty classes get 0."""
    counts_t = torch.tensor(counts, dtype=torch.float)
    weights = counts_t.sum() / (len(counts) * counts_t.clamp(min=1))
    return torch.where(counts_t > 0, weights, torch.zeros_like(weights))


def _metrics(num_classes: int) -> MetricCollection:
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "balanced_acc": MulticlassRecall(num_classes, average="macro"),
        "macro_f1": MulticlassF1Score(num_classes, average="macro"),
    })


class LesionClassifier(L.LightningModule):
    def __init__(self, config: dict[str, Any], class_counts: list[int]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg: Config = config_from_dict(config)
        self.model = create_model(self.cfg.model, pretrained=True)
        self._warm_start(self.cfg.train.init_from)
        if self.cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.register_buffer("ce_weight", class_weights(class_counts) if
                             self.cfg.train.class_weighted_loss else torch.ones(len(class_counts)))
        spec = ModelSpec.from_config(self.cfg)
        mean, std = spec.pixel_stats()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.val_metrics = _metrics(self.cfg.model.num_classes).clone(prefix="val/")
        self.mixer = build_mixer(self.cfg.train, self.cfg.model.num_classes)
        self.register_buffer("teacher_shift", self._teacher_prior_shift(class_counts), persistent=False)
        self.ema: ModelEmaV3 | None = None
        self.live_val_metrics: MetricCollection | None = None
        if self.cfg.train.ema_decay > 0:  # a submodule: saved and restored with the checkpoint
            self.ema = ModelEmaV3(self.model, decay=self.cfg.train.ema_decay, use_warmup=True)
            self.ema.requires_grad_(False)
            if self.cfg.train.ema_validate_live:
                self.live_val_metrics = _metrics(self.cfg.model.num_classes).clone(prefix="val_live/")
        self._teacher: list[torch.nn.Module] = []  # a list keeps it out of state_dict and optimiser
        self._teacher_runtime = "torch"  # distill.teacher_runtime resolved when the teachers are attached
        self._teacher_sizes: list[int] = []          # each teacher's input size
        # compiled wrapper kept outside the module tree, so checkpoint keys stay `model.*`
        self._compiled = [self._compile(self.model)]
        # embedding distillation: the student's embedding and logits in one (compiled) pass, and one projector
        # per teacher, made when the teachers are attached (their widths are known then)
        self.projectors: EmbeddingProjectors | None = None
        self._with_embedding = self._embedding_pass() if self._embedding_weight() else None
        self.samples_seen = 0
        self.samples_per_rank: list[int] = []

    def _embedding_weight(self) -> float:
        """distill.embedding_weight where it applies (distillation), else 0."""
        return self.cfg.distill.embedding_weight if self.cfg.role == "distill" else 0.0

    def _embedding_pass(self) -> Any:
        """The student's `forward_with_embedding`, compiled as its forward is; ConfigError for a model without one."""
        if not hasattr(self.model, "forward_with_embedding"):
            raise ConfigError(f"distill.embedding_weight needs the kndnet student's embedding pass; model.arch "
                              f"{self.cfg.model.arch!r} has none: distil into kndnet_student or set the weight to 0")
        return self._compile(self.model.forward_with_embedding)

    def _compile(self, fn: Any) -> Any:
        """`fn` itself unless train.compile; else torch.compile, specialised to each input size under progressive
        resizing: by default the first size change makes dynamo recompile a shape-generic graph, whose kernels then
        also run the final size and may be slower than a graph made for it (likely why runs/v23's last epochs at
        128 px ran 71-81 s against 65 s at a fixed size). Static graphs cost one compilation per size, a handful per
        run (runs/v54: about 30 s each)."""
        if not self.cfg.train.compile:
            return fn
        return torch.compile(fn, dynamic=False if self.cfg.train.progressive_start else None)

    def _warm_start(self, path: str) -> None:
        if path and path != "none":
            self.model.load_state_dict(model_weights(read_checkpoint(path)["state_dict"]))

    def _teacher_prior_shift(self, class_counts: list[int]) -> torch.Tensor:
        """Added to the teacher's logits: (e_student - e_teacher) * log n_c, where a sampler shows the prior
        n_c**e (see `prior_exponent`). A teacher trained with the square-root sampler leans towards frequent
        classes by sqrt(n_c); a student on the balanced sampler should be taught a balanced posterior."""
        shift = torch.zeros(len(class_counts))
        if self.cfg.role == "distill" and self.cfg.distill.teacher_prior_shift:
            delta = prior_exponent(self.cfg.train.sampler) - prior_exponent(self._teacher_sampler())
            shift = delta * torch.tensor(class_counts, dtype=torch.float).clamp(min=1).log()
        return shift

    def _teacher_sampler(self) -> str:
        """The sampler that trained the teacher; an ensemble's members must share one (one prior to undo)."""
        paths = teacher_checkpoints(self.cfg.distill)
        if not paths:
            raise ConfigError("distill.teacher_prior_shift needs the teacher checkpoint (distill.teacher) "
                              "to read which sampler trained it")
        samplers = {path: load_config_from_checkpoint(path).train.sampler for path in paths}
        if len(set(samplers.values())) > 1:
            named = ", ".join(f"{path}: {sampler}" for path, sampler in samplers.items())
            raise ConfigError(f"distill.teacher_prior_shift: the ensemble's teachers were trained with different "
                              f"samplers ({named}); the shift undoes one training prior, so turn it off or "
                              "use teachers trained alike")
        return next(iter(samplers.values()))

    def attach_online_teachers(self, paths: list[str], runtime: str = "torch",
                               train_rows: pd.DataFrame | None = None) -> None:
        """Load the teacher (or the members of an ensemble teacher) that scores every training batch.

        Members must read pixels as the student does (mean, std) and name the same classes in the same
        order, or their averaged logits would mean nothing; each is fed the view at its own input size.
        `runtime` is `distill.teacher_runtime` resolved for the trainer's accelerator (`auto` is never passed):
        with onnxruntime each member runs in ONNX Runtime (see onnx_teacher), in int8 under
        `distill.teacher_int8`, calibrated on images of `train_rows` (the run's training rows), each batch cut
        into one slice per thread under `distill.teacher_split_batch`.
        """
        if runtime not in ("torch", "onnxruntime"):
            raise ValueError(f"attach_online_teachers takes a resolved runtime (torch or onnxruntime), not {runtime!r}")
        self._teacher_runtime = runtime
        int8_rows = self._int8_calibration(train_rows)
        ours = _pixels_and_classes(ModelSpec.from_config(self.cfg))
        self._teacher, self._teacher_sizes = [], []
        for path in paths:
            teacher, spec = load_model(path)
            spec = dataclasses.replace(spec, image_size=self.cfg.distill.teacher_size or spec.image_size)
            theirs = _pixels_and_classes(spec)
            if theirs != ours:
                raise CheckpointError(f"teacher {path} reads pixels and classes as {theirs} but the student "
                                      f"as {ours} (mean, std, classes); distil from teachers trained on the "
                                      "same classes and normalisation")
            if self._teacher_runtime == "onnxruntime":
                teacher = onnxruntime_teacher(teacher, spec, path, int8_rows, self.cfg.distill.teacher_split_batch,
                                              with_embedding=bool(self._embedding_weight()))
            elif self.cfg.train.channels_last:
                teacher = teacher.to(memory_format=torch.channels_last)
            self._teacher.append(teacher.requires_grad_(False))
            self._teacher_sizes.append(spec.image_size)
        if self._embedding_weight():
            self.projectors = EmbeddingProjectors(self.model.num_features, [t.num_features for t in self._teacher])

    def _int8_calibration(self, train_rows: pd.DataFrame | None) -> pd.DataFrame | None:
        """The rows whose images calibrate int8 teachers; None when the teachers run unquantised."""
        if not self.cfg.distill.teacher_int8:
            return None
        if self._teacher_runtime != "onnxruntime":
            warnings.warn("distill.teacher_int8 quantises ONNX Runtime teachers; the PyTorch teacher "
                          f"(teacher_runtime {self._teacher_runtime}) runs unquantised", KNDNetWarning)
            return None
        if train_rows is None:
            raise ConfigError("distill.teacher_int8 calibrates the teachers on training images: attach them "
                              "with the run's training rows")
        return train_rows

    def teacher_int8_agreement(self) -> dict[str, list]:
        """For the run summary: each checked teacher's int8 top-1 agreement with its fp32 self, whether it
        ran in int8 (False: it failed the check and ran in fp32) and with which activation ranges (None: fp32);
        empty when no teacher was quantised."""
        checked = [t for t in self._teacher if getattr(t, "int8_agreement", None) is not None]
        if not checked:
            return {}
        return {"teacher_int8_agreement": [t.int8_agreement for t in checked],
                "teacher_int8_used": [t.int8 for t in checked],
                "teacher_int8_ranges": [t.int8_ranges for t in checked]}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W -> normalised float, channels_last when configured."""
        x = (images.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._compiled[0](self.preprocess(images))

    def _teacher_outputs(self, batch: dict[str, torch.Tensor],
                         x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Cached logits of this view, or the online teacher's on exactly the (mixed) images `x`; for an
        ensemble teacher the mean of its members' raw logits (Hinton et al. 2015). Second: each member's
        pooled embedding under embedding distillation, else an empty list."""
        if "teacher_logits" in batch:
            return batch["teacher_logits"].float() + self.teacher_shift, []
        if not self._teacher:
            raise RuntimeError("distillation needs cached teacher logits or an online teacher")
        torch_teacher = self._teacher_runtime == "torch"  # ONNX Runtime runs it in fp32
        bf16 = self.cfg.distill.teacher_bf16 and torch_teacher and _native_bf16(x.device.type)
        with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = [self._member_outputs(teacher.to(x.device).eval(), _resized(x, size))
                       for teacher, size in zip(self._teacher, self._teacher_sizes)]
        logits = torch.stack([member_logits for member_logits, _ in outputs]).mean(dim=0) + self.teacher_shift
        return logits, [embedding for _, embedding in outputs if embedding is not None]

    def _member_outputs(self, teacher: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One teacher's logits on the view (at the size it was trained on, or distill.teacher_size), and on its
        mirror when asked; and its pooled embedding (likewise) under embedding distillation, else None."""
        views = [x, x.flip(-1)] if self.cfg.distill.teacher_hflip else [x]
        if self.projectors is None:
            return torch.stack([teacher(view).float() for view in views]).mean(dim=0), None
        embeddings, logits = zip(*(embedding_and_logits(teacher, view) for view in views))
        return torch.stack(logits).float().mean(dim=0), torch.stack(embeddings).float().mean(dim=0)

    def train_size(self) -> int:
        """The student's input size this epoch: data.image_size, or smaller under progressive resizing."""
        t = self.cfg.train
        return progressive_size(self.current_epoch, t.epochs, self.cfg.data.image_size, t.progressive_start,
                                t.progressive_until)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        transfer = batch.get("transfer")  # unlabelled images (distill.transfer_images) beside the labelled batch
        batch = batch.get("labelled", batch)
        x, targets = mix_batch(self.mixer, self.preprocess(batch["image"]), batch["label"])
        labelled = len(x)
        if transfer is not None:  # mixed among themselves, then one forward pass for both
            x = torch.cat([x, mix_images(self.mixer, self.preprocess(transfer["image"]))])
        size = self.train_size()
        if self._with_embedding is not None:
            embedding, logits = self._with_embedding(_resized(x, size))
        else:
            logits = self._compiled[0](_resized(x, size))
        # soft (mixed) targets already carry the label smoothing
        smoothing = self.cfg.train.label_smoothing if targets.dim() == 1 else 0.0
        ce = F.cross_entropy(logits[:labelled], targets, weight=self.ce_weight, label_smoothing=smoothing)
        if self.cfg.role == "distill":  # the teacher's prior shift, if any, applies to transfer rows too
            teacher_logits, teacher_embeddings = self._teacher_outputs(batch, x)
            targets = _with_teacher_targets(targets, teacher_logits[labelled:])
            loss, parts = distillation_loss(self.cfg.distill, logits, teacher_logits, targets, ce)
            if self._with_embedding is not None:
                loss, parts = self._with_embedding_term(loss, parts, embedding, teacher_embeddings)
        else:
            loss, parts = ce, {"ce": ce.detach()}
        y = batch["label"]
        self.samples_seen += len(y)  # labelled images only
        # sync_dist: under DDP the logged epoch values are over every rank's samples, not rank 0's alone
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        for name, value in parts.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        if self.cfg.train.progressive_start:
            self.log("train/input_size", float(size), on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def _with_embedding_term(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], embedding: torch.Tensor,
                             teacher_embeddings: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The distillation loss plus distill.embedding_weight x the projected embedding distance (logged)."""
        if self.projectors is None:
            raise RuntimeError("embedding distillation needs the online teachers: attach them first")
        distance = self.projectors.distance(embedding, teacher_embeddings)
        return loss + self._embedding_weight() * distance, {**parts, "embedding": distance.detach()}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Validate the EMA weights when there are any (they are what the checkpoint ships), else the live ones;
        the live ones beside the EMA for the log under train.ema_validate_live."""
        if self.ema is not None:
            if self.live_val_metrics is not None:
                self.live_val_metrics.update(self(batch["image"]), batch["label"])
            logits = self.ema.module(self.preprocess(batch["image"]))
        else:
            logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        self.val_metrics.update(logits, batch["label"])
        self.log("val/loss", loss, on_epoch=True, batch_size=len(logits), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()
        if self.live_val_metrics is not None:
            self.log_dict(self.live_val_metrics.compute())
            self.live_val_metrics.reset()

    def on_train_end(self) -> None:
        counts = self.all_gather(torch.tensor(self.samples_seen, device=self.device))
        self.samples_per_rank = [int(c) for c in counts.reshape(-1).tolist()]

    def configure_optimizers(self) -> dict[str, Any]:
        trained = [self.model] + ([self.projectors] if self.projectors is not None else [])
        params = [p for module in trained for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.cfg.train.lr, weight_decay=self.cfg.train.weight_decay)
        epochs, warmup = self.cfg.train.epochs, self.cfg.train.warmup_epochs
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs - warmup))
        if warmup:
            ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup)
            cosine = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[SPEC_KEY] = spec_payload(ModelSpec.from_config(self.cfg), self.cfg)


def _with_teacher_targets(targets: torch.Tensor, transfer_teacher_logits: torch.Tensor) -> torch.Tensor:
    """The labelled batch's targets followed by the teacher's top class for each transfer image, in the same
    form (indices, or one-hot rows beside soft targets): only DKD reads a target, to split target from rest."""
    if not len(transfer_teacher_logits):
        return targets
    top = transfer_teacher_logits.argmax(dim=1)
    if targets.dim() == 2:
        top = F.one_hot(top, targets.shape[1]).to(targets.dtype)
    return torch.cat([targets, top])


def _resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """x at size x size (antialiased bilinear), or x itself when it already is."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


def _native_bf16(device_type: str) -> bool:
    """Whether bf16 autocast pays on this device: CUDA, or a CPU with AVX512-BF16 or AMX instructions."""
    return device_type == "cuda" or (device_type == "cpu" and _cpu_has_native_bf16())


def cpu_bf16_instructions() -> dict[str, bool]:
    """Which native bf16 instructions this CPU has, as PyTorch reports them (absent probes count as no)."""
    probes = {"AVX512-BF16": "_is_avx512_bf16_supported", "AMX": "_is_amx_tile_supported"}
    return {name: bool(getattr(torch.cpu, probe, lambda: False)()) for name, probe in probes.items()}


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """Why ask: on a CPU without those instructions oneDNN emulates bf16, and the online teacher ran slower
    than in fp32 (Lite2: 0.43x of fp32 channels_last on 2 cores with AVX-512 VNNI only, docs/BENCH.md), so
    `distill.teacher_bf16` falls back to fp32 there, warned once."""
    native = any(cpu_bf16_instructions().values())
    if not native:
        warnings.warn("distill.teacher_bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 would be "
                      "emulated and slower than fp32; the online teacher runs in fp32", KNDNetWarning)
    return native


def _pixels_and_classes(spec: ModelSpec) -> tuple:
    """What a teacher and its student must share for the student's normalised view to mean the same to both."""
    return tuple(spec.mean), tuple(spec.std), tuple(spec.class_codes)
