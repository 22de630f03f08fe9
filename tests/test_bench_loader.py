"""benchmarks/bench_loader.py's per-step breakdown times the very steps a training view applies."""

from __future__ import annotations

import torch

from kndnet.data.transforms import apply_view, sample_view
from tests.helpers import load_script


def test_the_steps_chained_in_order_are_apply_view():
    bench = load_script("bench_loader", folder="benchmarks")
    image = torch.randint(0, 256, (3, 50, 60), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    view = sample_view(50, 60, torch.Generator().manual_seed(2))
    chained = image
    for step in bench.view_steps(view, 32).values():
        chained = step(chained)
    assert torch.equal(chained, apply_view(image, view, 32))
