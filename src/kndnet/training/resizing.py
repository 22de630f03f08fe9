"""Progressive resizing: most epochs at a small input, the last ones at the final size.

Why: a convolutional student with global pooling runs at any input size, and an epoch at half the
side costs about a quarter of the compute; training small first and finishing at the deployment size
is the cheap schedule of FFCV's ResNet recipes and of "Fix the train-test resolution" (Touvron et al.,
NeurIPS 2019: the last epochs at the test size fix the apparent-object-size mismatch).
The size grows linearly from `start` at epoch 0 to `final` at `until` of the epochs, rounded down to
a multiple of 16 (the student's total stride), then stays at `final`.
"""

from __future__ import annotations

STRIDE = 16


def progressive_size(epoch: int, epochs: int, final: int, start: int, until: float) -> int:
    """Training input size (px) at 0-based `epoch` of `epochs`; `final` when `start` is 0 (off)."""
    if start <= 0 or start >= final:
        return final
    ramp_epochs = until * epochs
    if ramp_epochs <= 0 or epoch >= ramp_epochs:
        return final
    size = start + (final - start) * epoch / ramp_epochs
    return max(STRIDE, int(size) // STRIDE * STRIDE)
