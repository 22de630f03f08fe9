"""The student that ships inside the package, used when no --model is given."""

from __future__ import annotations

from pathlib import Path

from kndnet.errors import CheckpointError

ASSETS = Path(__file__).parent / "assets"
SHIPPED_NAME = "kndnet-student"
SHIPPED_CHECKPOINT = ASSETS / "kndnet_student.ckpt"


def resolve_model(model: str | None) -> Path:
    """A model path from --model: a file, the shipped student's name, or None for the shipped one."""
    if model and model != SHIPPED_NAME:
        path = Path(model)
        if not path.is_file():
            raise CheckpointError(f"model file {model!r} not found")
        return path
    if not SHIPPED_CHECKPOINT.is_file():
        raise CheckpointError("this kndnet version ships no pretrained student yet; pass --model with a "
                              "checkpoint (.ckpt) or exported model (.onnx) from `kndnet train`/`distill`")
    return SHIPPED_CHECKPOINT
