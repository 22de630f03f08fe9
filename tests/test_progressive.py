"""Progressive resizing: the training input grows to data.image_size, validation stays at it."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from kndnet.config import load_config
from kndnet.data.manifest import load_manifest
from kndnet.data.selection import class_counts, split_rows
from kndnet.errors import ConfigError
from kndnet.training.fit import fit
from kndnet.training.module import LesionClassifier
from kndnet.training.resizing import progressive_size
from tests.helpers import tiny_config


def test_sizes_grow_in_steps_of_the_stride_and_end_at_the_final_size():
    sizes = [progressive_size(e, 20, final=128, start=64, until=0.75) for e in range(20)]
    assert sizes[0] == 64
    assert sizes[14] == 112  # 64 + 64 * 14 / 15 = 123.7, rounded down to a multiple of 16
    assert sizes[15:] == [128] * 5  # the last quarter at the final size
    assert sizes == sorted(sizes) and all(s % 16 == 0 for s in sizes)


@pytest.mark.parametrize("start, until", [(0, 0.75), (128, 0.75), (64, 0.0)])
def test_off_means_the_final_size_every_epoch(start, until):
    assert {progressive_size(e, 10, final=128, start=start, until=until) for e in range(10)} == {128}


class _Recorder(nn.Module):
    """Stands in for the student and remembers its input sizes (the code under test is the module)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.head = nn.Linear(3, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[-1])
        return self.head(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("start, expected", [(16, 16), (0, 32)])
def test_the_training_step_feeds_the_scheduled_size(synth_manifest, start, expected):
    cfg = tiny_config("student", synth_manifest, **{"train.progressive_start": start, "train.epochs": 4})
    module = LesionClassifier(cfg.to_dict(), class_counts(split_rows(load_manifest(synth_manifest), "train", 0)))
    module._compiled = [_Recorder()]
    batch = {"image": torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), "label": torch.tensor([0, 1, 2, 3])}
    module.training_step(batch, 0)  # epoch 0, without a trainer
    assert module._compiled[0].sizes == [expected]


@pytest.mark.parametrize("start, dynamic", [(16, [False]), (0, [None])])
def test_progressive_resizing_compiles_a_static_graph_per_size(synth_manifest, monkeypatch, start, dynamic):
    """A size change must not turn the student's graph shape-generic (slower kernels for the final size too)."""
    seen: list[object] = []
    monkeypatch.setattr(torch, "compile", lambda fn, dynamic=None: seen.append(dynamic) or fn)
    cfg = tiny_config("student", synth_manifest, **{"train.progressive_start": start, "train.compile": True})
    LesionClassifier(cfg.to_dict(), class_counts(split_rows(load_manifest(synth_manifest), "train", 0)))
    assert seen == dynamic


@pytest.mark.slow
def test_a_fit_logs_the_growing_size_and_validates_at_the_final_one(synth_manifest, tmp_path):
    cfg = tiny_config("student", synth_manifest, **{"train.progressive_start": 16, "train.progressive_until": 0.5})
    fit(cfg, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    sizes = metrics.dropna(subset=["train/input_size"])["train/input_size"].tolist()
    assert sizes == [16, 32]  # ramp over 0.5 * 2 = 1 epoch, then image_size
    assert metrics["val/macro_f1"].notna().sum() == 2


@pytest.mark.parametrize("key, value, message", [
    ("train.progressive_start", 48, "progressive_start 48 is above data.image_size 32"),
    ("train.progressive_until", 1.5, "'train.progressive_until' is 1.5; it must be between 0.0 and 1.0"),
    ("train.progressive_start", -1, "'train.progressive_start' is -1; it must be at least 0"),
])
def test_bad_schedules_are_refused_by_name(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={"data.image_size": 32, key: value})
