"""Grad-CAM overlays (Selvaraju et al., ICCV 2017) of a model's predictions, via the `grad-cam` package.

The explainer is a context manager: the package's forward/backward hooks are always removed, even
when an image fails. Default target layer: the student's last block, or a timm model's last stage
(see models.cam_target_layer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from kndnet.checkpoint import ModelSpec  # noqa: E402
from kndnet.classes import CLASSES  # noqa: E402
from kndnet.inference import softmax  # noqa: E402
from kndnet.io import atomic_path  # noqa: E402
from kndnet.models import cam_target_layer  # noqa: E402


@contextlib.contextmanager
def grad_cam(model: torch.nn.Module, layer: torch.nn.Module | None = None) -> Iterator[GradCAM]:
    """A GradCAM on `layer` (default: the model's CAM layer) whose hooks are released on exit."""
    cam = GradCAM(model=model.eval(), target_layers=[layer or cam_target_layer(model)])
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()


def explain_batch(model: torch.nn.Module, spec: ModelSpec, images: torch.Tensor,
                  target_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CAMs (N x H x W in [0, 1], the input size) and softmax probabilities (N x C) for uint8 images."""
    x = spec.normalise(images)
    with torch.no_grad():
        probs = softmax(model(x).numpy() / spec.calibration_temperature)
    classes = probs.argmax(1) if target_class is None else np.full(len(x), target_class)
    with grad_cam(model) as cam:
        cams = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    return np.clip(cams, 0.0, 1.0), probs


def save_overlay(image: torch.Tensor, cam: np.ndarray, probs: np.ndarray, path: Path,
                 target_class: int | None = None) -> None:
    """Original and Grad-CAM overlay side by side, titled with the prediction and its probability."""
    rgb = image.permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    overlay = show_cam_on_image(rgb, cam, use_rgb=True)
    top = int(probs.argmax())
    shown = top if target_class is None else target_class
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.3))
    axes[0].imshow(rgb)
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(overlay)
    axes[1].set_title(f"Grad-CAM for {CLASSES[shown].code}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"predicted {CLASSES[top].code} ({CLASSES[top].name}) p={probs[top]:.2f}", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
