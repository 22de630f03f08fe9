"""Figures a person wants to look at: confusion matrix, reliability diagram, comparison chart."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kndnet.classes import CLASS_CODES  # noqa: E402
from kndnet.io import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def confusion_matrix_png(counts: np.ndarray, path: Path, title: str) -> None:
    """Row-normalised colours (recall per true class) with the counts written in the cells."""
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{counts[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(CLASS_CODES)), CLASS_CODES)
    ax.set_yticks(range(len(CLASS_CODES)), CLASS_CODES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="row-normalised")
    _save(fig, path)


def reliability_png(bins: list[dict[str, float]], ece: float, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    accuracy = [0 if np.isnan(b["accuracy"]) else b["accuracy"] for b in bins]
    ax.bar(centres, accuracy, width=1 / len(bins), edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE {ece:.3f})")
    ax.legend(loc="upper left")
    _save(fig, path)


def comparison_png(names: list[str], values: dict[str, list[float]], path: Path) -> None:
    """Grouped bars: one group per metric, one bar per run."""
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        ax.bar(np.arange(len(values)) + i * width, [v[i] for v in values.values()], width, label=name)
    ax.set_xticks(np.arange(len(values)) + width * (len(names) - 1) / 2, list(values))
    ax.set_ylim(0, 1)
    ax.set_ylabel("score on the test split (0 to 1)")
    # beside the axes, not over the bars (scores near 1 fill the top of the plot)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    _save(fig, path)
