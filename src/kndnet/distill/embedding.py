"""Embedding distillation (`distill.embedding_weight`): the student's pooled embedding, through one linear
projector per teacher, matched to that teacher's pooled embedding on the same (mixed) view.

Why: with 7 classes a teacher's logits say 6 numbers about each image, and this student is short of images
(docs/RESULTS.md, runs/v41/half: half the images cost more than half the steps); a teacher's pooled embedding
(1,280 numbers for EfficientNet-Lite) says far more about each one. FitNets (Romero et al., ICLR 2015) matched
hidden layers through a regressor; matching the penultimate, pooled embedding through a linear projector, beside
logit KD, is what Yang et al. (ICLR 2021, "Knowledge distillation via softmax regression representation
learning") and Chen et al. (NeurIPS 2022, "Improved feature distillation via projector ensemble") found to add
to KD. The projectors train with the student and are never part of its model: the checkpoint's weights, and so
every export, are the student alone.

The distance is 1 - cosine similarity of batch-centred embeddings, per image, averaged over the batch and the
teachers. Centring removes what every image shares (EfficientNet-Lite's features are ReLU6 outputs, so raw
cosines sit near 1 for any pair of images) and leaves what tells the images apart; the cosine keeps the term's
scale (0 aligned, 1 unrelated) free of the teachers' feature magnitudes, so one weight suits any teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def centred_cosine_distance(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 - cos(a_i, b_i), each side centred on its batch mean; `target` is detached."""
    a = projected - projected.mean(dim=0, keepdim=True)
    b = target.detach().float()
    b = b - b.mean(dim=0, keepdim=True)
    return (1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-6)).mean()


class EmbeddingProjectors(nn.Module):
    """One linear map per teacher from the student's embedding width to that teacher's (training only)."""

    def __init__(self, student_width: int, teacher_widths: list[int]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(student_width, width) for width in teacher_widths)

    def distance(self, student_embedding: torch.Tensor, teacher_embeddings: list[torch.Tensor]) -> torch.Tensor:
        """The mean over teachers of `centred_cosine_distance` between projected student and teacher."""
        if len(teacher_embeddings) != len(self.heads):
            raise ValueError(f"{len(teacher_embeddings)} teacher embeddings for {len(self.heads)} projectors")
        return torch.stack([centred_cosine_distance(head(student_embedding), embedding)
                            for head, embedding in zip(self.heads, teacher_embeddings)]).mean()


def embedding_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A teacher's pooled embedding and its logits, in one pass: an ONNX Runtime teacher's own two outputs, or a
    timm model's `forward_head(..., pre_logits=True)` and classifier (its logits the same as `model(x)` at
    inference, where the head's dropout is off)."""
    own = getattr(model, "embedding_and_logits", None)
    if own is not None:
        return own(x)
    embedding = model.forward_head(model.forward_features(x), pre_logits=True)
    return embedding, model.get_classifier()(embedding)


class LogitsAndEmbedding(nn.Module):
    """A timm model with two outputs, logits then pooled embedding: what an ONNX teacher exports for embedding
    distillation (logits first, the output every reader of the file takes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, logits = embedding_and_logits(self.model, x)
        return logits, embedding
