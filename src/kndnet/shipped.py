"""The student that ships inside the package, used when no --model is given."""

from __future__ import annotations

from pathlib import Path

from kndnet.errors import CheckpointError

ASSETS = Path(__file__).parent / "assets"
SHIPPED_NAME = "kndnet-student"
SHIPPED_CHECKPOINT = ASSETS / "kndnet_student.ckpt"
SHIPPED_INT8 = ASSETS / "kndnet_student_int8.onnx"


def resolve_model(model: str | None) -> Path:
    """A model path from --model: a file, the shipped student's name (`kndnet-student`, or
    `kndnet-student-int8` for its int8 ONNX), or None for the shipped checkpoint."""
    if model == f"{SHIPPED_NAME}-int8":
        return _shipped(SHIPPED_INT8)
    if model and model != SHIPPED_NAME:
        path = Path(model)
        if not path.is_file():
            raise CheckpointError(f"model file {model!r} not found")
        return path
    return _shipped(SHIPPED_CHECKPOINT)


def _shipped(path: Path) -> Path:
    if not path.is_file():
        raise CheckpointError("this kndnet version ships no pretrained student yet; pass --model with a "
                              "checkpoint (.ckpt) or exported model (.onnx) from `kndnet train`/`distill`")
    return path
