"""Models: the KNDNet student, timm teachers, and one factory for both."""

from __future__ import annotations

import timm
from torch import nn

from kndnet.config import ModelConfig
from kndnet.errors import ConfigError
from kndnet.models.student import KNDNetStudent
from kndnet.models.teachers import create_teacher, freeze_backbone_fraction

STUDENT_ARCHS = {"kndnet_student": KNDNetStudent}


def create_model(cfg: ModelConfig, pretrained: bool = True) -> nn.Module:
    """Build the model a ModelConfig describes (student by name, anything else from timm).

    pretrained=False skips loading teacher weights: used when a checkpoint supplies them.
    """
    check_model_options(cfg)
    if cfg.arch in STUDENT_ARCHS:
        return STUDENT_ARCHS[cfg.arch](num_classes=cfg.num_classes, width=cfg.width, dropout=cfg.dropout,
                                       color_constancy=cfg.color_constancy, block=cfg.student_block,
                                       activation=cfg.student_activation)
    model = create_teacher(cfg.arch, cfg.num_classes, cfg.pretrained if pretrained else "none-quiet",
                           drop_rate=cfg.teacher_dropout, drop_path_rate=cfg.teacher_drop_path)
    freeze_backbone_fraction(model, cfg.freeze_fraction)
    return model


STUDENT_ONLY_OPTIONS = {"color_constancy": "none", "student_block": "method", "student_activation": "silu"}
TEACHER_ONLY_OPTIONS = {"teacher_dropout": 0.0, "teacher_drop_path": 0.0}


def check_model_options(cfg: ModelConfig) -> None:
    """Refuse an option the model kind does not have (a student's colour constancy on a teacher, a teacher's
    stochastic depth on the student), naming it; `kndnet run` calls this for every stage before training."""
    if cfg.arch in STUDENT_ARCHS:
        _refuse_options(cfg, TEACHER_ONLY_OPTIONS, "a timm teacher")
    elif timm.is_model(cfg.arch):  # an unknown name gets its own error when the model is built
        _refuse_options(cfg, STUDENT_ONLY_OPTIONS, "the kndnet student")


def _refuse_options(cfg: ModelConfig, options: dict[str, object], owner: str) -> None:
    """Options that exist in one kind of model only: name the one the other kind was given, and its default."""
    for key, default in options.items():
        value = getattr(cfg, key)
        if value != default:
            raise ConfigError(f"model.{key} {value!r} is built into {owner} only, "
                              f"not {cfg.arch!r}; set it to {default} for this model")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cam_target_layer(model: nn.Module) -> nn.Module:
    """Default Grad-CAM layer: the student's last block, or a timm model's last feature stage."""
    if hasattr(model, "cam_target_layer"):
        return model.cam_target_layer()
    for name in ("bn2", "conv_head", "layer4", "stages", "features", "blocks"):
        if hasattr(model, name):
            layer = getattr(model, name)
            return layer[-1] if isinstance(layer, nn.Sequential) else layer
    raise ValueError(f"no default Grad-CAM layer for {type(model).__name__}; pass one explicitly")


__all__ = ["KNDNetStudent", "check_model_options", "create_model", "create_teacher", "freeze_backbone_fraction",
           "count_parameters", "cam_target_layer"]
