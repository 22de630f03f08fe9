"""`kndnet export`: ONNX fp32 (+ int8, + full-integer LiteRT) with parity checks, graph costs and a model card."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn import metrics as skm

from kndnet.checkpoint import ModelSpec, load_config_from_checkpoint, load_model, save_model_checkpoint
from kndnet.config import PATH_KEYS, Config, DataConfig
from kndnet.cpu import int8_arithmetic
from kndnet.deploy.graph_stats import graph_stats
from kndnet.deploy.model_card import write_model_card
from kndnet.deploy.onnx_export import check_onnx_parity, export_onnx, logits_parity
from kndnet.deploy.quantize import quantize_int8
from kndnet.errors import ConfigError
from kndnet.evaluation.metrics import CI_METRICS
from kndnet.evaluation.run import evaluation_rows
from kndnet.inference import OnnxPredictor, eval_images
from kndnet.io import atomic_write_json, staged_folder
from kndnet.models import count_parameters
from kndnet.models.teachers import NAMED_WEIGHTS


def load_images(data: str, split: str, spec: ModelSpec, count: int, seed: int = 0,
                data_cfg: DataConfig | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Up to `count` eval-preprocessed uint8 images of a split (seeded sample) and their labels; a data
    folder is split as `data_cfg` (the model's training data config) split it."""
    rows = evaluation_rows(data, split, data_cfg=data_cfg)
    if count and len(rows) > count:
        rows = rows.sample(n=count, random_state=seed).reset_index(drop=True)
    return eval_images(rows, spec)


def _scores(logits: np.ndarray, labels: np.ndarray, prefix: str) -> dict[str, float]:
    """Accuracy and macro-F1 exactly as `evaluate` computes them (only the argmax of logits matters)."""
    return {f"{prefix}_{name}": round(CI_METRICS[name](labels, logits), 4) for name in ("accuracy", "macro_f1")}


def class_sensitivity(logits: np.ndarray, labels: np.ndarray, codes: tuple[str, ...]) -> dict[str, float | None]:
    """Recall of each class on held-out images (None for a class with no image there).

    Why on the card: an average hides which patients the model fails, and for skin lesions the cost of
    a miss differs by class (a missed melanoma above all): disaggregated evaluation, Mitchell et al. 2019."""
    recall = skm.recall_score(labels, logits.argmax(axis=1), labels=range(len(codes)), average=None, zero_division=0)
    return {code: round(float(recall[index]), 4) if (labels == index).any() else None
            for index, code in enumerate(codes)}


