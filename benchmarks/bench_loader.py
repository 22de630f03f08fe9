"""Training-loader throughput on real images: JPEG decoding vs the decoded uint8 cache.

Both loaders apply the method's training augmentations (random resized crop, flips, rotation, colour
jitter) and batch the result, exactly as training does. The cache's one-off build time is printed
too, and what each step of one view costs on one thread (which step to make cheaper if the loader
bounds an epoch: on 2 cores the workers share the cores with the model). Usage:
    python benchmarks/bench_loader.py [--data ../shared/data/ham10000] [--images 1024] [--image-size 224]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import torch
from _common import data_arg, subset
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from kndnet.config import DataConfig
from kndnet.data.cache import build_cache
from kndnet.data.datasets import LesionDataset, RandomView
from kndnet.data.images import load_rgb_array
from kndnet.data.manifest import build_manifest
from kndnet.data.transforms import ViewParams, apply_view, resize_for_training, sample_view


def throughput(dataset: LesionDataset, workers: int, batch: int) -> float:
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, shuffle=True)
    start = time.perf_counter()
    count = sum(len(b["label"]) for b in loader)
    return count / (time.perf_counter() - start)


def _flip(x: torch.Tensor, flip: bool, op: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return op(x) if flip else x


def view_steps(view: ViewParams, size: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """apply_view's steps one by one, each on an image already at the view's size but the first."""
    return {
        "resized crop": lambda x: TF.resized_crop(x, view.top, view.left, view.height, view.width, [size, size],
                                                  antialias=True),
        "flips": lambda x: _flip(_flip(x, view.hflip, TF.horizontal_flip), view.vflip, TF.vertical_flip),
        "rotation": lambda x: TF.rotate(x, view.angle),
        "brightness": lambda x: TF.adjust_brightness(x, view.brightness),
        "contrast": lambda x: TF.adjust_contrast(x, view.contrast),
        "saturation": lambda x: TF.adjust_saturation(x, view.saturation),
        "hue": lambda x: TF.adjust_hue(x, view.hue),
    }


def milliseconds(step: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, repeats: int) -> float:
    step(image)
    start = time.perf_counter()
    for _ in range(repeats):
        step(image)
    return 1e3 * (time.perf_counter() - start) / repeats


def print_step_costs(image: torch.Tensor, size: int, repeats: int = 200) -> None:
    """Milliseconds per image of each step of one view, on one thread, and each step's share of the whole."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    view = sample_view(*image.shape[-2:], torch.Generator().manual_seed(0))
    sized = apply_view(image, view, size)
    costs = {name: milliseconds(step, image if name == "resized crop" else sized, repeats)
             for name, step in view_steps(view, size).items()}
    whole = milliseconds(lambda x: apply_view(x, view, size), image, repeats)
    torch.set_num_threads(threads)
    print(f"  one view, one thread ({image.shape[-1]} -> {size} px): {whole:.2f} ms")
    for name, ms in costs.items():
        print(f"    {name:12s} {ms:6.2f} ms  ({ms / whole:4.0%} of the view)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arg(parser)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    manifest, _, _ = build_manifest(DataConfig(path=args.data))
    rows = subset(manifest, args.images)
    load_size = resize_for_training(args.image_size, 256 / 224)
    jpeg = LesionDataset(rows, RandomView(args.image_size), load_size=load_size)
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        cache = build_cache(rows["path"].tolist(), load_size, cache_dir)
        build_seconds = time.perf_counter() - start
        cached = LesionDataset(rows, RandomView(args.image_size), cache=cache, load_size=load_size)
        jpeg_rate = throughput(jpeg, args.workers, args.batch_size)
        cache_rate = throughput(cached, args.workers, args.batch_size)
    print(f"{len(rows)} images, {args.image_size} px views from {load_size} px, {args.workers} workers")
    print(f"  JPEG decode + augment : {jpeg_rate:7.1f} img/s")
    print(f"  decoded cache + augment: {cache_rate:7.1f} img/s")
    print(f"  ratio cache / JPEG     : {cache_rate / jpeg_rate:5.2f}x")
    print(f"  cache build (one-off)  : {build_seconds:.1f} s ({len(rows) / build_seconds:.0f} img/s)")
    first = torch.from_numpy(load_rgb_array(rows["path"].iloc[0], load_size)).permute(2, 0, 1).contiguous()
    print_step_costs(first, args.image_size)


if __name__ == "__main__":
    main()
