"""The KNDNet student: a 9-block depthwise-separable CNN, 148,855 parameters at width 1.5.

Architecture exactly as the KNDNet notebooks (Lishad et al., 2025): stem 3x3/2 conv-BN-SiLU, nine
blocks of 3x3 depthwise -> 1x1 pointwise -> BN -> SiLU -> Dropout2d(0.05) (residual when the shape
is kept), global average pool, Dropout(0.15), linear head. Note the single BatchNorm per block, after
the pointwise conv: that is the published model, kept so published weights and counts match.

`block="mobilenet"` adds the MobileNet-v1 half the published block lacks (Howard et al., 2017): BatchNorm and
SiLU between the depthwise and the pointwise conv. Without it the two convs compose to one linear map, so the
published student has ten non-linear layers; with it, nineteen. That BatchNorm has no affine weights (at export
it folds into the depthwise conv before it), so the count stays 148,855 and the <= 150K budget holds.

`activation="relu6"` replaces every SiLU by ReLU6, as EfficientNet-Lite did to its swish "for post-training
quantization" (Google, EfficientNet-Lite, 2020): int8 runtimes fuse ReLU6 into the convolution as its output
clamp, while SiLU becomes a LOGISTIC and a MUL, each requantised. Off in the recipes: on runs/v32's split and
teachers the ReLU6 KD student scored 0.025 lower validation macro-F1, and its full-integer LiteRT model agreed with
fp32 no better (0.986 vs 0.985; the int8 error is per-tensor activation rounding everywhere, not the SiLU): it
does save a quarter of the int8 peak activation memory (576 vs 768 KB at 128 px). runs/v33 in docs/RESULTS.md.
"""

from __future__ import annotations

import torch
from torch import nn

from kndnet.config import CHOICES
from kndnet.models.colour import COLOUR_CONSTANCY

BASE_WIDTHS = (32, 48, 64, 96, 128, 160)
# (input width index, output width index, stride) of the nine blocks
BLOCKS = ((0, 0, 1), (0, 1, 2), (1, 1, 1), (1, 2, 2), (2, 2, 1),
          (2, 3, 2), (3, 3, 1), (3, 4, 1), (4, 5, 1))
STUDENT_BLOCKS = CHOICES["model.student_block"]  # the published block, or with a depthwise BN + SiLU
ACTIVATIONS = {"silu": nn.SiLU, "relu6": nn.ReLU6}  # CHOICES["model.student_activation"]


def scaled_widths(width: float) -> list[int]:
    """Base widths times the multiplier, truncated, at least 8: 1.5 -> [48, 72, 96, 144, 192, 240]."""
    return [max(8, int(w * width)) for w in BASE_WIDTHS]


def _activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown student activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class SeparableBlock(nn.Module):
    """3x3 depthwise (stride s) -> [BN -> act] -> 1x1 pointwise -> BN -> act -> Dropout2d, + input if shapes match.

    The bracketed part is there only for `block="mobilenet"`; "method" keeps the published state-dict keys.
    `act` is SiLU (published) or ReLU6.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, drop: float = 0.05, block: str = "method",
                 activation: str = "silu") -> None:
        super().__init__()
        if block not in STUDENT_BLOCKS:
            raise ValueError(f"unknown student block {block!r}; choose one of {', '.join(STUDENT_BLOCKS)}")
        act = _activation(activation)
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False)
        self.mid = (nn.Identity() if block == "method"
                    else nn.Sequential(nn.BatchNorm2d(in_ch, affine=False), act(inplace=True)))
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = act(inplace=True)
        self.drop = nn.Dropout2d(drop)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(self.act(self.bn(self.pointwise(self.mid(self.depthwise(x))))))
        return out + x if self.residual else out


class KNDNetStudent(nn.Module):
    """The student CNN. Input N x 3 x H x W (any H, W >= 16); output N x num_classes logits."""

    def __init__(self, num_classes: int = 7, width: float = 1.5, dropout: float = 0.15,
                 color_constancy: str = "none", block: str = "method", activation: str = "silu") -> None:
        super().__init__()
        widths = scaled_widths(width)
        self.colour = COLOUR_CONSTANCY[color_constancy]()  # parameter-free: the weights stay 148,855
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), _activation(activation)(inplace=True))
        self.blocks = nn.Sequential(*(SeparableBlock(widths[i], widths[o], s, block=block, activation=activation)
                                      for i, o, s in BLOCKS))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W -> N x C x H/16 x W/16 feature map (the Grad-CAM target)."""
        return self.blocks(self.stem(self.colour(x)))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits, or with `pre_logits` the pooled embedding (N x C), as timm's models do."""
        pooled = torch.flatten(self.pool(features), 1)
        return pooled if pre_logits else self.classifier(self.head_drop(pooled))

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled embedding and the logits of one pass (embedding distillation reads both)."""
        embedding = self.forward_head(self.forward_features(x), pre_logits=True)
        return embedding, self.classifier(self.head_drop(embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def cam_target_layer(self) -> nn.Module:
        """The last block: the deepest layer that still has spatial extent."""
        return self.blocks[-1]