def int8_report(fp32: Path, int8: Path, images: torch.Tensor, labels: np.ndarray,
                codes: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class sensitivity of fp32 vs int8 on held-out images, and their agreement.

    All of it on the graphs' raw outputs, as check_onnx_parity measures them: a card states what the files
    emit, and the calibration temperature moves no argmax, so the scores are the calibrated model's too. The
    int8 side is the file's exact arithmetic, which CPUs with and without VNNI compute in two ways that can call an
    image differently (kndnet.cpu), so the report names the one it ran."""
    a, b = OnnxPredictor(fp32).raw_logits(images), OnnxPredictor(int8).raw_logits(images)
    return {**_scores(a, labels, "fp32"), **_scores(b, labels, "int8"), "int8_arithmetic": int8_arithmetic(),
            "eval_images_per_class": {code: int((labels == i).sum()) for i, code in enumerate(codes)},
            "fp32_sensitivity": class_sensitivity(a, labels, codes),
            "int8_sensitivity": class_sensitivity(b, labels, codes),
            **logits_parity(a, b).as_dict("int8_vs_fp32")}


@dataclasses.dataclass
class LiteRTOptions:
    """What `--tflite`, `--c-array`, `--image-size` and `--[no-]fold-input` ask of an export. `fold_input`: the
    input's 1/std folded into the stem conv (tflite_export.EdgeStudent); None, the default, folds wherever the model
    has a stem conv to fold it into (tflite_export.resolve_fold)."""
    tflite: bool = False
    c_array: bool = False
    image_size: int = 0  # 0: the size the model was trained at
    fold_input: bool | None = None


def export(model_path: Path, out_dir: Path, int8: bool, data: str | None, calib_count: int = 200,
           eval_split: str = "test", eval_count: int = 0, litert: LiteRTOptions | None = None,
           command: str = "") -> dict[str, Any]:
    """Write the ONNX model(s), a slim checkpoint and the model card into `out_dir`, all or nothing.

    Calibration and held-out images are read before anything is written, and the files are staged
    and moved into `out_dir` only when every step succeeded (export.json marks a whole export).
    `litert.image_size` exports the fully convolutional student at another input size (its weights
    unchanged); the card records the size it was trained at, and `command`, when given, the command line that
    made it (the README's shipped-model blocks quote it: scripts/readme_shipped.py).
    """
    litert = litert or LiteRTOptions()
    if litert.fold_input is True and not (litert.tflite or litert.c_array):
        raise ConfigError("--fold-input changes the LiteRT graph only: add --tflite (or --c-array), or drop it")
    if litert.tflite or litert.c_array:
        from kndnet.inference_tflite import check_litert_installed
        check_litert_installed()
    model, spec = load_model(model_path)
    trained_size = spec.image_size
    if litert.image_size:
        spec = dataclasses.replace(spec, image_size=litert.image_size)
    cfg = load_config_from_checkpoint(model_path)
    wants_images = int8 or litert.tflite or litert.c_array
    images = _int8_images(data, spec, calib_count, eval_split, eval_count, cfg.data) if wants_images else None
    with staged_folder(out_dir) as tmp:
        card = _export_into(tmp, model, spec, cfg, images if int8 else None)
        card["trained_image_size"] = trained_size
        if litert.tflite or litert.c_array:
            from kndnet.deploy.tflite_report import export_tflite  # the optional LiteRT extra
            card.update(export_tflite(tmp, model, spec, *images, c_array=litert.c_array,
                                      fold_input=litert.fold_input))
        if images is not None:
            card["int8_eval_split"] = eval_split
        if command:
            card["export_command"] = command
        write_model_card(tmp, card)
        atomic_write_json(tmp / "export.json", {k: v for k, v in card.items() if k != "training"})
    return card


def _int8_images(data: str | None, spec: ModelSpec, calib_count: int, eval_split: str, eval_count: int,
                 data_cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Calibration images (train split) and held-out images with labels; DataError before any writing."""
    if not data:
        raise ConfigError("--int8 needs --calib DATA (a manifest or data folder) for calibration images, as do "
                          "--tflite and --c-array")
    calib, _ = load_images(data, "train", spec, calib_count, data_cfg=data_cfg)
    held_out, labels = load_images(data, eval_split, spec, eval_count, data_cfg=data_cfg)
    return calib, held_out, labels


def _export_into(out_dir: Path, model: torch.nn.Module, spec, cfg, images) -> dict[str, Any]:
    fp32_path = export_onnx(model, spec, out_dir / "model_fp32.onnx")
    probe = torch.randint(0, 256, (8, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
    stats = graph_stats(fp32_path, spec.image_size, bytes_per_element=1)
    card: dict[str, Any] = {"arch": spec.arch, "image_size": spec.image_size, "width": spec.width,
                            "parameters": count_parameters(model),
                            "calibration_temperature": spec.calibration_temperature, "prior_tau": spec.prior_tau,
                            "color_constancy": spec.color_constancy,
                            "macs": stats["macs"], "peak_activation_bytes_int8": stats["peak_activation_bytes"],
                            **check_onnx_parity(model, spec, fp32_path, probe).as_dict("onnx_fp32_vs_torch")}
    card["fp32_bytes"] = fp32_path.stat().st_size
    if images is not None:
        calib, held_out, labels = images
        int8_path = quantize_int8(fp32_path, out_dir / "model_int8.onnx", calib, spec)
        card["int8_bytes"] = int8_path.stat().st_size
        card.update(int8_report(fp32_path, int8_path, held_out, labels, spec.class_codes))
    shipped_cfg = without_machine_paths(cfg)
    save_model_checkpoint(model, spec, shipped_cfg, out_dir / "model.ckpt")  # weights + spec, no optimiser
    card["checkpoint_bytes"] = (out_dir / "model.ckpt").stat().st_size
    card["training"] = shipped_cfg.to_dict()
    return card


def without_machine_paths(cfg: Config) -> Config:
    """A copy of `cfg` whose path keys keep only the file or folder name (shipped files travel); each
    member of a comma-separated ensemble teacher keeps its own name."""
    shipped = copy.deepcopy(cfg)
    for dotted in PATH_KEYS:
        section, name = dotted.split(".")
        value = getattr(getattr(shipped, section), name)
        if value and value not in NAMED_WEIGHTS:
            setattr(getattr(shipped, section), name, ",".join(Path(part).name for part in value.split(",")))
    return shipped
